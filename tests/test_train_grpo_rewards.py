"""GRPO rewards: the answer judged as insightv-eval judges it, format from the prompt preset, DAPO's length
penalty, the registry's errors, and the weighted total with TRL's None handling."""

from __future__ import annotations

import numpy as np
import pytest

from insightv_jax.data import prompts, records
from insightv_jax.train import losses, rewards

CHOICE = records.Question("q1", (), "Which animal?", "B", choices=("cat", "dog"))
NUMBER = records.Question("q2", (), "How many red cells?", "12")
TEXT = records.Question("q3", (), "What colour is the top-left cell?", "red")
CHAIN = prompts.format_chain([("Find the red cells", "Row 1 has 5, row 2 has 7."), ("Add them", "5 + 7 = 12")])


@pytest.mark.parametrize("question, reply", [
    (CHOICE, "<output>B</output>"), (CHOICE, "<output>A</output>"), (CHOICE, "The answer is (B)."),
    (CHOICE, "<output>dog</output>"), (NUMBER, "<output>12.4</output>"), (NUMBER, "<output>13</output>"),
    (NUMBER, "about 1,2 apples"), (NUMBER, prompts.wrap_chain(CHAIN)), (TEXT, "<output>Red.</output>"),
    (TEXT, "blue"), (NUMBER, ""),
])
def test_answer_reward_is_insightv_eval_decision(question, reply):
  """The reward is eval's `score_one` decision on the same reply (our own questions: no official scorer)."""
  from insightv_jax.eval.runner import score_one
  assert rewards.answer(question, reply) == float(score_one(question, reply)["correct"])


def test_answer_reward_values_and_none():
  assert rewards.answer(CHOICE, "<output>B</output>") == 1.0 and rewards.answer(CHOICE, "A") == 0.0
  assert rewards.answer(NUMBER, prompts.wrap_chain(CHAIN)) == 1.0  # the answer the chain reaches: its last number
  assert rewards.answer(records.Question("q", (), "?", ""), "<output>1</output>") is None
  judge = lambda q, reply: reply.endswith("!")
  assert rewards.get_reward("answer", judge=judge)(NUMBER, "yes!") == 1.0


@pytest.mark.parametrize("preset", sorted(prompts.PROMPT_PRESETS))
def test_format_reward_follows_the_preset(preset):
  p = prompts.get_preset(preset)
  q = prompts.format_question(NUMBER.question)
  chain = p.format_chain([("Find the red cells", "Row 1 has 5, row 2 has 7."), ("Add them", "5 + 7 = 12")])
  good = p.reasoning_messages(q, chain)[-1]["content"]
  fmt = rewards.get_reward("format", agent="reasoning", preset=preset)
  assert fmt(NUMBER, good) == 1.0
  assert fmt(NUMBER, good + "\n") == 1.0  # surrounding whitespace does not count
  one_step = p.reasoning_messages(q, p.format_chain([("Add them", "5 + 7 = 12")]))[-1]["content"]
  assert fmt(NUMBER, one_step) == 0.5  # tags right, fewer than min_steps = 2 steps
  assert fmt(NUMBER, "12") == 0.0  # neither tags nor steps
  if preset == "ours":
    assert fmt(NUMBER, chain) == 0.5  # steps without the <thoughts> tags
    assert fmt(NUMBER, prompts.wrap_chain("I think it is 12.")) == 0.5  # tags, no steps
  # the summary agent: the preset's own reply layout (ours: optional verdict line, then <output>...</output>)
  summ = rewards.get_reward("format", agent="summary", preset=preset)
  right = p.summary_messages(q, chain, "12", "sound")[-1]["content"]
  # insightv: the reply is the bare answer, so any text has the layout: not scorable (None), not a constant 1
  assert summ(NUMBER, right) == (1.0 if preset == "ours" else None)
  if preset == "ours":
    assert summ(NUMBER, p.summary_messages(q, chain, "12")[-1]["content"]) == 1.0
    assert summ(NUMBER, "12") == 0.0 and summ(NUMBER, "The answer: <output>12</output>") == 0.0


def test_chain_steps_counts_the_presets_layout():
  assert rewards.chain_steps(CHAIN, "ours") == 2
  assert rewards.chain_steps(CHAIN + "\n\nso 12", "ours") == 0
  insightv = prompts.get_preset("insightv").format_chain([("a", "b"), ("c", "d"), ("e", "f")])
  assert rewards.chain_steps(insightv, "insightv") == 3 and rewards.chain_steps(CHAIN, "insightv") == 0


def test_length_penalty_is_dapo_soft_overlong():
  f = rewards.get_reward("length", length_budget=4, length_interval=4)
  words = lambda n: " ".join(["w"] * n)
  assert [f(NUMBER, words(n)) for n in (3, 4, 5, 6, 8, 20)] == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
  chars = rewards.get_reward("length", length_budget=4, length_interval=2, count=len)
  assert chars(NUMBER, "abcde") == -0.5


def test_registry_errors_name_the_bad_input():
  with pytest.raises(ValueError, match=r"unknown reward 'acuracy'; valid rewards: answer, format, length"):
    rewards.build_rewards(["answer", "acuracy"])
  with pytest.raises(ValueError, match="1 reward weights for 2 rewards"):
    rewards.build_rewards(["answer", "format"], [1.0])
  with pytest.raises(ValueError, match="agent='judge'"):
    rewards.build_rewards(["answer"], agent="judge")
  with pytest.raises(ValueError, match="unknown prompt preset"):
    rewards.build_rewards(["format"], preset="llava")


def test_weighted_total_and_unscorable_replies_get_advantage_zero():
  """Weighted sum over the functions that scored a reply; a reply no function scored is NaN, then advantage 0
  and left out of its group's mean and std (TRL)."""
  rw = rewards.build_rewards(["answer", "format"], [1.0, 0.5], agent="summary")
  blank = records.Question("q4", (), "?", "")
  qs = [NUMBER, NUMBER, NUMBER, blank]
  replies = ["<output>12</output>", "<output>11</output>", "it is 12", "<output>1</output>"]
  table, total = rw(qs, replies)
  np.testing.assert_array_equal(table[:3], [[1, 1], [0, 1], [1, 0]])
  assert np.isnan(table[3, 0]) and table[3, 1] == 1.0 and total[3] == 0.5  # format still scored it
  np.testing.assert_array_equal(total[:3], [1.5, 0.5, 1.0])
  only_answer = rewards.build_rewards(["answer"])
  _, t2 = only_answer(qs, replies)
  assert np.isnan(t2[3])
  adv = np.asarray(losses.group_advantages(t2, 4))
  assert adv[3] == 0.0
  np.testing.assert_allclose(adv[:3], (t2[:3] - t2[:3].mean()) / (np.std(t2[:3], ddof=1) + 1e-4), rtol=1e-5)
  m = rw.metrics(table)
  assert m["rewards/answer/mean"] == pytest.approx(2 / 3) and m["rewards/format/mean"] == pytest.approx(0.75)
