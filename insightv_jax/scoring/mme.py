"""MME scored as VLMEvalKit scores it with exact matching (vlmeval/dataset/utils/yorn.py, image_yorn.py).

    card = score_mme(rows, {row["index"]: reply_text for ...})
    card.aggregate   # {"perception": 1450.2, "reasoning": 310.4, "existence": 190.0, ...}

Each reply becomes 'Yes', 'No' or 'Unknown' (`yorn_extraction`): lower-cased, VLMEvalKit's punctuation rule
applied, split into words; 'Yes' if "yes" is a word and "no" is not, 'No' the other way round, else 'Unknown'
(VLMEvalKit would ask an LLM judge about those when one is configured; exact matching leaves them wrong). A row
is right when its answer equals the extracted word exactly (the TSV's answers are "Yes" / "No").

MME asks two questions per image, one whose answer is Yes and one whose answer is No. Per category:
  acc   the share of questions answered right                      (x 100)
  acc+  the share of images whose two questions are both right     (x 100)
  score acc + acc+  (at most 200)
perception and reasoning (MME's "cognition") sum their categories' scores (at most 2000 and 800); the leaderboard's
MME number is their sum.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

from insightv_jax.scoring import vlmeval_compat as vc

Row = Mapping[str, Any]


def yorn_extraction(output: str) -> str:
  words = vc.process_punctuation(str(output).lower()).split()
  if "yes" in words and "no" not in words:
    return "Yes"
  if "yes" not in words and "no" in words:
    return "No"
  return "Unknown"


def judge_row(row: Row, prediction: str) -> dict[str, Any]:
  extracted = yorn_extraction(prediction)
  return {"index": row["index"], "extracted": extracted, "answer": row["answer"],
          "correct": row["answer"] == extracted}


def image_key(row: Row):
  """The image a question is about: VLMEvalKit groups by `image_path`. A file without that column (our readers
  keep a referenced image as the index of the row holding it, in `image`) groups by the image reference."""
  for field in ("image_path", "image"):
    if row.get(field) is not None:
      return str(row[field])
  return str(row["index"])


def score_mme(rows: Sequence[Row], predictions: Mapping[Any, str], *, dataset: str = "MME") -> vc.Scorecard:
  """VLMEvalKit's `MME_rating` of `predictions` (index -> answer text) over `rows` (those with a prediction)."""
  decisions = []
  stats: dict[str, dict[str, list[bool]]] = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    if r["index"] not in predictions:
      continue
    d = judge_row(r, predictions[r["index"]])
    decisions.append({**d, "category": r["category"], "image": image_key(r)})
    stats[r["category"]][image_key(r)].append(d["correct"])

  scores = {}
  for cat, per_image in stats.items():  # categories in order of first appearance, as VLMEvalKit's dict
    acc = _mean(h for hits in per_image.values() for h in hits)
    # acc+: VLMEvalKit multiplies the image's first two scores. An image with one scored question (a partial run)
    # makes VLMEvalKit fail with an IndexError; we count that one question.
    acc_plus = _mean(all(hits[:2]) for hits in per_image.values())
    scores[str(cat)] = 100 * acc + 100 * acc_plus

  aggregate = {}
  for group, cats in vc.MME_SUPER_CATEGORIES.items():
    present = [c for c in cats if c in scores]
    if present:  # VLMEvalKit needs all of them (KeyError otherwise); a partial run sums those present
      aggregate[group] = sum(scores[c] for c in present)
  aggregate.update(scores)
  total = sum(aggregate.get(g, 0.0) for g in vc.MME_SUPER_CATEGORIES)
  return vc.Scorecard(dataset, "mme", "MME score (acc + acc+ per category, x100)", tuple(decisions), aggregate,
                      ("perception+reasoning", total))


def _mean(values) -> float:
  values = [float(v) for v in values]
  return sum(values) / len(values) if values else 0.0
