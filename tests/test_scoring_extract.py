"""Answer extraction and scoring over well-formed and malformed model output."""

import pytest

from insightv_jax.scoring import extract

CHOICES = ("more red", "more blue", "the same number")


@pytest.mark.parametrize("reply, want", [
    ("<output>B</output>", "B"), ("(B)", "B"), ("B. more blue", "B"), ("The answer is C.", "C"),
    ("Answer: (a)", "A"), ("<output>more blue</output>", "B"), ("I think option C", "C"),
    ("<thoughts>A is wrong</thoughts><output>B", "B"),  # unterminated output tag
    ("", None), ("<output></output>", None), ("no idea", None), ("D", None),
])
def test_choice_extraction(reply, want):
  assert extract.extract_choice(reply, CHOICES) == want


@pytest.mark.parametrize("reply, gold, ok", [
    ("<output>12</output>", "12", True), ("about 1,234.5 units", "1234.5", True), ("13%", "12", False),
    ("12.5%", "12", True),
    ("<output>104</output>", "100", True), ("<output>106</output>", "100", False), ("0", "0", True),
    ("0.01", "0", False), ("The sum is 17", "17", True), ("seventeen", "17", False), ("$3.50", "3.5", True),
    ("", "3", False),
])
def test_relaxed_numeric(reply, gold, ok):
  assert extract.is_correct(reply, gold, kind="numeric") is ok


@pytest.mark.parametrize("reply, want", [
    ("Yes, there is.", "yes"), ("<output>no</output>", "no"), ("I believe yes", "yes"), ("yes and no", "yes"),
    ("maybe", None), ("", None),
])
def test_yes_no(reply, want):
  assert extract.extract_yes_no(reply) == want


def test_kinds_are_inferred():
  assert extract.is_correct("<output>B</output>", "B", choices=CHOICES)
  assert extract.is_correct("<output>Yes</output>", "yes")
  assert extract.is_correct("<output>The Eiffel Tower!</output>", "eiffel tower")
  assert not extract.is_correct("<output>Eiffel</output>", "eiffel tower")
