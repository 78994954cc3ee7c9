"""Multiple choice scored as VLMEvalKit scores it with exact matching: MMBench (circular) and MMStar (vanilla).

    card = score_mcq(rows, {row["index"]: reply_text for ...}, dataset="MMBench_DEV_EN")
    card.aggregate   # {"Overall": 0.81, "AR": ..., "CP": ..., ...}   (fractions, VLMEvalKit's report_acc row)

`rows` are the benchmark's rows as VLMEvalKit reads them from its TSV (index, question, A.., answer, category,
l2-category, split, hint; NaN cells as None); predictions map a row's index to the model's answer text.

Option extraction (vlmeval/utils/matching_util.py, `can_infer`): first the option letter (`can_infer_option`),
then the option's text (`can_infer_text`); a reply that matches neither gets 'Z' and is wrong. VLMEvalKit then
asks an LLM judge about the unmatched replies when one is configured; this module implements the exact-matching
path only (its `model='exact_matching'` setting), so an unmatched reply stays wrong.

Circular evaluation (vlmeval/dataset/utils/multiple_choice.py, `mcq_circular_eval`): MMBench ships each question
with rotated copies (index + k * 1e6, options rolled). A question counts only if every copy that was predicted is
answered right; its category is the main row's (index < 1e6). The accuracy is over main rows that were predicted.
"""

from __future__ import annotations

import collections
import string
from typing import Any, Mapping, Sequence

from insightv_jax.scoring import vlmeval_compat as vc

Row = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------- option extraction

def build_choices(row: Row) -> dict[str, str]:
  """The row's options {letter: text}, A..Z columns that are not NaN (None), in letter order."""
  return {ch: row[ch] for ch in string.ascii_uppercase if ch in row and row[ch] is not None}


def can_infer_option(answer: str, choices: Mapping[str, Any], *, rules: str = "current") -> str | None:
  """The option letter a reply names, 'Z' for a refusal, or None.

  The reply's marks `.()[],:;!*#{}` become spaces and it is split into words; exactly one option letter must
  appear as a word (case-sensitive: "a" is not A). Current rules also want that letter among the last 4 words
  (else fall through), and accept "(correct) answer is B". (VLMEvalKit's VERBOSE=1 debug switch, which rejects
  a lone "A" in a reply of more than 3 words, is off by default and not reproduced.)
  """
  vc.check_rules(rules)
  if vc.API_FAILURE in answer:
    return None
  if any(err in answer for err in vc.REJECT_TO_ANSWER):
    return vc.NO_ANSWER
  mod = answer
  for c in vc.OPTION_STRIP_CHARS:
    mod = mod.replace(c, " ")
  words = mod.split()
  named = [c for c in choices if c in words]
  if len(named) == 1:
    ch = named[0]
    # `words.index` is the FIRST occurrence, as in VLMEvalKit: "B because B" -> the first B decides
    if rules == "legacy" or words.index(ch) >= len(words) - vc.OPTION_LAST_WORDS:
      return ch
  elif not named and vc.NO_ANSWER in words:
    return vc.NO_ANSWER
  if rules == "current":
    m = vc.VERBOSE_ANSWER_RE.search(answer)
    if m and m.group(1).upper() in choices:
      return m.group(1).upper()
  return None


def can_infer_text(answer: str, choices: Mapping[str, Any], *, rules: str = "current") -> str | None:
  """The letter of the only option whose (lower-cased) text occurs in the reply, else None.

  Current rules give up on a reply longer than twice the options' total length.
  """
  vc.check_rules(rules)
  answer = answer.lower()
  if rules == "current" and len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
    return None
  texts = {k: str(v).lower() for k, v in choices.items()}
  hits = [k for k, t in texts.items() if t in answer]
  return hits[0] if len(hits) == 1 else None


def can_infer(answer: Any, choices: Mapping[str, Any], *, rules: str = "current") -> str | None:
  answer = str(answer)
  return can_infer_option(answer, choices, rules=rules) or can_infer_text(answer, choices, rules=rules)


def judge_row(row: Row, prediction: str, *, rules: str = "current") -> dict[str, Any]:
  """One row on its own (VLMEvalKit's vanilla exact matching): the extracted letter ('Z' when none) vs answer."""
  opt = can_infer(prediction, build_choices(row), rules=rules) or vc.NO_ANSWER
  return {"index": row["index"], "extracted": opt, "answer": row["answer"], "correct": opt == row["answer"]}


# ---------------------------------------------------------------------------------------------- benchmark scores

def is_circular(dataset: str) -> bool:
  return any(k in dataset.lower() for k in vc.CIRCULAR_NAME_KEYS)


def circular_group(row: Row) -> int:
  return int(row["g_index"]) if row.get("g_index") is not None else int(row["index"]) % vc.CIRCULAR_OFFSET


def score_mcq(rows: Sequence[Row], predictions: Mapping[Any, str], *, dataset: str, circular: bool | None = None,
              rules: str = "current") -> vc.Scorecard:
  """VLMEvalKit's multiple-choice score of `predictions` (index -> answer text) over `rows`.

  circular: None decides from the dataset name as VLMEvalKit does (mmbench / ccbench / circular / mmcr).
  Rows without a prediction are not scored (VLMEvalKit scores the rows of its prediction file).
  """
  vc.check_rules(rules)
  circular = is_circular(dataset) if circular is None else circular
  scored = sorted((r for r in rows if r["index"] in predictions), key=lambda r: _sort_key(r["index"]))
  if circular:
    groups: dict[int, list[Row]] = collections.defaultdict(list)
    for r in scored:
      groups[circular_group(r)].append(r)
    mains = [r for r in scored if int(r["index"]) == circular_group(r)]
    decisions = [_circular_decision(main, groups[int(main["index"])], predictions, rules) for main in mains]
    reported = mains
  else:
    decisions = [judge_row(r, predictions[r["index"]], rules=rules) for r in scored]
    reported = scored
  metric = "circular accuracy" if circular else "accuracy"
  aggregate = report_acc(reported, [d["correct"] for d in decisions])
  return vc.Scorecard(dataset, "mcq_circular" if circular else "mcq", metric, tuple(decisions), aggregate,
                      _headline(aggregate))


def _circular_decision(main: Row, group: list[Row], predictions: Mapping[Any, str], rules: str) -> dict:
  """`prefetch_circular_group` under exact matching: a copy whose extracted letter is wrong fails the group at
  once; the group counts only if every copy's letter was extracted and right (an unmatched copy -> wrong)."""
  rotations = []
  correct = True
  for r in group:
    opt = can_infer(predictions[r["index"]], build_choices(r), rules=rules)
    rotations.append({"index": r["index"], "answer": r["answer"], "extracted": opt})
    if opt != r["answer"]:
      correct = False
      if opt:  # VLMEvalKit stops at the first wrong extraction; its log names that copy
        break
  return {"index": main["index"], "correct": correct, "rotations": rotations}


def report_acc(rows: Sequence[Row], hits: Sequence[bool]) -> dict[str, float]:
  """`report_acc`: Overall, then each l2-category, then each category (sorted; MMBench's l2 names abbreviated),
  per split. One split (or none) gives plain keys; several give "<split>|<key>" keys. Empty groups are left out
  (VLMEvalKit prints NaN)."""
  splits = sorted({str(r.get("split")) for r in rows if r.get("split") is not None}) or [None]
  out: dict[str, float] = {}
  for sp in splits:
    prefix = f"{sp}|" if len(splits) > 1 else ""
    in_split = [(r, h) for r, h in zip(rows, hits) if sp is None or str(r.get("split")) == sp]
    out[prefix + "Overall"] = _mean(h for _, h in in_split)
    for group in ("l2-category", "category"):
      # Quirk reproduced: a category named like an l2-category (or an abbreviation) overwrites its column
      for value in sorted({r[group] for r, _ in in_split if r.get(group) is not None}, key=str):
        name = vc.MMB_ABBRS.get(value, value)
        out[prefix + str(name)] = _mean(h for r, h in in_split if r.get(group) == value)
  return out


def _headline(aggregate: dict[str, float]) -> tuple[str, float]:
  key = "Overall" if "Overall" in aggregate else next(k for k in aggregate if k.endswith("|Overall"))
  return key, aggregate[key]


def _mean(values) -> float:
  values = [float(v) for v in values]
  return sum(values) / len(values) if values else float("nan")


def _sort_key(index):
  return (0, index, "") if isinstance(index, int) else (1, 0, str(index))
