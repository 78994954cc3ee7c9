"""Dataset assembly from assessed paths: reasoning SFT, summary SFT and DPO pairs.

Per question, correct paths are banded by reasoning score: high >= high_threshold, mid >= mid_threshold,
low below. Then:
  reasoning SFT  up to `reasoning_per_question` high-band paths (best first)
  summary SFT    a documented mix per question: `summary_high` / `summary_mid` / `summary_low` correct chains and
                 `summary_wrong` wrong-answer chains, each with the CORRECT answer as target and its quality
                 (high | mid | low | wrong) so the summary agent learns to judge chains; plus, with
                 `perception_ratio` > 0, plain question -> answer examples without a chain
  DPO pairs      chosen = the highest-scored path, rejected = the lowest (wrong-answer paths count as score 0),
                 kept only when chosen > rejected + `min_score_gap`; up to `pairs_per_question` pairs, walking
                 inward from both ends
Chains are written as the prompt preset (`config.prompts`) writes them (`PromptPreset.format_chain`), the layout
the loader trains the agents on with that preset. Everything is a pure function of the assessed paths (sorted by
id), so reruns and resumed runs assemble identical datasets.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from insightv_jax.data import prompts, records


@dataclasses.dataclass(frozen=True)
class AssemblyConfig:
  """The fields of the module doc. No defaults here: the values live in configs/datagen.py (`assembly`),
  documented there: `AssemblyConfig(**config.assembly.to_dict())`."""

  high_threshold: float
  mid_threshold: float
  reasoning_per_question: int
  summary_high: int
  summary_mid: int
  summary_low: int
  summary_wrong: int
  perception_ratio: float
  min_score_gap: float
  pairs_per_question: int


def _score(p: records.ReasoningPath) -> float:
  return p.scores.get("reasoning", 0.0) if p.scores.get("answer_correct") else 0.0


def band(p: records.ReasoningPath, cfg: AssemblyConfig) -> str:
  if not p.scores.get("answer_correct"):
    return "wrong"
  s = p.scores.get("reasoning", 0.0)
  return "high" if s >= cfg.high_threshold else "mid" if s >= cfg.mid_threshold else "low"


def assemble_question(q: records.Question, paths: Sequence[records.ReasoningPath], cfg: AssemblyConfig,
                      index: int = 0, *, preset: str | prompts.PromptPreset):
  """-> (reasoning SFT records, summary SFT records, DPO pairs) for one question, chains written by `preset`."""
  format_chain = prompts.get_preset(preset).format_chain
  paths = sorted(paths, key=lambda p: p.id)
  ranked = sorted(paths, key=lambda p: (-_score(p), p.id))
  question = prompts.format_question(q.question, q.choices)
  bands = {b: [p for p in ranked if band(p, cfg) == b] for b in ("high", "mid", "low", "wrong")}
  reasoning = [records.ReasoningSFT(id=f"{p.id}/r", images=q.images, question=question,
                                    reasoning=format_chain(p.steps), source=q.source)
               for p in bands["high"][:cfg.reasoning_per_question]]
  take = {"high": cfg.summary_high, "mid": cfg.summary_mid, "low": cfg.summary_low, "wrong": cfg.summary_wrong}
  summary = [records.SummarySFT(id=f"{p.id}/s", images=q.images, question=question,
                                reasoning=format_chain(p.steps), answer=q.answer, chain_quality=b,
                                source=q.source)
             for b in ("high", "mid", "low", "wrong") for p in bands[b][:take[b]]]
  if int((index + 1) * cfg.perception_ratio) > int(index * cfg.perception_ratio):  # ratio r: r per question
    summary.append(records.SummarySFT(id=f"{q.id}/plain", images=q.images, question=question, reasoning="",
                                      answer=q.answer, chain_quality="none", source=q.source))
  pairs = []
  lo, hi = len(ranked) - 1, 0
  while len(pairs) < cfg.pairs_per_question and hi < lo:
    chosen, rejected = ranked[hi], ranked[lo]
    if _score(chosen) <= _score(rejected) + cfg.min_score_gap:
      break
    pairs.append(records.DPOPair(id=f"{q.id}/pair{len(pairs)}", images=q.images, prompt=question,
                                 chosen=format_chain(chosen.steps),
                                 rejected=format_chain(rejected.steps),
                                 chosen_score=_score(chosen), rejected_score=_score(rejected)))
    hi, lo = hi + 1, lo - 1
  return reasoning, summary, pairs
