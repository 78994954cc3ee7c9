"""Answer extraction and matching, following lmms-eval / VLMEvalKit conventions.

  multiple choice  the option letter: "<output>B</output>", "(B)", "B.", "The answer is B", "Answer: b",
                   or the option's text when no letter is found ("... the answer is more red")
  numeric          ChartQA's relaxed accuracy: |pred - gold| <= 5% of |gold| (exact when gold is 0);
                   "1,234", "12%", "$3.5", "3 apples" all parse
  yes/no           MME style: the reply starts with / contains a clear yes or no
  short text       normalised exact match (lower case, no punctuation or articles)

Every extractor accepts malformed model output and returns None when it finds no answer.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

from insightv_jax.data.prompts import OUTPUT_CLOSE, OUTPUT_OPEN, extract_tag

_NUM = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?%?|[-+]?\$?\.\d+%?")


def answer_span(text: str) -> str:
  """The text inside <output> ... </output> if present, else the whole reply (stripped)."""
  inner = extract_tag(text or "", OUTPUT_OPEN, OUTPUT_CLOSE)
  return (inner if inner is not None else (text or "")).strip()


def extract_choice(text: str, choices: Sequence[str]) -> str | None:
  """The option letter (A, B, ...) a reply picks, or None."""
  span = answer_span(text)
  letters = [chr(ord("A") + i) for i in range(len(choices))]
  group = "".join(letters)
  patterns = [
      rf"^\(?([{group}])\)?(?:[.:)\s]|$)",  # "B", "(B)", "B.", "B) ..."
      rf"answer\s*(?:is|:)?\s*\(?([{group}])\)?\b",  # "the answer is B", "Answer: (B)"
      rf"\boption\s*\(?([{group}])\)?\b",
      rf"\(([{group}])\)",
  ]
  for pat in patterns:
    m = re.search(pat, span, flags=re.IGNORECASE if pat.startswith("answer") else 0)
    if m:
      return m.group(1).upper()
  m = re.search(rf"answer\s*(?:is|:)\s*\(?([{group.lower()}])\)?\b", span, flags=re.IGNORECASE)
  if m:
    return m.group(1).upper()
  norm = normalise_text(span)
  hits = [letter for letter, c in zip(letters, choices) if normalise_text(c) and normalise_text(c) in norm]
  if len(hits) == 1:
    return hits[0]
  if len(hits) > 1:  # the longest option text that appears (e.g. "more red" vs "red")
    return max(hits, key=lambda letter: len(choices[letters.index(letter)]))
  return None


def parse_number(text: str) -> float | None:
  """The last number in the answer span ("about 1,234.5 units" -> 1234.5; "12%" -> 12.0)."""
  span = answer_span(text)
  found = _NUM.findall(span)
  if not found:
    return None
  raw = found[-1].replace(",", "").replace("$", "").rstrip("%")
  try:
    return float(raw)
  except ValueError:
    return None


def relaxed_numeric_match(pred: float | None, gold: float, tolerance: float = 0.05) -> bool:
  if pred is None:
    return False
  if gold == 0:
    return pred == 0
  return abs(pred - gold) <= tolerance * abs(gold)


def extract_yes_no(text: str) -> str | None:
  span = normalise_text(answer_span(text))
  words = span.split()
  if not words:
    return None
  if words[0] in ("yes", "no"):
    return words[0]
  has_yes, has_no = "yes" in words, "no" in words
  if has_yes != has_no:
    return "yes" if has_yes else "no"
  return None


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_text(s: str) -> str:
  s = (s or "").lower()
  s = "".join(" " if ch in string.punctuation else ch for ch in s)
  s = _ARTICLES.sub(" ", s)
  return " ".join(s.split())


def is_correct(reply: str, answer: str, *, choices: Sequence[str] | None = None, kind: str | None = None) -> bool:
  """Scores one reply. kind: 'choice' | 'numeric' | 'yes_no' | 'text' (inferred from the gold answer if None)."""
  kind = kind or infer_kind(answer, choices)
  if kind == "choice":
    return extract_choice(reply, choices or ()) == answer.strip().upper()
  if kind == "numeric":
    return relaxed_numeric_match(parse_number(reply), float(answer.replace(",", "").rstrip("%")))
  if kind == "yes_no":
    return extract_yes_no(reply) == answer.strip().lower()
  return normalise_text(answer_span(reply)) == normalise_text(answer)


def infer_kind(answer: str, choices: Sequence[str] | None) -> str:
  if choices:
    return "choice"
  if answer.strip().lower() in ("yes", "no"):
    return "yes_no"
  try:
    float(answer.replace(",", "").rstrip("%"))
    return "numeric"
  except ValueError:
    return "text"
