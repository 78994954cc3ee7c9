"""GRPO's two roles beyond the chain's own answer: the summary agent's verdict term (J-GRPO), the frozen summary
agent as the reasoning agent's judge (reward_judge="summary"), and what the rewards score in each case."""

from __future__ import annotations

import numpy as np
import pytest

from insightv_jax.data import prompts, records
from insightv_jax.train import rewards

NUMBER = records.Question("q2", (), "How many red cells?", "12")
SOUND = prompts.format_chain([("Find the red cells", "Row 1 has 5, row 2 has 7."), ("Add them", "5 + 7 = 12")])
FLAWED = prompts.format_chain([("Find the red cells", "Row 1 has 5, row 2 has 6."), ("Add them", "5 + 6 = 11")])


def test_verdict_reward_checks_the_stated_verdict_against_the_chain():
  """ours: 1 when the verdict is the truth about the chain read (its own answer right = sound), 0 when wrong or
  missing; insightv writes no verdict: None."""
  q = prompts.format_question(NUMBER.question)
  ours = prompts.get_preset("ours")
  say = lambda chain, judgement: ours.summary_messages(q, chain, "12", judgement)[-1]["content"]
  v = rewards.get_reward("verdict", preset="ours")
  assert v(NUMBER, say(SOUND, "sound"), chain=SOUND) == 1.0
  assert v(NUMBER, say(SOUND, "flawed"), chain=SOUND) == 0.0
  assert v(NUMBER, say(FLAWED, "flawed"), chain=FLAWED) == 1.0
  assert v(NUMBER, say(FLAWED, "sound"), chain=FLAWED) == 0.0
  assert v(NUMBER, say(FLAWED, None), chain=FLAWED) == 0.0  # no verdict stated where the preset asks for one
  assert v(records.Question("q", (), "?", ""), say(SOUND, "sound"), chain=SOUND) is None  # no gold answer
  assert rewards.writes_verdict(ours) and not rewards.writes_verdict(prompts.get_preset("insightv"))
  assert rewards.get_reward("verdict", preset="insightv")(NUMBER, "12", chain=SOUND) is None


def test_rewards_pass_each_reply_its_chain_and_score_judged_answers():
  """Rewards(..., chains=) gives the verdict term each reply's chain; Rewards(..., judged=) makes `answer` score the
  frozen summary agent's replies while `format` still reads the reasoning agent's own."""
  q = prompts.format_question(NUMBER.question)
  ours = prompts.get_preset("ours")
  summ = rewards.build_rewards(["answer", "verdict"], [1.0, 0.5], agent="summary", preset="ours")
  replies = [ours.summary_messages(q, c, a, j)[-1]["content"]
             for c, a, j in ((SOUND, "12", "sound"), (FLAWED, "12", "sound"), (FLAWED, "11", "flawed"))]
  table, total = summ([NUMBER] * 3, replies, chains=[SOUND, FLAWED, FLAWED])
  np.testing.assert_array_equal(table, [[1, 1], [1, 0], [0, 1]])
  np.testing.assert_array_equal(total, [1.5, 1.0, 0.5])
  reason = rewards.build_rewards(["answer", "format"], [1.0, 1.0], agent="reasoning", preset="ours")
  chains = [ours.reasoning_messages(q, c)[-1]["content"] for c in (SOUND, FLAWED)]
  own, _ = reason([NUMBER] * 2, chains)
  judged, _ = reason([NUMBER] * 2, chains, judged=["<output>11</output>", "<output>12</output>"])
  np.testing.assert_array_equal(own[:, 0], [1, 0])  # the answer each chain reaches
  np.testing.assert_array_equal(judged[:, 0], [0, 1])  # the summary agent's answers after reading them
  np.testing.assert_array_equal(judged[:, 1], own[:, 1])  # format still reads the chains
  with pytest.raises(ValueError, match="3 judged for 2 replies"):
    reason([NUMBER] * 2, chains, judged=["a"] * 3)


def test_verdict_is_the_summary_agents_reward_only():
  with pytest.raises(ValueError, match="reward 'verdict' is the summary agent's"):
    rewards.build_rewards(["answer", "verdict"], agent="reasoning")


# ------------------------------------------------------------------------------ questions: LLaVA JSON, processes

def _llava_config(paths: str, **fields):
  from configs.grpo import get_config
  cfg = get_config("tiny")
  cfg.data.paths, cfg.data.format = paths, "llava"
  for k, v in fields.items():
    cfg.grpo[k] = v
  return cfg


def test_llava_json_questions(tmp_path):
  """question = the first human turn without <image>; answer = the 'answer' field, else the last gpt turn's final
  answer (inside <output> when tagged); a record without one is an InputError naming file, record and id."""
  import json

  from insightv_jax.utils.inputs import InputError
  from pipelines.grpo_questions import load_items
  recs = [
      {"id": "a", "image": "img/a.png", "conversations": [
          {"from": "human", "value": "<image>\nHow many red cells?"}, {"from": "gpt", "value": "Let me count."},
          {"from": "human", "value": "And the answer?"},
          {"from": "gpt", "value": "Judgement: ok.\n<output>12</output>"}]},
      {"id": "b", "image": "img/b.png", "answer": "B", "conversations": [
          {"from": "human", "value": "Is it left?\nA. yes\nB. no\n<image>"}, {"from": "gpt", "value": "I think not."}]},
      {"id": "c", "conversations": [{"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": " 4 "}]},
  ]
  path = tmp_path / "llava.json"
  path.write_text(json.dumps(recs))
  items = load_items(_llava_config(str(path)))
  got = [(it.question.id, it.question.question, it.question.answer, [i.path for i in it.question.images])
         for it in items]
  assert got == [("a", "How many red cells?", "12", ["img/a.png"]),
                 ("b", "Is it left?\nA. yes\nB. no", "B", ["img/b.png"]), ("c", "What is 2 + 2?", "4", [])]
  bad = tmp_path / "bad.jsonl"
  bad.write_text("\n".join(json.dumps(r) for r in [recs[2], {"id": "d", "conversations": [
      {"from": "human", "value": "<image>\nWhy?"}, {"from": "gpt", "value": "<output> </output>"}], "image": "x.png"}]))
  with pytest.raises(InputError, match=r"bad.jsonl:2 \(id='d'\): no usable answer"):
    load_items(_llava_config(f"{path},{bad}"))


def test_question_stream_seeds_per_item_and_resumes_exactly():
  """seeds(n, G): G seeds per item, item-major, counted on; a stream restored from get_state() continues with the
  same items and seeds (the Orbax "iter" item, the same on every process)."""
  from pipelines.grpo_questions import Item, QuestionStream
  items = [Item(records.Question(f"q{i}", (), f"question {i}", str(i))) for i in range(5)]
  a = QuestionStream(items, seed=3, sample_seed=100)
  a.take(4)
  assert a.seeds(4, 3) == list(range(100, 112)) and a.seeds(1, 2) == [112, 113]
  b = QuestionStream(items, seed=3, sample_seed=0)
  b.set_state(a.get_state())
  assert [it.question.id for it in b.take(7)] == [it.question.id for it in a.take(7)]  # across an epoch
  assert b.seeds(2, 2) == a.seeds(2, 2) == [114, 115, 116, 117]


# ------------------------------------------------------------------------------ the frozen summary agent as judge

def test_reward_judge_summary_scores_the_frozen_summary_agents_answers(tmp_path, tiny_cfg):
  """reward_judge="summary": the `answer` reward scores what a frozen summary agent answers after reading each
  sampled chain. The summary agent here is scripted to answer <output>B</output> to anything, so each step's
  accuracy is exactly the share of its questions whose gold answer is B, whatever the (random) chains say."""
  import json
  import os

  from test_eval_runner import scripted_model
  from train_data import override, write_training_data

  from configs.grpo import get_config
  from insightv_jax.checkpoints import save_model
  from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
  from pipelines.grpo import train_grpo
  from pipelines.grpo_questions import QuestionStream, load_items

  data = write_training_data(str(tmp_path / "data"), n=8)
  tok = load_tokenizer(data["tok"])
  save_model(scripted_model(fit_model_config(tiny_cfg, tok), tok, "llama3",
                            (prompts.OUTPUT_OPEN, "B", prompts.OUTPUT_CLOSE)), str(tmp_path / "summary"),
             layout="params")
  cfg = override(get_config("tiny"), **{
      "tokenizer": data["tok"], "data.paths": os.path.join(data["root"], "train.jsonl"),
      "data.image_root": data["root"], "data.template": "llama3", "export_params": False, "mesh.fsdp": 1,
      "optim.total_steps": 2, "checkpoint.every": 0, "grpo.max_new_tokens": 4, "grpo.rewards": ("answer",),
      "grpo.reward_weights": (1.0,), "grpo.reward_judge": "summary",
      "grpo.summary_model": f"params:{tmp_path / 'summary'}", "grpo.summary_max_new_tokens": 4})
  train_grpo(cfg, str(tmp_path / "run"))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  stream = QuestionStream(load_items(cfg), seed=cfg.data.seed)
  want = [np.mean([it.question.answer == "B" for it in stream.take(cfg.grpo.questions_per_step)]) for _ in rows]
  assert 0 < max(want) and min(want) < 1  # the steps' questions mix B and other answers
  np.testing.assert_allclose([r["accuracy"] for r in rows], want)
  assert all(r["judge_sec"] > 0 for r in rows)


def test_summary_agent_loop_scores_the_verdict_on_the_chain_it_read(tmp_path):
  """agent=summary with the verdict term: the loop hands each reply its chain (without it every verdict would be
  None, a NaN mean). An untrained policy states no verdict: 0 for every reply."""
  import json
  import os

  from train_data import override, write_training_data

  from configs.grpo import get_config
  from pipelines.grpo import train_grpo

  data = write_training_data(str(tmp_path / "data"), n=4)
  qs = list(records.read_jsonl(os.path.join(data["root"], "train.jsonl")))
  records.write_jsonl(str(tmp_path / "chains.jsonl"), [
      records.SummarySFT(id=q.id, images=q.images, question=q.question, reasoning="Step 1: Count\nI see 4.",
                         answer=q.answer) for q in qs])
  cfg = override(get_config("tiny"), **{
      "tokenizer": data["tok"], "data.paths": os.path.join(data["root"], "train.jsonl"),
      "data.image_root": data["root"], "data.template": "llama3", "data.max_len": 384, "export_params": False,
      "mesh.fsdp": 1, "optim.total_steps": 1, "checkpoint.every": 0, "grpo.max_new_tokens": 2, "grpo.agent": "summary",
      "grpo.chain_source": str(tmp_path / "chains.jsonl"), "grpo.rewards": ("answer", "verdict"),
      "grpo.reward_weights": (1.0, 0.5)})
  train_grpo(cfg, str(tmp_path / "run"))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    row = json.loads(f.readline())
  assert row["rewards/verdict/mean"] == 0.0 and np.isfinite(row["reward"])
