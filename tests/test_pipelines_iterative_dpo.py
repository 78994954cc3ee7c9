"""Iterative DPO (pipelines/iterative_dpo.py) resumes after a kill between stages, redoing nothing finished; each
round trains `epochs` passes over its own pairs."""

from __future__ import annotations

import json
import math
import os

from conftest import xla_flags
from flax import nnx
from train_data import write_training_data

from insightv_jax.checkpoints import save_model
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.model.llava import LlavaNext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1)}


def test_iterative_dpo_resumes_after_a_kill_between_stages(tmp_path, tiny_cfg, cli):
  data = write_training_data(str(tmp_path / "data"), n=8)
  cfg = fit_model_config(tiny_cfg, load_tokenizer(data["tok"]))
  save_model(LlavaNext(cfg, rngs=nnx.Rngs(0)), str(tmp_path / "sft"), layout="params")
  args = [f"--config={ROOT}/configs/dpo_iterative.py:tiny",
          f"--workdir={tmp_path / 'idpo'}", "--config.rounds=2", f"--config.start_model=params:{tmp_path / 'sft'}",
          "--config.sampler=scripted", "--config.datagen.questions=synthetic:8",
          "--config.datagen.world.kinds=left_of,chart_range", "--config.datagen.world.image_size=56",
          "--config.datagen.world.seed=1", "--config.datagen.assembly.min_score_gap=1",
          f"--config.train.tokenizer={data['tok']}", "--config.epochs=0.5",
          "--config.train.data.batch_size=2", "--config.train.checkpoint.every=0", "--config.train.mesh.fsdp=1"]
  killed = cli.run("pipelines.cli.train", args + ["--config.debug_kill_at=round_1/train"], env=ENV,
                   workdir=tmp_path / "logs")
  assert killed.returncode == -9, killed.stderr[-3000:]
  export = tmp_path / "idpo" / "round_1" / "train" / "export" / "config.json"
  assert export.exists() and not (tmp_path / "idpo" / "round_2").exists()
  stamp = os.path.getmtime(export)
  done = cli.run("pipelines.cli.train", args, env=ENV, workdir=tmp_path / "logs")
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.path.getmtime(export) == stamp  # round 1 was not redone
  assert (tmp_path / "idpo" / "round_2" / "train" / "export" / "config.json").exists()
  with open(tmp_path / "idpo" / "round_2" / "train" / "config.json") as f:
    round_2 = json.load(f)
  assert round_2["model"]["init"] == f"params:{tmp_path / 'idpo' / 'round_1' / 'train' / 'export'}"
  with open(tmp_path / "idpo" / "round_2" / "sample" / "report" / "counts.json") as f:
    pairs = json.load(f)["datasets"]["dpo"]
  assert round_2["optim"]["total_steps"] == max(1, math.ceil(0.5 * pairs / 2)), pairs
