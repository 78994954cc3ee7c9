"""ChartQA scored as VLMEvalKit scores it: relaxed accuracy (vlmeval/dataset/utils/vqa_eval.py, image_vqa.py).

    card = score_chartqa(rows, {row["index"]: reply_text for ...})
    card.aggregate   # {"augmented": 81.2, "human": 60.4, "Overall": 70.8}   (percent)

`relaxed_correctness(target, prediction)` (pix2struct's rule): when both parse as numbers ("12", "-3.5", "1e3";
"12%" is 0.12) and the target is not 0, the prediction is right within 5% of the target; otherwise the two strings
must be equal ignoring case. Quirks reproduced:
  - no normalisation: "1,234" is not a number (so it must equal the target as a string), "$5" neither, and a
    prediction "12" is 100 times a target "12%"
  - a target of 0 is compared as a string ("0" vs "0.0" is wrong)
  - the prediction is stripped, the target is not (a number parses either way)
  - an answer cell that is a Python list literal ("['a', 'b']") holds several answers: the best one counts
  - legacy rules (before VLMEvalKit #1204): the arguments were swapped, so the 5% was of the prediction
"""

from __future__ import annotations

import ast
from typing import Any, Mapping, Sequence

from insightv_jax.scoring import vlmeval_compat as vc

Row = Mapping[str, Any]


def _to_float(text: str) -> float | None:
  try:
    if text.endswith("%"):
      return float(text.rstrip("%")) / 100.0
    return float(text)
  except ValueError:
    return None


def relaxed_correctness(target: Any, prediction: Any,
                        max_relative_change: float = vc.CHARTQA_MAX_RELATIVE_CHANGE) -> bool:
  prediction, target = str(prediction), str(target)
  pred_f, target_f = _to_float(prediction), _to_float(target)
  if pred_f is not None and target_f:  # Quirk reproduced: a target of 0 (falsy) falls to the string compare
    return abs(pred_f - target_f) / abs(target_f) <= max_relative_change
  return prediction.lower() == target.lower()


def answers_of(row: Row) -> list:
  """The row's gold answers: VLMEvalKit's `str(answer)` (NaN -> 'nan'), a list literal read as several."""
  answer = "nan" if row.get("answer") is None else str(row["answer"])
  try:
    value = ast.literal_eval(answer)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return [answer]
  return list(value) if isinstance(value, list) else [answer]


def judge_row(row: Row, prediction: str, *, rules: str = "current") -> dict[str, Any]:
  vc.check_rules(rules)
  pred = str(prediction).strip()
  golds = answers_of(row)
  if rules == "legacy":
    match = [relaxed_correctness(pred, g) for g in golds]
  else:
    match = [relaxed_correctness(g, pred) for g in golds]
  return {"index": row["index"], "extracted": pred, "answer": golds, "correct": any(match)}


def score_chartqa(rows: Sequence[Row], predictions: Mapping[Any, str], *, dataset: str = "ChartQA_TEST",
                  rules: str = "current") -> vc.Scorecard:
  """VLMEvalKit's ChartQA score of `predictions` (index -> answer text) over the rows that have one: the mean of
  the best match per question x 100, per split then Overall when the rows carry `split`, else Overall then each
  category."""
  scored = [r for r in rows if r["index"] in predictions]
  decisions = [judge_row(r, predictions[r["index"]], rules=rules) for r in scored]
  hits = [d["correct"] for d in decisions]
  aggregate: dict[str, float] = {}
  if any("split" in r for r in scored):
    for sp in sorted({str(r.get("split")) for r in scored}):
      aggregate[sp] = _pct(h for r, h in zip(scored, hits) if str(r.get("split")) == sp)
    aggregate["Overall"] = _pct(hits)
  else:
    aggregate["Overall"] = _pct(hits)
    for cat in sorted({str(r["category"]) for r in scored if r.get("category") is not None}):
      aggregate[cat] = _pct(h for r, h in zip(scored, hits) if str(r.get("category")) == cat)
  return vc.Scorecard(dataset, "chartqa", "relaxed accuracy (%)", tuple(decisions), aggregate,
                      ("Overall", aggregate["Overall"]))


def _pct(values) -> float:
  values = [float(v) for v in values]
  return 100 * sum(values) / len(values) if values else float("nan")
