"""Multi-granularity assessment of reasoning paths.

Answer level: `answer_correct` (rule-based: option letters, numbers within tolerance, normalised text) or
`LLMAnswerJudge` (any backend answers 1/0 for "the final answer matches the ground truth"). Wrong-answer
paths are kept (they feed the summary set and DPO rejections) with scores {"answer_correct": 0}.

Reasoning level: every correct path of a question is scored 1-100 for step correctness and detail, all
paths of a question in ONE request so their scores are comparable (`LLMPathScorer`), or, for the synthetic
world, programmatically (`SyntheticScorer`: the share of the teacher's correct steps a path reproduces,
penalised for steps the teacher would not write).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Sequence

from data_gen.backends import Backend, ChatRequest, stable_seed
from insightv_jax.data import prompts, records
from insightv_jax.scoring import extract

JUDGE_PROMPT = ("Question: {question}\nGround-truth answer: {answer}\nA model's final answer: {pred}\n"
                "Does the model's final answer match the ground truth? Reply with 1 for yes or 0 for no, nothing else.")
SCORE_PROMPT = ("Question: {question}\nGround-truth answer: {answer}\nBelow are {n} reasoning paths that reach the "
                "correct answer. Rate each from 1 to 100 for the correctness of every step and for the level of "
                "detail. Reply with a JSON list of {n} integers, in order.\n\n{paths}")


def answer_correct(path: records.ReasoningPath, question: records.Question) -> bool:
  return extract.is_correct(path.final_answer, question.answer, choices=question.choices)


class LLMAnswerJudge:
  """Answer-level judge through any backend, at low temperature; falls back to the rule when it fails."""

  def __init__(self, backend: Backend, temperature: float = 0.0):
    self.backend, self.temperature = backend, temperature

  def __call__(self, paths: Sequence[records.ReasoningPath], question: records.Question) -> list[bool]:
    reqs = [ChatRequest(messages=({"role": "user", "content": JUDGE_PROMPT.format(
        question=prompts.format_question(question.question, question.choices), answer=question.answer,
        pred=p.final_answer)},), temperature=self.temperature, top_p=1.0, max_tokens=4,
        seed=stable_seed(p.id, "judge"), meta={"question": question, "stage": "judge"}) for p in paths]
    out = []
    for p, reply in zip(paths, self.backend.chat(reqs)):
      digits = re.findall(r"[01]", reply or "")
      out.append(digits[0] == "1" if digits else answer_correct(p, question))
    return out


class LLMPathScorer:
  """Scores all correct paths of a question together (1-100); None for a question whose reply never parses."""

  def __init__(self, backend: Backend, max_retries: int = 3):
    self.backend, self.max_retries = backend, max_retries

  def __call__(self, paths: Sequence[records.ReasoningPath], question: records.Question) -> list[float] | None:
    body = "\n\n".join(f"Path {i + 1}:\n{prompts.format_chain(p.steps)}\nFinal answer: {p.final_answer}"
                       for i, p in enumerate(paths))
    prompt = SCORE_PROMPT.format(question=question.question, answer=question.answer, n=len(paths), paths=body)
    for attempt in range(self.max_retries + 1):
      reply = self.backend.chat([ChatRequest(messages=({"role": "user", "content": prompt},), temperature=0.0,
                                             top_p=1.0, max_tokens=16 * len(paths) + 16,
                                             seed=stable_seed(question.id, "score", attempt),
                                             meta={"question": question, "stage": "score", "paths": paths})])[0]
      scores = parse_scores(reply, len(paths))
      if scores is not None:
        return scores
    return None


def parse_scores(reply: str | None, n: int) -> list[float] | None:
  m = re.search(r"\[.*?\]", reply or "", re.DOTALL)
  if not m:
    return None
  try:
    values = json.loads(m.group(0))
  except json.JSONDecodeError:
    return None
  if not isinstance(values, list) or len(values) != n:
    return None
  try:
    return [float(min(100, max(1, v))) for v in values]
  except (TypeError, ValueError):
    return None


class SyntheticScorer:
  """Programmatic step checker for the synthetic world: compares each step with the teacher's correct chain."""

  def __init__(self, world):
    self.world = world

  def __call__(self, paths: Sequence[records.ReasoningPath], question: records.Question) -> list[float]:
    truth = [(s.title, s.content) for s in self.world.teacher_task(question).steps]
    truth_set = set(truth)
    scores = []
    for p in paths:
      got = [(s.title, s.content) for s in p.steps]
      right = sum(1 for s in got if s in truth_set)
      scores.append(max(1.0, round(100.0 * right / max(len(truth), len(got)), 2)))
    return scores


def assess_question(question: records.Question, paths: Sequence[records.ReasoningPath], scorer,
                    judge=None) -> list[records.ReasoningPath]:
  """Returns the paths with `scores` filled: answer_correct, and reasoning for the correct ones."""
  correct = judge(paths, question) if judge is not None else [answer_correct(p, question) for p in paths]
  good = [p for p, ok in zip(paths, correct) if ok]
  scores = scorer(good, question) if good else []
  by_id = {p.id: s for p, s in zip(good, scores or [])}
  out = []
  for p, ok in zip(paths, correct):
    sc = {"answer_correct": 1.0 if ok else 0.0}
    if ok and p.id in by_id:
      sc["reasoning"] = by_id[p.id]
    out.append(dataclasses.replace(p, scores=sc))
  return out
