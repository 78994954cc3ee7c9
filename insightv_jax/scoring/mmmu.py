"""MMMU scored the way the official scorer scores it (MMMU-Benchmark/MMMU, mmmu/utils/eval_utils.py).

Our own code, reproducing the official decisions one for one. Several rules are quirks of the official code,
kept because published MMMU numbers are computed with them (each is marked "compat:" where it is applied):

  multiple choice  "(B)" anywhere beats a bare " B "; the LAST mention wins ("(A) is wrong, (B)" -> B);
                   option text is searched as a plain substring only when the reply has more than 5 words
                   ("red" matches inside "bored"); a reply with no candidate gets a random letter from ONE
                   seeded stream (`random.Random(42)`), one draw per such reply, in the order replies are parsed
  open             the reply is cut into lines (the official sentence split never fires: it looks for capitals
                   after lower-casing); per line, of the tails after the last "is " / "so " / "therefore " / ...
                   (and "=" in the last line) the shortest is kept; numbers in it become floats rounded to
                   2 places, and equality with the gold number is exact (12.001 == 12.0, 12.01 != 12.0);
                   text answers match as substrings of the lower-cased tail ("b" is padded to " b" / "b ")

    rng = random.Random(compat.MMMU_SEED)
    pred = parse_multi_choice("The answer is (B) 8/11.", ["A", "B", "C", "D"], index2ans, rng)   # "B"
    judge("multiple-choice", "B", pred)                                                          # True
    judge("open", "12", parse_open("so the total is 12.00"))                                     # True
"""

from __future__ import annotations

import random
import re
from typing import Mapping, Sequence

from insightv_jax.scoring import compat

Normalized = float | str


# ----------------------------------------------------------------------------------------- multiple choice

def parse_multi_choice(response: str, all_choices: Sequence[str], index2ans: Mapping[str, str],
                       rng: random.Random) -> str:
  """The letter the official parser reads from `response`; draws from `rng` only when it finds none."""
  for ch in compat.MMMU_STRIP_CHARS:  # compat: one strip per character, in this order
    response = response.strip(ch)
  padded = f" {response} "  # so " B " can match at either end

  # 1. "(B)"; 2. a bare letter between spaces; 3. option text, only in replies of more than 5 words
  candidates = [c for c in all_choices if f"({c})" in padded]
  kind = "bracket"
  if not candidates:
    candidates, kind = [c for c in all_choices if f" {c} " in padded], "bare"
  if not candidates and len(padded.split()) > 5:
    # compat: a case-insensitive substring test, so an option's text also matches inside other words
    lower = padded.lower()
    candidates, kind = [k for k, text in index2ans.items() if text.lower() in lower], "text"

  if not candidates:
    return rng.choice(all_choices)  # compat: the official seeded random guess (see compat.MMMU_SEED)
  if len(candidates) == 1:
    return candidates[0]
  # compat: the candidate mentioned LAST wins (by where its last mention starts; ties go to the earlier option)
  if kind == "bracket":
    starts = [padded.rfind(f"({c})") for c in candidates]
  elif kind == "bare":
    starts = [padded.rfind(f" {c} ") for c in candidates]
  else:
    lower = padded.lower()
    starts = [lower.rfind(index2ans[c].lower()) for c in candidates]
  return candidates[starts.index(max(starts))]


# ---------------------------------------------------------------------------------------------------- open

# compat: the official extract_numbers patterns, matched one after the other (so a number can be read twice)
_COMMA_NUMBER = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_SIMPLE_NUMBER = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
# a sentence ends at ". " before a capital letter or at a newline (after lower-casing, so only "\n" splits
# in practice: compat, the official code lower-cases first and then looks for capitals)
_SENTENCE_END = re.compile(r"\.\s(?=[A-Z])|\n")


def extract_numbers(text: str) -> list[str]:
  """Numbers written with thousands commas, then in scientific notation, then plain ("1,234", "2e5", "-0.5")."""
  return _COMMA_NUMBER.findall(text) + _SCIENTIFIC.findall(text) + _SIMPLE_NUMBER.findall(text)


def is_number(text: str) -> bool:
  """compat: Python's float() after removing commas ("1,2" -> 12.0; "inf", "nan", "1_000" count too)."""
  try:
    float(text.replace(",", ""))
    return True
  except ValueError:
    return False


def normalize(text: str) -> list[Normalized]:
  """The official normal form: a number -> [float rounded to 2 places]; a text -> [lower case], and a one-letter
  text -> [" x", "x "] (so it only matches as a word edge)."""
  text = text.strip()
  if is_number(text):
    return [round(float(text.replace(",", "")), 2)]
  text = text.lower()
  return [" " + text, text + " "] if len(text) == 1 else [text]


def key_responses(response: str) -> list[str]:
  """The tails that may hold the answer: per sentence, the shortest text after an indicator word."""
  response = response.strip().strip(".").lower()
  sentences = _SENTENCE_END.split(response)
  found = []
  for i, sentence in enumerate(sentences):
    indicators = compat.MMMU_KEY_INDICATORS + (("=",) if i == len(sentences) - 1 else ())
    shortest = None
    for indicator in indicators:
      if indicator in sentence:
        tail = sentence.split(indicator)[-1].strip()
        # compat: an empty tail found first is replaced by any later one (the official `if not shortest`)
        if not shortest or len(tail) < len(shortest):
          shortest = tail
    if shortest and shortest.strip() not in compat.MMMU_TRIVIAL_TAILS:
      found.append(shortest)
  return found or [response]


def parse_open(response: str) -> list[Normalized]:
  """Every normalised candidate answer in an open reply (the key tails and the numbers inside them)."""
  keys = key_responses(response)
  raw = keys + [n for k in keys for n in extract_numbers(k)]
  out: list[Normalized] = []
  for item in raw:
    for norm in normalize(item):
      if norm not in out:  # the official code dedupes through a set; the order never changes a judgement
        out.append(norm)
  return out


# ------------------------------------------------------------------------------------------------- judging

def judge_multi_choice(gold: str | Sequence[str], pred: str) -> bool:
  """Exact letter match; a list of golds accepts any of them."""
  golds = gold if isinstance(gold, list) else [gold]
  return any(g == pred for g in golds)


def judge_open(gold: str | Sequence[str], preds: Sequence[Normalized]) -> bool:
  """A float pred must equal a gold number exactly (both rounded to 2 places); a text pred must contain a gold
  text (compat: a substring, so gold "cat" matches "concatenate"). A numeric gold is compared with numbers only
  (gold "6" never matches the text "16 kg"), but every number in the tail counts: "x = 1,234" also yields 234."""
  golds = gold if isinstance(gold, list) else [gold]
  norm_golds = [n for g in golds for n in normalize(g)]
  for pred in preds:
    if isinstance(pred, str):
      if any(isinstance(g, str) and g in pred for g in norm_golds):
        return True
    elif pred in norm_golds:  # compat: Python `in`, so 2.0 == 2 and a NaN matches nothing
      return True
  return False


def judge(question_type: str, gold, pred) -> bool:
  """The official `evaluate` for one question: 'multiple-choice' compares letters, anything else is open."""
  if question_type == "multiple-choice":
    return judge_multi_choice(gold, pred)
  return judge_open(gold, pred)


def parse(record: Mapping, rng: random.Random):
  """The official parse of one output record (`question_type`, `response`, and for multiple choice
  `all_choices` and `index2ans`): a letter, or a list of normalised open candidates."""
  if record["question_type"] == "multiple-choice":
    return parse_multi_choice(record["response"], record["all_choices"], record["index2ans"], rng)
  return parse_open(record["response"])


# --------------------------------------------------------------------------------------------- aggregation

def subject_of(question_id: str) -> str:
  """'validation_Art_Theory_12' -> 'Art_Theory' (the official `'_'.join(id.split('_')[1:-1])`)."""
  return "_".join(question_id.split("_")[1:-1])


def subject_order(ids) -> list[str]:
  """Ids ordered the way `main_parse_and_eval.py --subject ALL` parses them: subject by subject in the order of
  compat.MMMU_CAT_SHORT2LONG, each subject's ids in their given order; unknown subjects last."""
  rank = {s: i for i, s in enumerate(compat.MMMU_CAT_SHORT2LONG.values())}
  ids = list(ids)
  pos = {q: i for i, q in enumerate(ids)}
  return sorted(ids, key=lambda q: (rank.get(subject_of(q), len(rank)), pos[q]))


def aggregate(correct: Mapping[str, bool], ndigits: int | None = 3) -> dict[str, dict]:
  """Accuracy per subject, per domain ('Overall-<domain>') and overall, as `main_eval_only.py` reports it.

  Keys come in the official order: for each domain of compat.MMMU_DOMAIN_CAT2SUB_CAT its 'Overall-<domain>'
  row then its subjects, then 'Overall'. Each row is {"num": n, "acc": accuracy} with accuracy rounded to
  `ndigits` places (3 officially; None keeps the full fraction). Domain and overall accuracies are per
  question (instance level), over the subjects present; a domain with no subject present reports 0.
  """
  per_subject: dict[str, list[bool]] = {}
  for qid, ok in correct.items():
    per_subject.setdefault(subject_of(qid), []).append(bool(ok))
  rnd = (lambda x: x) if ndigits is None else (lambda x: round(x, ndigits))
  acc = {s: sum(v) / len(v) for s, v in per_subject.items()}

  def pooled(subjects: list[str]) -> dict:
    # compat: the official calculate_ins_level_acc, sum(acc * num) / sum(num), kept float for float
    num = sum(len(per_subject[s]) for s in subjects)
    return {"num": num, "acc": rnd(sum(acc[s] * len(per_subject[s]) for s in subjects) / num) if num else 0}

  out: dict[str, dict] = {}
  for domain, subjects in compat.MMMU_DOMAIN_CAT2SUB_CAT.items():
    present = [s for s in subjects if s in per_subject]
    out["Overall-" + domain] = pooled(present)
    for s in present:
      out[s] = {"num": len(per_subject[s]), "acc": rnd(acc[s])}
  # compat: 'Overall' pools every subject of compat.MMMU_CAT_SHORT2LONG that has outputs
  out["Overall"] = pooled([s for s in compat.MMMU_CAT_SHORT2LONG.values() if s in per_subject])
  return out
