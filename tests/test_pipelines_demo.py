"""The demo pipeline (pipelines/demo.py) end to end on a tiny config: shared data, two seeds of every job (SFT,
one DPO round, one GRPO point, J-GRPO of the summary agent), the evaluation and the multi-seed report. The demo's
own config is only shrunk, never rewritten, so this guards the code path `make demo` takes."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from conftest import ROOT


def tiny_demo_config():
  spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.seeds, c.workers = 2, 1
  c.summary_slips = 1.0  # the slipped-chain records too
  c.n_train, c.n_test, c.chain_samples = 16, 12, 1
  c.datagen.chunk_questions = 16
  c.datagen.progressive.paths_per_question = 2
  for job in ("reasoning", "summary", "direct", "cot"):  # one shape and schedule: one compiled step
    c[job].optim.total_steps, c[job].optim.lr = 2, 1e-3
    c[job].data.batch_size, c[job].data.max_len, c[job].loss_chunk = 4, 192, 192
  c.eval_batch_size = 8
  c.reasoning_max_new_tokens = 16
  i = c.dpo_iterative
  i.rounds = 1
  i.sampler = "scripted"  # the teacher's chains (with mistakes): pairs exist whatever the tiny policy writes
  i.datagen.questions = "synthetic:6"
  i.datagen.progressive.paths_per_question = 2
  i.epochs, i.train.optim.total_steps = 0.0, 2
  i.train.data.batch_size = 2
  i.datagen.questions = "synthetic:4"  # 4 x 2 = 8 chains per round = 2 GRPO rollouts of 2 questions x 2 replies
  c.grpo_points = 1
  for rl, max_len in ((c.grpo, 128), (c.summary_rl, 192)):
    rl.grpo.questions_per_step, rl.grpo.num_generations = 2, 2
    rl.data.max_len = rl.loss_chunk = max_len
  c.grpo.grpo.max_new_tokens = 16
  c.summary_rl.optim.total_steps = 2
  return c


def test_demo_writes_the_multi_seed_report(tmp_path):
  from pipelines.demo import run_demo

  wd = str(tmp_path / "demo")
  out = run_demo(tiny_demo_config(), wd)
  report = open(os.path.join(wd, "report.md")).read()
  for split in ("reasoning", "perception", "all"):
    assert f"## Accuracy on held-out {split} questions" in report
  assert "| two agents, reasoner after DPO round 1 |" in report and "| system | mean ± std (%) |" in report
  assert "| two agents, summary agent after J-GRPO |" in report
  assert "| two agents, reasoner after GRPO (8 chains) |" in report
  assert "| SFT (0) |" in report and "| iterative DPO (8) |" in report and "| GRPO (8) |" in report
  assert "**GRPO vs iterative DPO at the same budget (8 chains sampled)**" in report
  for png in ("accuracy.png", "budget.png", "rl_training.png", "training_curves.png"):
    assert os.path.getsize(os.path.join(wd, png)) > 1000
  with open(os.path.join(wd, "report.json")) as f:
    saved = json.load(f)
  assert saved["seeds"] == [0, 1]
  two = saved["systems"]["two agents (SFT)"]
  assert len(two["reasoning"]["per_seed"]) == 2 and two["all"]["n"] == 2 * 12
  assert two["reasoning"]["n"] + two["perception"]["n"] == two["all"]["n"]
  chains = saved["chain_accuracy"]
  assert [p["chains_sampled"] for p in chains["GRPO"]] == [0, 8]
  assert [p["chains_sampled"] for p in chains["iterative DPO"]] == [0, 8]
  assert [len(p["per_seed"]) for p in chains["GRPO"]] == [2, 2]
  assert out["chain_accuracy"] == saved["chain_accuracy"]
  for s in (0, 1):  # GRPO's point model, the J-GRPO run's metrics (2 rollouts)
    assert os.path.isdir(os.path.join(wd, f"seed_{s}", "grpo", "point_1"))
    with open(os.path.join(wd, f"seed_{s}", "summary_rl", "metrics.jsonl")) as f:
      assert [json.loads(line)["step"] for line in f] == [1, 2]


@pytest.mark.parametrize("value", ["cot:reasonin", "cot", "cot:cot", "cot:reasoning,reasoning:summary"])
def test_a_bad_start_from_stops_before_any_work(tmp_path, value):
  from insightv_jax.utils.inputs import InputError
  from pipelines.demo import run_demo

  cfg = tiny_demo_config()
  cfg.start_from = value
  with pytest.raises(InputError, match="--config.start_from"):
    run_demo(cfg, str(tmp_path / "demo"))
  assert not (tmp_path / "demo").exists()
