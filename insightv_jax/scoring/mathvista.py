"""MathVista scored the way the official scorer scores it (lupantech/MathVista, evaluation/extract_answer.py and
evaluation/calculate_score.py). Our own code, reproducing the official decisions:

  extraction     official_rules(): an empty reply -> ""; a multiple-choice reply that IS one of the choices;
                 an integer / float reply that parses as one; with quick=True, `The answer is "X".` -> X.
                 Everything else goes to an LLM with the official demo prompt (llm_extract), or, with no LLM,
                 to our rule fallback (rule_extract), an approximation of what the LLM extracts
  normalisation  multiple choice: "(b) ..." -> "B"; a letter A.. -> that choice's text; anything else -> the
                 choice at the smallest edit distance (compat: so "N/A" or "P" still picks an option, the
                 first one on ties); integer: str(int(float(x))) (truncates, "2.9" -> "2"); float:
                 str(round(float(x), precision)); list: str(x); anything unparseable -> None
  equality       the normalised prediction == the gold answer string, exactly

    extraction = official_rules(reply, problem, quick=True)     # None: only an LLM (or rule_extract) can say
    prediction = normalize_extraction(extraction, problem)
    correct = safe_equal(prediction, problem["answer"])
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

from insightv_jax.scoring import compat

# the official quick-extraction pattern (greedy, one line): `The answer is "text".` -> text
_QUICK = re.compile(r'The answer is "(.*)"\.')
# the official normalisation's `extract "A" from "(A) text"` pattern (either case)
_LETTER_IN_BRACKETS = re.compile(r"\(([a-zA-Z])\)")


# ------------------------------------------------------------------------------------------------ extraction

def official_rules(response: str | None, problem: Mapping, *, quick: bool = True) -> str | None:
  """The extraction the official code makes without an LLM, or None when it would ask the LLM.

  quick: also apply the `--quick_extract` pattern (`The answer is "X".`); the official scripts run without it.
  A None response counts as empty (the official code would send the text "None" to the LLM).
  """
  response = "" if response is None else response
  if response == "":
    return ""
  if problem["question_type"] == "multi_choice" and response in (problem.get("choices") or ()):
    return response
  if problem["answer_type"] == "integer":
    try:
      return str(int(response))  # compat: Python int(), so " 12 " and "+12" -> "12", "12.0" does not parse
    except ValueError:
      pass
  if problem["answer_type"] == "float":
    try:
      return str(float(response))
    except ValueError:
      pass
  if quick:
    m = _QUICK.search(response)
    if m:
      return m.group(1)
  return None


def extraction_prompt(query: str, response: str) -> str:
  """The official extractor's prompt: the demo examples, then the problem's query and the model response."""
  return f"{compat.MATHVISTA_EXTRACTION_DEMO_PROMPT.strip()}\n\n{query}\n\n{response}\n\nExtracted answer: "


def llm_extract(response: str | None, problem: Mapping, chat: Callable[..., str | None], *,
                quick: bool = False) -> str:
  """The official extraction: official_rules, else the LLM's answer to extraction_prompt (stripped).

  chat(messages, **params) -> str | None is any chat-completions call (e.g. OpenAIClient.chat); it gets one
  user message and the official sampling (temperature 0, max_tokens 1024, n 1). A failed call (None) gives
  "" as the official code does after an error.
  """
  found = official_rules(response, problem, quick=quick)
  if found is not None:
    return found
  prompt = extraction_prompt(problem["query"], "" if response is None else response)
  reply = chat([{"role": "user", "content": prompt}], **compat.MATHVISTA_EXTRACTION_SAMPLING)
  return reply.strip() if reply else ""


# ------------------------------------------------------------------------------- rule fallback (ours, no LLM)
# Not official: an approximation of what the LLM extractor answers, from the reply's last statement of an
# answer. How often it agrees with the official extractions in MathVista's results/ is in eval/prediction_files.py.

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                      "ninety": "90", "hundred": "100", "no": "0", "none": "0"})
_NUMBER_OR_WORD = rf"{_NUMBER}|\b(?:{'|'.join(_NUMBER_WORDS)})\b"
# where a free-form reply states its number, strongest first (the last match of the first pattern that matches)
_NUMBER_STATEMENTS = tuple(re.compile(p, re.IGNORECASE) for p in (
    rf"\\boxed\{{\s*\$?({_NUMBER})",                                        # \boxed{12}
    rf"\*\*[^*\d-]{{0,40}}?\$?({_NUMBER})[^*]{{0,40}}\*\*",                   # **12 feet**
    rf"answer\s*(?:is|would be|will be|should be|:|=)?\s*:?\s*(?:approximately|about)?\s*\$?({_NUMBER})",
    rf"(?:=|≈|equals|is|are|be|was|of)\s*(?:approximately|about|around|roughly)?\s*\$?\s*({_NUMBER})",
    rf"\bthere\s+(?:is|are|were|was|will be)\s+(?:only\s+|exactly\s+|a total of\s+)?({_NUMBER_OR_WORD})",  # counts
))
_ANY_NUMBER = re.compile(_NUMBER)
_LIST = re.compile(r"\[[^\[\]]*\]")

# multiple choice: a letter stated as the answer ("the correct option letter is D", "Answer: (B)", "答案:C"),
# a reply that starts with one ("B) 10"), a bracketed one ("... so (C)"), in that order of strength
_LETTER_AFTER_LEAD = re.compile(
    r"(?i:final answer|correct answer|correct option|correct choice|the answer|answer|option|choice)"
    r"(?i:\s*letter)?\s*(?i:is|would be|should be|will be|:|=)?\s*(?i:option|choice)?\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])")
_CN_LETTER = re.compile(r"(?:答案|选)\s*[:：是为]?\s*\(?([A-Z])\)?")
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|:|,|$)")
_BRACKETED_LETTER = re.compile(r"\(([A-Z])\)")
# "none of the options matches": the LLM extractor answers "None"
_NO_OPTION = re.compile(r"none of the (?:given |provided )?(?:options|choices|answer)|not (?:an option|among the|"
                        r"in the (?:given )?(?:choices|options)|available in the (?:choices|options))|不在选",
                        re.IGNORECASE)
# a reply that declines to answer: the LLM extractor echoes it (or says "N/A"), it does not read a "no" in it
_REFUSAL = re.compile(r"enough (?:information|context|data|details)|not (?:provide|specif|clear|possible|given)|"
                      r"impossible|insufficient|unable|cannot (?:be )?(?:determine|answer|provide)|more (?:context|"
                      r"information|details)|without (?:additional|more|the|specific|knowing)|as an ai|i'm sorry",
                      re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|neither|nor)\b|n't\b", re.IGNORECASE)


def rule_extract(response: str | None, problem: Mapping) -> str:
  """official_rules(quick=True), else our approximation of the LLM extractor (always a string).

    multiple choice  a stated letter, else "None" / the refusal itself / yes-no reading / the option text
                     mentioned last (whole words), else the reply (normalisation then takes the nearest choice)
    list             the last [...] in the reply
    numbers          \boxed{x}, then **x**, "answer is x", "= x" / "is x", "there are two", the last number
  """
  found = official_rules(response, problem, quick=True)
  if found is not None:
    return found
  text = response.strip()
  if problem["question_type"] == "multi_choice":
    return _rule_choice(text, list(problem.get("choices") or ()))
  if problem["answer_type"] == "list":
    lists = _LIST.findall(text)
    return lists[-1] if lists else ""
  return _rule_number(text)


def _rule_choice(text: str, choices: list[str]) -> str:
  letters = [chr(ord("A") + i) for i in range(len(choices))]
  if text in letters:
    return text
  for pattern in (_LETTER_AFTER_LEAD, _CN_LETTER):
    hits = [m.group(1) for m in pattern.finditer(text) if m.group(1) in letters]
    if hits:
      return hits[-1]
  m = _LEADING_LETTER.match(text)
  if m and m.group(1) in letters:
    return m.group(1)
  hits = [m.group(1) for m in _BRACKETED_LETTER.finditer(text) if m.group(1) in letters]
  if hits:
    return hits[-1]
  if _NO_OPTION.search(text):
    return "None"
  if _REFUSAL.search(text):
    return text
  lowered = [c.strip().lower() for c in choices]
  if sorted(lowered) == ["no", "yes"]:  # the first word if it is yes / no, else "no" when the reply negates
    first = re.match(r"\W*(\w+)", text)
    word = first.group(1).lower() if first else ""
    if word not in ("yes", "no"):
      word = "no" if _NEGATION.search(text) else "yes"
    return letters[lowered.index(word)]
  best, best_at = text, -1  # the option text mentioned last, as whole words (longer options win ties)
  for letter, choice in sorted(zip(letters, choices), key=lambda lc: -len(lc[1])):
    if choice.strip():
      found = [m.start() for m in re.finditer(rf"(?<!\w){re.escape(choice.strip())}(?!\w)", text, re.IGNORECASE)]
      if found and found[-1] > best_at:
        best, best_at = letter, found[-1]
  return best


def _rule_number(text: str) -> str:
  for pattern in _NUMBER_STATEMENTS:
    found = pattern.findall(text)
    if found:
      return _NUMBER_WORDS.get(found[-1].lower(), found[-1].replace(",", ""))
  return (_ANY_NUMBER.findall(text) or [""])[-1].replace(",", "")


# ------------------------------------------------------------------------------------------- normalisation

def edit_distance(a: str, b: str) -> int:
  """Levenshtein distance (unit insert / delete / substitute), as python-Levenshtein's `distance`."""
  if len(a) < len(b):
    a, b = b, a
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def nearest_choice(text: str, choices: Sequence[str]) -> str:
  """The choice at the smallest edit distance from `text`; the first one on ties (the official list.index)."""
  distances = [edit_distance(text, c) for c in choices]
  return choices[distances.index(min(distances))]


def normalize_extraction(extraction, problem: Mapping, *, ignore_empty: bool = False,
                         legacy_integers: bool = False) -> str | None:
  """The official normalize_extracted_answer for one problem (its choices, question/answer type, precision).

  ignore_empty: the official --ignore_empty_extractions (an empty multiple-choice extraction -> None instead of
    the nearest choice); off by default, as in the official scripts.
  legacy_integers: integers as str(int(x)), so "2.0" -> None. calculate_score.py has used str(int(float(x)))
    since its first public commit, but most files in MathVista's results/ were scored by an earlier version
    with str(int(x)) (all but output_gpt4.json and output_llavar.json; see eval/prediction_files.py); True
    reproduces them.
  """
  question_type, answer_type = problem["question_type"], problem["answer_type"]
  if question_type == "multi_choice":
    choices = list(problem["choices"])
    extraction = extraction.strip() if isinstance(extraction, str) else str(extraction)  # compat: None -> "None"
    if ignore_empty and not extraction:
      return None
    letters = _LETTER_IN_BRACKETS.findall(extraction)
    if letters:
      extraction = letters[0].upper()  # compat: the FIRST "(x)" of the extraction, any letter
    sequential = [chr(ord("A") + i) for i in range(len(choices))]
    if extraction in sequential:  # compat: upper case only; a lone "b" goes to nearest_choice
      return choices[sequential.index(extraction)]
    return nearest_choice(extraction, choices)
  try:
    if answer_type == "integer":
      if legacy_integers:
        return str(int(extraction))  # compat: the pre-release scorer, "2.0" -> None
      return str(int(float(extraction)))  # compat: truncation toward zero, "2.9" -> "2"
    if answer_type == "float":
      return str(round(float(extraction), int(problem["precision"])))  # compat: "1.20" -> "1.2"
    if answer_type == "list":
      return str(extraction)
  except Exception:  # noqa: BLE001 (compat: the official code maps any failure to None)
    return None
  return None  # an answer type the official code does not know (it would fail)


def safe_equal(prediction, answer) -> bool:
  """The official equality: plain ==, False if comparing raises."""
  try:
    return bool(prediction == answer)
  except Exception:  # noqa: BLE001 (compat: the official code swallows any error here)
    return False


# --------------------------------------------------------------------------------------------- aggregation

def aggregate(problems: Mapping[str, Mapping], correct: Mapping[str, bool]) -> dict:
  """The official scores over the pids in `correct`: {"average": {"accuracy", "correct", "total"}} and, for each
  key of compat.MATHVISTA_SCORE_KEYS (question_type, answer_type, then the metadata fields), {value: {"accuracy",
  "correct", "total"}} sorted by accuracy, highest first (ties: first appearance order; the official order of
  tied skills follows a Python set and is arbitrary). Accuracies are fractions, as calculate_score.py writes
  them today (the files in results/ were written by an older version, as percentage strings).
  """
  pids = list(correct)
  hits = sum(bool(correct[p]) for p in pids)
  scores: dict = {"average": {"accuracy": hits / len(pids) if pids else 0.0, "correct": hits, "total": len(pids)}}
  for key in compat.MATHVISTA_SCORE_KEYS:
    counts: dict[str, list[int]] = {}
    for pid in pids:
      p = problems[pid]
      value = p[key] if key in p else p["metadata"][key]
      for v in (dict.fromkeys(value) if key == "skills" else [value]):  # a problem counts once per skill
        c = counts.setdefault(v, [0, 0])
        c[0] += bool(correct[pid])
        c[1] += 1
    rows = {v: {"accuracy": c / t, "correct": c, "total": t} for v, (c, t) in counts.items()}
    scores[key] = dict(sorted(rows.items(), key=lambda kv: kv[1]["accuracy"], reverse=True))
  return scores
