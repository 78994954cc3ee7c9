"""GRPO rewards: plain functions of (question, reply) -> float | None, chosen by name and weighted.

    rewards = build_rewards(["answer", "format"], [1.0, 0.2], agent="reasoning", preset="ours")
    table, total = rewards(questions, replies)     # table [N, F] (NaN: that function could not score the reply);
                                                   # total [N] = weighted sum, NaN where no function scored it
    table, total = rewards(questions, replies, chains=chains)    # summary agent: the chain each reply read
    table, total = rewards(questions, replies, judged=answers)   # reasoning agent, grpo.reward_judge="summary":
                                                   # `answer` scores a frozen summary agent's reply to each chain
    adv = losses.group_advantages(total, G)        # NaN -> advantage 0, as TRL does

question: a `records.Question` (question, answer, choices); reply: the agent's reply text as the agents decode it
(`infer.agents`: special tokens kept, cut at the template's stop string).

  answer   1 if the reply's final answer is right, else 0, judged as `insightv-eval` judges our own questions
           (`scoring.is_correct`: option letters, numbers within 5%, yes/no, normalised text); a question without a
           gold answer gives None. `judge=` replaces the judge (e.g. eval's official benchmark scorers, which sit
           above train). For the reasoning agent this is the answer its chain reaches (the last number, or the
           option it names), or with grpo.reward_judge="summary" the answer a frozen summary agent gives after
           reading the chain (`Rewards(..., judged=)`: what counts at inference, the two-agent pipeline).
  format   the agent's tags and step structure, as the prompt preset writes them (`data.prompts.PromptPreset`,
           nothing re-written here): the mean of (a) the reply is, up to whitespace, the preset's reply for its own
           content (reasoning agent: `preset.reasoning_messages(q, chain)`'s reply around `preset.unwrap_chain(reply)`;
           summary agent: `preset.summary_messages(q, chain, answer, judgement)`'s reply) and, for the reasoning
           agent, (b) the chain is at least `min_steps` steps in the preset's `format_chain` layout. None (not
           scorable) for a summary preset whose reply is the bare answer (the insightv preset): any text is that
           layout, so a constant 1 would only shift every reward.
  verdict  summary agent (the J-GRPO role), for a preset that writes an explicit verdict on the chain ("ours":
           "Judgement: the reasoning is sound | flawed."): 1 when the stated verdict is the truth about the chain
           it read (sound = the chain's own answer, judged as `answer` judges it, is right), 0 when it is wrong or
           missing; None when the preset writes no verdict (insightv) or the question has no gold answer.
  length   DAPO's soft overlong penalty: 0 up to `length_budget` units, then linearly down to -1 over
           `length_interval` more, -1 beyond; units from `count` (default: whitespace-separated words; pass the
           tokenizer's token count to measure tokens).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Sequence

import numpy as np

from insightv_jax.data import prompts, records
from insightv_jax.scoring import extract

RewardFn = Callable[[records.Question, str], "float | None"]
AGENTS = ("reasoning", "summary")


def answer(question: records.Question, reply: str, *, judge: Callable[[records.Question, str], bool] | None = None
           ) -> float | None:
  if not question.answer:
    return None
  if judge is not None:
    return float(judge(question, reply))
  return float(extract.is_correct(reply, question.answer, choices=question.choices))


@functools.lru_cache(maxsize=None)
def _step_layout(preset: prompts.PromptPreset) -> tuple[str, re.Pattern]:
  """(separator, pattern of one step) of the preset's `format_chain`, read off two formatted probe steps."""
  title, content = "\x00TITLE\x00", "\x00CONTENT\x00"
  one = preset.format_chain([(title, content)])
  two = preset.format_chain([(title, content)] * 2)
  head = one[:one.index(title)]  # e.g. "Step 1: " (ours) or "" (insightv)
  sep = two[len(one):two.index(title, len(one)) - len(head)]
  pattern = re.escape(one)
  pattern = re.sub(r"\d+", r"\\d+", pattern)  # step numbers
  pattern = pattern.replace(re.escape(title), r"[^\n]+?").replace(re.escape(content), r".+")
  return sep, re.compile(pattern, re.DOTALL)


def chain_steps(chain: str, preset: str | prompts.PromptPreset = prompts.DEFAULT_PRESET) -> int:
  """How many steps the chain holds in the preset's layout; 0 if any part of it is not a step."""
  sep, step = _step_layout(prompts.get_preset(preset))
  parts = [p for p in chain.strip().split(sep) if p.strip()]
  return len(parts) if parts and all(step.fullmatch(p.strip()) for p in parts) else 0


def format_reward(question: records.Question, reply: str, *, agent: str = "reasoning",
                  preset: str | prompts.PromptPreset = prompts.DEFAULT_PRESET, min_steps: int = 2) -> float:
  p = prompts.get_preset(preset)
  reply = reply.strip()
  q = prompts.format_question(question.question, question.choices)
  if agent == "reasoning":
    chain = p.unwrap_chain(reply)
    tags = _same(p.reasoning_messages(q, chain)[-1]["content"], reply)
    return (float(tags) + float(chain_steps(chain, p) >= min_steps)) / 2
  if not has_summary_layout(p):
    return None
  out = prompts.extract_tag(reply, prompts.OUTPUT_OPEN, prompts.OUTPUT_CLOSE)
  expected = p.summary_messages(q, "", out if out is not None else reply, prompts.parse_judgement(reply))
  return float(_same(expected[-1]["content"], reply))


@functools.lru_cache(maxsize=None)
def has_summary_layout(preset: prompts.PromptPreset) -> bool:
  """Does the preset's summary reply have a layout of its own (ours: tags), or is it the bare answer (insightv)?"""
  probe = "\x00ANSWER\x00"
  return preset.summary_messages("q", "c", probe)[-1]["content"] != probe


@functools.lru_cache(maxsize=None)
def writes_verdict(preset: prompts.PromptPreset) -> bool:
  """Does the preset's summary reply state a verdict on the chain (`prompts.JUDGEMENTS`)?"""
  return any(preset.summary_messages("q", "c", "a", j) != preset.summary_messages("q", "c", "a")
             for j in prompts.JUDGEMENTS)


def verdict(question: records.Question, reply: str, *, chain: str | None,
            preset: str | prompts.PromptPreset = prompts.DEFAULT_PRESET) -> float | None:
  p = prompts.get_preset(preset)
  if not writes_verdict(p) or chain is None:
    return None
  right = answer(question, chain)  # the answer the chain reaches, judged as the answer reward judges it
  if right is None:
    return None
  return float(prompts.parse_judgement(reply) == prompts.JUDGEMENTS[0 if right else 1])


def _same(expected: str, reply: str) -> bool:
  """Equal up to whitespace runs (the insightv preset's unwrap_chain keeps the newline its wrap_chain adds)."""
  return expected.split() == reply.split()


def length_penalty(question: records.Question, reply: str, *, length_budget: int = 512, length_interval: int = 128,
                   count: Callable[[str], int] | None = None) -> float:
  del question
  n = count(reply) if count is not None else len(reply.split())
  if n <= length_budget:
    return 0.0
  return -min(1.0, (n - length_budget) / max(length_interval, 1))


REWARDS: dict[str, Callable[..., float | None]] = {"answer": answer, "format": format_reward, "length": length_penalty,
                                                  "verdict": verdict}
_OPTIONS = {"answer": ("judge",), "format": ("agent", "preset", "min_steps"),
            "length": ("length_budget", "length_interval", "count"), "verdict": ("preset",)}
# per-reply inputs a reward takes besides (question, reply), from `Rewards.__call__`'s keywords
_PER_REPLY = {"verdict": ("chain",)}
# the rewards that score the frozen summary agent's reply instead of the reasoning agent's (reward_judge="summary")
JUDGED = ("answer",)
# rewards of one agent only
_AGENT_ONLY = {"verdict": "summary"}


def register_reward(name: str, fn: Callable[..., float | None], options: Sequence[str] = ()) -> None:
  """Adds reward `name` (fn(question, reply, **options) -> float | None; `options`: the keyword options of
  `build_rewards` it takes), e.g. a task's own verifier or a test's scripted reward."""
  if name in REWARDS:
    raise ValueError(f"reward {name!r} is already registered")
  REWARDS[name] = fn
  _OPTIONS[name] = tuple(options)


def get_reward(name: str, **options) -> RewardFn:
  """The reward `name` with its options bound (options another reward takes are ignored) -> fn(question, reply)."""
  if name not in REWARDS:
    raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(REWARDS)}")
  return functools.partial(REWARDS[name], **{k: v for k, v in options.items() if k in _OPTIONS[name]})


@dataclasses.dataclass(frozen=True)
class Rewards:
  """Named, weighted reward functions; call on (questions, replies) -> (table [N, F], total [N]) float32."""

  names: tuple[str, ...]
  weights: tuple[float, ...]
  fns: tuple[RewardFn, ...]

  def __call__(self, questions: Sequence[records.Question], replies: Sequence[str], *,
               chains: Sequence[str] | None = None, judged: Sequence[str] | None = None):
    """chains [N]: the chain each (summary agent's) reply read; judged [N]: what the `JUDGED` rewards score instead
    of the replies (a frozen summary agent's replies to the reasoning agent's chains)."""
    n = len(replies)
    for name, extra in (("questions", questions), ("chains", chains), ("judged", judged)):
      if extra is not None and len(extra) != n:
        raise ValueError(f"{len(extra)} {name} for {n} replies")
    table = np.full((n, len(self.fns)), np.nan, np.float32)
    for j, (name, fn) in enumerate(zip(self.names, self.fns)):
      texts = judged if judged is not None and name in JUDGED else replies
      wants_chain = "chain" in _PER_REPLY.get(name, ())
      for i, (q, r) in enumerate(zip(questions, texts)):
        v = fn(q, r, chain=chains[i] if chains is not None else None) if wants_chain else fn(q, r)
        table[i, j] = np.nan if v is None else v
    return table, combine(table, self.weights)

  def metrics(self, table: np.ndarray) -> dict[str, float]:
    """TRL's per-reward logs: rewards/<name>/mean and /std over the replies it scored (NaN left out)."""
    out = {}
    for i, name in enumerate(self.names):
      col = table[:, i][~np.isnan(table[:, i])]
      out[f"rewards/{name}/mean"] = float(col.mean()) if len(col) else float("nan")
      out[f"rewards/{name}/std"] = float(col.std(ddof=1)) if len(col) > 1 else float("nan")
    return out


def combine(table: np.ndarray, weights: Sequence[float]) -> np.ndarray:
  """Weighted sum over reward functions [N, F] -> [N], NaN entries skipped; NaN where every entry is NaN (TRL's
  sum_then_normalize)."""
  table = np.asarray(table, np.float32)
  total = np.nansum(table * np.asarray(weights, np.float32)[None], axis=1)
  return np.where(np.isnan(table).all(axis=1), np.nan, total).astype(np.float32)


def build_rewards(names: Sequence[str], weights: Sequence[float] | None = None, *, agent: str = "reasoning",
                  preset: str | prompts.PromptPreset = prompts.DEFAULT_PRESET, **options) -> Rewards:
  """Rewards by name (`REWARDS`), weights default 1 each; options: judge (answer), min_steps (format),
  length_budget, length_interval, count (length)."""
  if agent not in AGENTS:
    raise ValueError(f"agent={agent!r}; expected one of {AGENTS}")
  names = tuple(names)
  if not names:
    raise ValueError(f"no rewards named; valid rewards: {', '.join(REWARDS)}")
  weights = tuple(float(w) for w in (weights if weights is not None else [1.0] * len(names)))
  if len(weights) != len(names):
    raise ValueError(f"{len(weights)} reward weights for {len(names)} rewards {list(names)}")
  wrong = [n for n in names if _AGENT_ONLY.get(n, agent) != agent]
  if wrong:
    raise ValueError(f"reward {wrong[0]!r} is the {_AGENT_ONLY[wrong[0]]} agent's (--config.grpo.agent="
                     f"{_AGENT_ONLY[wrong[0]]}); this run trains the {agent} agent")
  fns = tuple(get_reward(n, agent=agent, preset=prompts.get_preset(preset), **options) for n in names)
  return Rewards(names, weights, fns)
