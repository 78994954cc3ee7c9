"""VLMEvalKit's compatibility rules: the constants and text helpers its scorers and its TSV loader use.

Read from open-compass/VLMEvalKit at commit e8e78f05 (2026-08-18); each block names the file it comes from. Our
scorers (`mmbench.py`, `mme.py`, `chartqa.py`) and `eval/readers.py` use these, so that a number in our report
is the number VLMEvalKit would print for the same predictions. Where VLMEvalKit has a quirk (a bug, an odd
edge), we reproduce it on purpose and say so next to it: a "fix" here would make our rows disagree with the
leaderboard's.

Two rule sets (`RULES`):
  "current"  VLMEvalKit as of e8e78f05 (the default)
  "legacy"   VLMEvalKit before #1175 (2025-08) and #1204 (2025-09): the rules in force when Insight-V and the
             2024 leaderboard rows were scored (option letter anywhere in the reply, no length limit on text
             matching, no "answer is X" fallback; ChartQA's relative error measured against the prediction)

Every scorer returns a `Scorecard`: per-question decisions plus the official aggregate, with VLMEvalKit's column
names, order and scale.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

VLMEVALKIT_COMMIT = "e8e78f05f3080fe28154f2130321f17951c3be94"
RULES = ("current", "legacy")


def check_rules(rules: str) -> str:
  if rules not in RULES:
    raise ValueError(f"rules={rules!r}: choose from {RULES}")
  return rules


@dataclasses.dataclass(frozen=True)
class Scorecard:
  """What one official scorer returns for one benchmark.

  decisions  one dict per scored question (for circular MCQ: per group of rotations), each with "index" and
             "correct" plus what the rule extracted, so a decision can be audited
  aggregate  VLMEvalKit's score row: its column names, its order and its scale (MCQ: fractions in [0, 1];
             ChartQA: percent; MME: the MME score, acc + acc+ in percent per category)
  headline   (name, value): the number a leaderboard shows for this benchmark
  """

  benchmark: str
  scorer: str
  metric: str
  decisions: tuple[dict[str, Any], ...]
  aggregate: dict[str, float]
  headline: tuple[str, float]

  @property
  def n(self) -> int:
    return len(self.decisions)

  def to_json(self, *, decisions: bool = False) -> dict[str, Any]:
    out = {"benchmark": self.benchmark, "scorer": self.scorer, "metric": self.metric, "n": self.n,
           "headline": {"name": self.headline[0], "value": self.headline[1]}, "aggregate": dict(self.aggregate)}
    if decisions:
      out["decisions"] = list(self.decisions)
    return out


# ---------------------------------------------------------------------------------------------- benchmark families
# Which scorer a dataset gets. VLMEvalKit picks it from the dataset name (vlmeval/dataset/image_mcq.py: circular
# when the lower-cased name contains one of CIRCULAR_NAME_KEYS; image_yorn.py: MME_rating when 'MME' is in the
# name; image_vqa.py: relaxed accuracy when 'ChartQA' is). We match names case-insensitively, so that a local
# file called mme.tsv or chartqa_test.tsv is recognised too, and check the row's shape (options or not).

CIRCULAR_NAME_KEYS = ("mmbench", "ccbench", "circular", "mmcr")
SCORED_ELSEWHERE = ("mathvista", "mmmu")  # scoring/mathvista.py, scoring/mmmu.py


def scorer_for(dataset: str, *, has_choices: bool, answer: str | None = None) -> str | None:
  """The scorer family of one question: 'mcq_circular' | 'mcq' | 'mme' | 'chartqa' | 'mathvista' | 'mmmu' | None.

  None means no official scorer applies (our own synthetic questions): the caller falls back to
  `scoring.extract.is_correct`.
  """
  name = (dataset or "").lower()
  for family in SCORED_ELSEWHERE:
    if family in name:
      return family
  if has_choices:
    return "mcq_circular" if any(k in name for k in CIRCULAR_NAME_KEYS) else "mcq"
  if "mme" in name and answer in ("Yes", "No"):
    return "mme"
  if "chartqa" in name:
    return "chartqa"
  return None


# ---------------------------------------------------------------------------------------------- TSV files
# vlmeval/smp/file.py: load() reads a TSV with pandas.read_csv(sep='\t'); these cells become NaN (pandas >= 2.0
# default na_values). Quirk reproduced: an option whose text is "None" or "NA" is NaN to VLMEvalKit, so it is
# not an option (build_choices skips it) and a hint "None" is no hint.
PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
})

# vlmeval/dataset/image_base.py (ImageBaseDataset.__init__): an `image` cell of 1..64 characters is not an image
# but the `index` of the row that holds it (MMBench's rotated copies and MME's second question point back so).
IMAGE_REF_MAX_LEN = 64

# vlmeval/dataset/image_vqa.py (ImageVQADataset.build_prompt): what VLMEvalKit appends to a VQA question.
VQA_PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."

# ---------------------------------------------------------------------------------------------- multiple choice
# vlmeval/utils/matching_util.py (can_infer_option)
API_FAILURE = "Failed to obtain answer via API"
REJECT_TO_ANSWER = (
    "Sorry, I can't help with images of people yet.", "I can't process this file.",
    "I'm sorry, but without the image provided", "Cannot determine the answer",
)
OPTION_STRIP_CHARS = ".()[],:;!*#{}"  # replaced by spaces before the reply is split into words
OPTION_LAST_WORDS = 4  # current rules: the single letter must be among the reply's last 4 words (#1175)
# current rules (#1552): "The correct answer is **B**". Quirk reproduced: (?i) also makes [ABCD] match a-d, so
# "the answer is a cat" picks A.
VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
NO_ANSWER = "Z"  # the letter VLMEvalKit gives a refusal or an unmatched reply (always wrong)

# vlmeval/dataset/utils/multiple_choice.py (mcq_circular_eval): a rotated copy of question i has index
# i + k * 1e6; its group is int(index % 1e6) unless the file carries `g_index`.
CIRCULAR_OFFSET = 1_000_000

# vlmeval/dataset/utils/multiple_choice.py (report_acc): the names MMBench's l2-categories are reported under.
MMB_ABBRS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}

# ---------------------------------------------------------------------------------------------- yes / no (MME)
# vlmeval/dataset/utils/yorn.py (MME_rating): VLMEvalKit calls the second group "reasoning" (MME's paper calls it
# cognition); the leaderboard's MME number is perception + reasoning.
MME_SUPER_CATEGORIES = {
    "perception": ("OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters",
                   "scene"),
    "reasoning": ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation"),
}

# vlmeval/smp/misc.py (process_punctuation), used by YOrN_Extraction and the VQA scorers.
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
# Quirk reproduced: VLMEvalKit calls periodStrip.sub('', text, re.UNICODE), which passes re.UNICODE (= 32) as
# `count`: only the first 32 lone periods are removed.
_PERIOD_COUNT = 32


def process_punctuation(text: str) -> str:
  """VLMEvalKit's punctuation rule: each mark is deleted if it touches a space anywhere in the ORIGINAL text (or
  the text has a digit,digit comma), else replaced by a space; then periods not next to a digit go."""
  out = text
  glue = _COMMA_BETWEEN_DIGITS.search(text) is not None
  for p in _PUNCT:
    out = out.replace(p, "" if (p + " " in text or " " + p in text or glue) else " ")
  return _LONE_PERIOD.sub("", out, count=_PERIOD_COUNT)


# ---------------------------------------------------------------------------------------------- ChartQA
# vlmeval/dataset/utils/vqa_eval.py (relaxed_correctness, from pix2struct): 5% relative error for numbers.
CHARTQA_MAX_RELATIVE_CHANGE = 0.05
