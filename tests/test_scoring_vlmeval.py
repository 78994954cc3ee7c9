"""The official scorers reproduce VLMEvalKit's rules (exact-matching path), quirks included.

Each case below was worked out from VLMEvalKit's code (e8e78f05): vlmeval/utils/matching_util.py (option
extraction), dataset/utils/multiple_choice.py (circular groups, report_acc), dataset/utils/yorn.py (MME),
dataset/utils/vqa_eval.py (ChartQA's relaxed_correctness).
"""

from __future__ import annotations

import pytest

from insightv_jax.scoring import chartqa, mmbench, mme
from insightv_jax.scoring import vlmeval_compat as vc

ABC = {"A": "red", "B": "green", "C": "blue"}


# ---------------------------------------------------------------------------------------------- option extraction

@pytest.mark.parametrize("reply, expected", [
    ("B", "B"),
    ("(C)", "C"),
    ("The answer is (B).", "B"),
    ("**A**", "A"),
    ("Answer: C", "C"),
    ("A or B", None),  # two letters: no option
    ("b", None),  # case-sensitive: a lower-case letter is not an option
    ("Z", "Z"),  # VLMEvalKit's "no answer" letter (always wrong)
    ("Sorry, Cannot determine the answer from this image.", "Z"),
])
def test_can_infer_option_accepts_and_rejects_what_vlmevalkit_does(reply, expected):
  assert mmbench.can_infer_option(reply, ABC) == expected


def test_current_rules_want_the_letter_near_the_end_legacy_anywhere():
  reply = "B is what I pick because the second swatch looks the most saturated of all"
  assert mmbench.can_infer_option(reply, ABC, rules="current") is None
  assert mmbench.can_infer_option(reply, ABC, rules="legacy") == "B"
  # the verbose fallback of the current rules rescues "answer is X" at the start
  reply = "The answer is C because C is the tallest bar in the chart that we are shown"
  assert mmbench.can_infer_option(reply, ABC, rules="current") == "C"


def test_verbose_answer_regex_quirk_reads_a_lower_case_article_as_option_a():
  choices = {"A": "dog", "B": "cat"}
  # (?i) in VLMEvalKit's regex: "answer is a cat" -> 'a' -> A (current); legacy falls to the text match -> B
  assert mmbench.can_infer("The answer is a cat", choices, rules="current") == "A"
  assert mmbench.can_infer("The answer is a cat", choices, rules="legacy") == "B"


def test_can_infer_text_needs_exactly_one_option_text_and_a_short_reply():
  assert mmbench.can_infer_text("It is Green.", ABC) == "B"
  assert mmbench.can_infer_text("red and blue", ABC) is None  # two options named
  long = "the colour of the ball in the middle of the picture is, without doubt, green"
  assert len(long) > 2 * sum(len(v) for v in ABC.values())
  assert mmbench.can_infer_text(long, ABC, rules="current") is None
  assert mmbench.can_infer_text(long, ABC, rules="legacy") == "B"
  # an API failure message is never an option letter, but its text is still matched
  assert mmbench.can_infer_option("Failed to obtain answer via API: B", ABC) is None


def test_judge_row_gives_an_unmatched_reply_z_and_counts_it_wrong():
  row = {"index": 7, "answer": "B", **ABC}
  assert mmbench.judge_row(row, "green")["correct"]
  d = mmbench.judge_row(row, "I do not know")
  assert d["extracted"] == "Z" and not d["correct"]


# ---------------------------------------------------------------------------------------------- circular MMBench

def _rotations(index, options, answer, category="color", l2="coarse_perception"):
  """The main row and its rotated copies (index + k * 1e6, options rolled), as MMBench's TSV ships them."""
  letters = "ABCD"[:len(options)]
  rows = []
  for k in range(len(options)):
    rolled = options[k:] + options[:k]
    rows.append({"index": index + k * vc.CIRCULAR_OFFSET, "question": "Which colour?", "hint": None,
                 **dict(zip(letters, rolled)), "answer": letters[rolled.index(answer)], "category": category,
                 "l2-category": l2, "split": "dev"})
  return rows


def test_circular_question_counts_only_if_every_rotation_is_right():
  rows = _rotations(1, ["red", "green", "blue"], "green") + _rotations(2, ["cat", "dog"], "dog", "animal",
                                                                         "logic_reasoning")
  right = {r["index"]: r["answer"] for r in rows}
  card = mmbench.score_mcq(rows, right, dataset="MMBench_DEV_EN")
  assert card.scorer == "mcq_circular" and card.n == 2 and card.headline == ("Overall", 1.0)

  one_wrong = dict(right)
  one_wrong[2_000_001] = "A" if right[2_000_001] != "A" else "B"
  card = mmbench.score_mcq(rows, one_wrong, dataset="MMBench_DEV_EN")
  assert [d["correct"] for d in card.decisions] == [False, True]
  # MMBench's l2-categories are reported under VLMEvalKit's abbreviations, after Overall; then the categories
  assert card.aggregate == {"Overall": 0.5, "CP": 0.0, "LR": 1.0, "animal": 1.0, "color": 0.0}

  unmatched = dict(right)
  unmatched[1_000_001] = "no idea"  # 'Z' under exact matching: the group fails
  assert not mmbench.score_mcq(rows, unmatched, dataset="MMBench_DEV_EN").decisions[0]["correct"]

  # the same predictions scored vanilla (MMStar's way): each row on its own
  vanilla = mmbench.score_mcq(rows, one_wrong, dataset="MMStar")
  assert vanilla.scorer == "mcq" and vanilla.n == len(rows)
  assert vanilla.aggregate["Overall"] == pytest.approx(4 / 5)


def test_circular_groups_only_the_predicted_copies_and_reports_main_rows():
  rows = _rotations(5, ["red", "green", "blue", "grey"], "blue")
  preds = {5: rows[0]["answer"], 2_000_005: rows[2]["answer"]}  # a partial run: two of four copies
  card = mmbench.score_mcq(rows, preds, dataset="mmbench_dev_en")
  assert card.n == 1 and card.decisions[0]["correct"]
  assert [r["index"] for r in card.decisions[0]["rotations"]] == [5, 2_000_005]
  assert mmbench.score_mcq(rows, {1_000_005: "A"}, dataset="MMBench").n == 0  # no main row: nothing reported


def test_mmstar_reports_l2_and_categories_per_split():
  rows = [{"index": i, "A": "x", "B": "y", "answer": "A", "category": c, "l2-category": l2}
          for i, (c, l2) in enumerate([("coarse perception", "image style"), ("coarse perception", "image scene"),
                                       ("math", "geometry")])]
  card = mmbench.score_mcq(rows, {0: "A", 1: "B", 2: "(A) x"}, dataset="MMStar")
  assert list(card.aggregate) == ["Overall", "geometry", "image scene", "image style", "coarse perception", "math"]
  assert card.aggregate["Overall"] == pytest.approx(2 / 3) and card.aggregate["coarse perception"] == 0.5


# ---------------------------------------------------------------------------------------------- MME

@pytest.mark.parametrize("reply, expected", [
    ("Yes", "Yes"), ("yes.", "Yes"), ("No, it is not.", "No"), ("YES!", "Yes"),
    ("Yes and no", "Unknown"), ("I cannot tell", "Unknown"),
    ("Yes:", "Unknown"),  # ':' is not in VLMEvalKit's punctuation list: "yes:" is not the word "yes"
    ("(yes)", "Yes"),
])
def test_mme_yes_no_extraction(reply, expected):
  assert mme.yorn_extraction(reply) == expected


def test_mme_acc_plus_needs_both_questions_of_an_image_right():
  rows = [
      {"index": 0, "answer": "Yes", "category": "color", "image_path": "color/1.png"},
      {"index": 1, "answer": "No", "category": "color", "image_path": "color/1.png"},
      {"index": 2, "answer": "Yes", "category": "color", "image_path": "color/2.png"},
      {"index": 3, "answer": "No", "category": "color", "image_path": "color/2.png"},
      {"index": 4, "answer": "Yes", "category": "code_reasoning", "image_path": "code/1.png"},
      {"index": 5, "answer": "No", "category": "code_reasoning", "image_path": "code/1.png"},
  ]
  preds = {0: "Yes", 1: "No", 2: "Yes", 3: "Yes", 4: "yes", 5: "maybe"}
  card = mme.score_mme(rows, preds)
  # color: acc 3/4 = 75, acc+ 1/2 = 50 -> 125; code_reasoning: acc 1/2 = 50, acc+ 0 -> 50
  assert card.aggregate == {"perception": 125.0, "reasoning": 50.0, "color": 125.0, "code_reasoning": 50.0}
  assert card.headline == ("perception+reasoning", 175.0)
  assert [d["extracted"] for d in card.decisions][-1] == "Unknown"
  # gold answers are compared exactly: a lower-case gold never matches VLMEvalKit's 'Yes'
  assert not mme.judge_row({"index": 9, "answer": "yes"}, "yes")["correct"]


def test_mme_groups_by_image_reference_without_image_path():
  rows = [{"index": 10, "answer": "Yes", "category": "OCR", "image": "10"},
          {"index": 11, "answer": "No", "category": "OCR", "image": "10"}]
  assert mme.score_mme(rows, {10: "Yes", 11: "No"}).aggregate["OCR"] == 200.0
  assert mme.score_mme(rows, {10: "Yes", 11: "Yes"}).aggregate["OCR"] == 50.0


def test_process_punctuation_keeps_vlmevalkit_quirks():
  # per mark: deleted where it touches a space somewhere in the text, else replaced by a space ...
  assert vc.process_punctuation("a-b, c") == "a b c"
  assert vc.process_punctuation("a-b - c") == "ab  c"
  # ... and every mark is deleted once the text has a digit,digit comma
  assert vc.process_punctuation("1,000 a-b") == "1000 ab"
  assert vc.process_punctuation("3.5 . end.") == "3.5  end"
  assert vc.process_punctuation("." * 40) == "." * 8  # only 32 lone periods go (re.UNICODE passed as count)


# ---------------------------------------------------------------------------------------------- ChartQA

@pytest.mark.parametrize("target, prediction, ok", [
    ("100", "105", True), ("100", "105.1", False), ("100", "95", True), ("100", "94.9", False),
    ("-20", "-21", True), ("12%", "0.12", True), ("12%", "12", False), ("0.12", "12%", True),
    ("0", "0", True), ("0", "0.0", False),  # a zero target is compared as text
    ("Yes", "yes", True), ("Yes", "yes.", False), ("1234", "1,234", False), ("1,234", "1,234", True),
])
def test_relaxed_correctness(target, prediction, ok):
  assert chartqa.relaxed_correctness(target, prediction) is ok


def test_chartqa_rows_list_answers_legacy_order_and_split_aggregate():
  rows = [{"index": 0, "answer": "100", "split": "human"}, {"index": 1, "answer": "['Asia', 'Europe']",
                                                            "split": "human"},
          {"index": 2, "answer": "100", "split": "augmented"}]
  preds = {0: " 95.2 ", 1: "europe", 2: "7"}
  card = chartqa.score_chartqa(rows, preds)
  assert [d["correct"] for d in card.decisions] == [True, True, False]
  assert card.aggregate == {"augmented": 0.0, "human": 100.0, "Overall": pytest.approx(200 / 3)}
  # before VLMEvalKit #1204 the arguments were swapped: 4.8 / 95.2 > 5%
  assert not chartqa.judge_row(rows[0], preds[0], rules="legacy")["correct"]
  # no split column: Overall, then categories
  cats = chartqa.score_chartqa([{"index": 0, "answer": "1", "category": "bar"}], {0: "1"}).aggregate
  assert cats == {"Overall": 100.0, "bar": 100.0}


def test_scorer_for_follows_vlmevalkit_dataset_names():
  assert vc.scorer_for("MMBench_DEV_EN_V11", has_choices=True) == "mcq_circular"
  assert vc.scorer_for("MMStar", has_choices=True) == "mcq"
  assert vc.scorer_for("MME", has_choices=False, answer="Yes") == "mme"
  assert vc.scorer_for("ChartQA_TEST", has_choices=False, answer="12") == "chartqa"
  assert vc.scorer_for("MathVista_MINI", has_choices=False) == "mathvista"
  assert vc.scorer_for("train", has_choices=True) == "mcq" and vc.scorer_for("train", has_choices=False) is None
  with pytest.raises(ValueError, match="rules"):
    mmbench.can_infer("A", ABC, rules="2024")
