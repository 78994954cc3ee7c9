"""The two-agent pipeline and the baselines end to end on the synthetic world, with a resumable report."""

from __future__ import annotations

import json
import os

import pytest
from flax import nnx
from train_data import write_training_data

from insightv_jax.checkpoints import save_model
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.eval import readers
from insightv_jax.model.llava import LlavaNext


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_cfg):
  root = str(tmp_path_factory.mktemp("agents"))
  data = write_training_data(root, n=6)
  cfg = fit_model_config(tiny_cfg, load_tokenizer(data["tok"]))
  save_model(LlavaNext(cfg, rngs=nnx.Rngs(0)), f"{root}/model", layout="params")
  return data, f"{root}/model"


def test_two_agents_and_baselines_write_a_resumable_report(setup, tmp_path):
  from configs.eval import get_config
  from insightv_jax.eval.runner import run_eval
  data, model = setup
  cfg = get_config()
  cfg.reasoning_model = f"params:{model}"
  cfg.tokenizer = data["tok"]
  cfg.benchmarks = os.path.join(data["root"], "train.jsonl")
  cfg.image_root = data["root"]
  cfg.batch_size = 4
  cfg.reasoning_max_new_tokens = 12
  cfg.answer_max_new_tokens = 6
  cfg.cot_max_new_tokens = 12
  summary = run_eval(cfg, str(tmp_path))
  assert set(summary) == {"two_agent", "direct", "cot"} and all(s["n"] == 6 for s in summary.values())
  report = (tmp_path / "report.md").read_text()
  assert "| two_agent |" in report and "failure examples" in report
  rows = [json.loads(x) for x in (tmp_path / "two_agent.jsonl").read_text().splitlines()]
  assert len(rows) == 6 and all("chain" in r and "reply" in r for r in rows)
  # a kill mid-write leaves a partial last line: the rerun redoes only that example
  lines = (tmp_path / "two_agent.jsonl").read_text().splitlines()
  (tmp_path / "two_agent.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
  run_eval(cfg, str(tmp_path))
  rows = [json.loads(x) for x in (tmp_path / "two_agent.jsonl").read_text().splitlines()]
  assert sorted(r["id"] for r in rows) == sorted(q.id for q in readers.read_benchmark(cfg.benchmarks))
  assert rows[:4] == [json.loads(x) for x in lines[:4]]  # finished examples were not recomputed


def test_benchmark_readers(tmp_path):
  lines = [
      {"question": "Which?", "options": ["x", "y", "z"], "answer": "B", "category": "logic"},
      {"question": "Which?", "A": "x", "B": "y", "answer": "y"},
      {"question": "Value?", "answer": "12.5", "image": "img/1.png"},
      {"question": "Is it?", "answer": "Yes"},
  ]
  (tmp_path / "mmstar.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  qs = readers.read_benchmark(str(tmp_path / "mmstar.jsonl"))
  assert [q.answer for q in qs] == ["B", "B", "12.5", "Yes"]
  assert qs[0].choices == ("x", "y", "z") and qs[0].meta["category"] == "logic"
  assert qs[2].images[0].path == "img/1.png"
  (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "Q", "options": ["a", "b"], "answer": "c"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'answer'"):
    readers.read_benchmark(str(tmp_path / "bad.jsonl"))
