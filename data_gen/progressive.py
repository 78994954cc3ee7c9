"""Progressive reasoning-path synthesis: one structured step per call, until `summary` or the step budget.

Each call returns ONE JSON step {"title", "content", "next_action": "continue" | "summary"}; the
conversation carries the question, the image and every earlier step. A malformed step (or a failed
request) is retried up to `max_retries` times with a new seed, then the path is dropped with a counted
reason. At least `min_steps` steps are demanded (an early "summary" is taken as "continue"); after
"summary" or `max_steps` steps the generator is asked for the final answer. N paths per question, sampled
at temperature > 0, give chains of different lengths and quality.

All requests of all active paths advance in lockstep, one backend call per round, so a batched backend
(our sampler, or a concurrent HTTP client) sees large batches.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterable, Iterator

from data_gen.backends import Backend, ChatRequest, stable_seed
from insightv_jax.data import prompts, records

# ------------------------------------------------------------------------------ prompts (one place)

STEP_INSTRUCTION = (
    "Solve the question about the image step by step. Reply with ONE JSON object describing only the next "
    "step: {\"title\": short step name, \"content\": what you observe or compute in this step, "
    "\"next_action\": \"continue\" or \"summary\"}. Use \"summary\" when the reasoning is complete.")
NEXT_STEP = "Give the next step as one JSON object."
FINAL_ANSWER = "The reasoning is complete. Now give only the final answer to the question, nothing else."


@dataclasses.dataclass(frozen=True)
class ProgressiveConfig:
  """paths_per_question: N samples per question. temperature / top_p: sampling. max_steps: step budget.
  min_steps: steps demanded before a summary is accepted. max_retries: per step. max_step_tokens /
  max_answer_tokens / max_chain_tokens: reply budgets (chain: a whole chain in one reply).

  No defaults here: the values live in configs/datagen.py (`progressive`), documented there:
  `ProgressiveConfig(**config.progressive.to_dict())`.
  """

  paths_per_question: int
  temperature: float
  top_p: float
  max_steps: int
  min_steps: int
  max_retries: int
  max_step_tokens: int
  max_answer_tokens: int
  max_chain_tokens: int


@dataclasses.dataclass(frozen=True)
class Dropped:
  question_id: str
  path_index: int
  reason: str  # malformed_step | request_failed | empty_answer


@dataclasses.dataclass
class _Path:
  question: records.Question
  image: bytes | None
  index: int
  steps: list = dataclasses.field(default_factory=list)
  attempts: int = 0
  answering: bool = False


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_step(reply: str | None) -> records.Step | None:
  """A step from a reply (tolerates code fences and surrounding text); None if malformed."""
  if not reply:
    return None
  m = _JSON_OBJECT.search(reply)
  if not m:
    return None
  try:
    d = json.loads(m.group(0))
  except json.JSONDecodeError:
    return None
  if not isinstance(d, dict):
    return None
  title, content, action = d.get("title"), d.get("content"), d.get("next_action")
  if not (isinstance(title, str) and title.strip() and isinstance(content, str) and content.strip()):
    return None
  if action not in records.STEP_ACTIONS:
    return None
  return records.Step(title.strip(), content.strip(), action)


def _conversation(p: _Path) -> tuple[dict, ...]:
  q = prompts.format_question(p.question.question, p.question.choices)
  msgs = [{"role": "user", "content": f"{q}\n\n{STEP_INSTRUCTION}"}]
  for s in p.steps:
    msgs.append({"role": "assistant", "content": json.dumps({"title": s.title, "content": s.content,
                                                            "next_action": s.action})})
    msgs.append({"role": "user", "content": FINAL_ANSWER if p.answering and s is p.steps[-1] else NEXT_STEP})
  return tuple(msgs)


def synthesize(items: Iterable[tuple[records.Question, bytes | None, int]], backend: Backend,
               cfg: ProgressiveConfig, generator_name: str = "") -> Iterator[records.ReasoningPath | Dropped]:
  """items: (question, encoded image, path index). Yields each finished path or drop, in completion order."""
  active = [_Path(q, img, k) for q, img, k in items]
  while active:
    reqs = []
    for p in active:
      stage = "answer" if p.answering else "step"
      reqs.append(ChatRequest(
          messages=_conversation(p), image=p.image, temperature=cfg.temperature, top_p=cfg.top_p,
          max_tokens=cfg.max_answer_tokens if p.answering else cfg.max_step_tokens,
          seed=stable_seed(p.question.id, p.index, len(p.steps), stage, p.attempts),
          meta={"question": p.question, "path_index": p.index, "step_index": len(p.steps), "stage": stage}))
    replies = backend.chat(reqs)
    still = []
    for p, reply in zip(active, replies):
      if p.answering:
        answer = (reply or "").strip()
        if reply is None or not answer:
          p.attempts += 1
          if p.attempts > cfg.max_retries:
            yield Dropped(p.question.id, p.index, "request_failed" if reply is None else "empty_answer")
            continue
          still.append(p)
          continue
        steps = tuple(p.steps[:-1]) + (dataclasses.replace(p.steps[-1], action="summary"),)
        yield records.ReasoningPath(id=f"{p.question.id}/p{p.index}", question_id=p.question.id, steps=steps,
                                    final_answer=answer, meta={"generator": generator_name or backend.name,
                                                               "path_index": p.index})
        continue
      step = parse_step(reply)
      if step is None:
        p.attempts += 1
        if p.attempts > cfg.max_retries:
          yield Dropped(p.question.id, p.index, "request_failed" if reply is None else "malformed_step")
          continue
        still.append(p)
        continue
      p.attempts = 0
      if step.action == "summary" and len(p.steps) + 1 < cfg.min_steps:
        step = dataclasses.replace(step, action="continue")
      p.steps.append(step)
      if step.action == "summary" or len(p.steps) >= cfg.max_steps:
        p.answering = True
      still.append(p)
    active = still


# ------------------------------------------------------------------- whole chains from a reasoning agent

def parse_chain(text: str, preset: str | prompts.PromptPreset) -> tuple[records.Step, ...]:
  """A reasoning agent's reply (or its chain) -> steps, as the preset writes them (preset.format_chain; "ours":
  'Step 1: title\\ncontent\\n\\nStep 2: ...'); the last step's action is "summary"; () if none parse."""
  p = prompts.get_preset(preset)
  steps = [records.Step(t, c, "continue") for t, c in p.parse_steps(p.unwrap_chain(text))]
  if steps:
    steps[-1] = dataclasses.replace(steps[-1], action="summary")
  return tuple(steps)


def chain_request_messages(question: records.Question, preset: str | prompts.PromptPreset) -> tuple[dict, ...]:
  """The reasoning agent's prompt for `question` as a backend request: the preset's conversation without the
  `<image>` placeholder (the image travels beside the text; `LocalBackend` puts it back where the agent was
  trained to see it: `prompts.place_image`)."""
  q = prompts.format_question(question.question, question.choices)
  return tuple(prompts.strip_image(prompts.get_preset(preset).messages("reasoning", q)))


def synthesize_chains(items: Iterable[tuple[records.Question, bytes | None, int]], backend: Backend,
                      cfg: ProgressiveConfig, *, preset: str | prompts.PromptPreset, generator_name: str = ""
                      ) -> Iterator[records.ReasoningPath | Dropped]:
  """Samples whole chains from a reasoning agent (its own prompt, from `preset`, one call per path): iterative
  DPO's sampler.

  The final answer is the last step's content (the agent writes no separate answer); assessment reads it.
  """
  items = list(items)
  reqs = [ChatRequest(
      messages=chain_request_messages(q, preset), image=img, temperature=cfg.temperature, top_p=cfg.top_p,
      max_tokens=cfg.max_chain_tokens, seed=stable_seed(q.id, k, "chain"),
      meta={"question": q, "path_index": k, "stage": "chain"})
      for q, img, k in items]
  for (q, _, k), reply in zip(items, backend.chat(reqs)):
    steps = parse_chain(reply or "", preset)
    if reply is None:
      yield Dropped(q.id, k, "request_failed")
    elif not steps:
      yield Dropped(q.id, k, "unparseable_chain")
    else:
      yield records.ReasoningPath(id=f"{q.id}/p{k}", question_id=q.id, steps=steps, final_answer=steps[-1].content,
                                  meta={"generator": generator_name or backend.name, "path_index": k})
