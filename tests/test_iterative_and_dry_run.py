"""Iterative DPO resumes after a kill between stages; the 8B dry runs (SFT, DPO) compile on a fake 8-device mesh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flax import nnx
from train_data import write_training_data

from insightv_jax.checkpoints import save_model
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.model.llava import LlavaNext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def test_iterative_dpo_resumes_after_a_kill_between_stages(tmp_path, tiny_cfg):
  data = write_training_data(str(tmp_path / "data"), n=8)
  cfg = fit_model_config(tiny_cfg, load_tokenizer(data["tok"]))
  save_model(LlavaNext(cfg, rngs=nnx.Rngs(0)), str(tmp_path / "sft"), layout="params")
  args = [sys.executable, "-m", "pipelines.cli.train", f"--config={ROOT}/configs/dpo_iterative.py:tiny",
          f"--workdir={tmp_path / 'idpo'}", "--config.rounds=2", f"--config.start_model=params:{tmp_path / 'sft'}",
          "--config.sampler=scripted", "--config.datagen.questions=synthetic:8",
          "--config.datagen.world.kinds=left_of,chart_range", "--config.datagen.world.image_size=56",
          "--config.datagen.world.seed=1", "--config.datagen.assembly.min_score_gap=1",
          f"--config.train.tokenizer={data['tok']}", "--config.train.optim.total_steps=2",
          "--config.train.data.batch_size=2", "--config.train.checkpoint.every=0", "--config.train.mesh.fsdp=1"]
  killed = subprocess.run(args + ["--config.debug_kill_at=round_1/train"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
  assert killed.returncode == -9, killed.stderr[-3000:]
  export = tmp_path / "idpo" / "round_1" / "train" / "export" / "config.json"
  assert export.exists() and not (tmp_path / "idpo" / "round_2").exists()
  stamp = os.path.getmtime(export)
  done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.path.getmtime(export) == stamp  # round 1 was not redone
  assert (tmp_path / "idpo" / "round_2" / "train" / "export" / "config.json").exists()
  with open(tmp_path / "idpo" / "round_2" / "train" / "config.json") as f:
    assert json.load(f)["model"]["init"] == f"params:{tmp_path / 'idpo' / 'round_1' / 'train' / 'export'}"


def _dry_run(tmp_path, job: str, *overrides: str) -> dict:
  out = subprocess.run([sys.executable, "-m", "pipelines.cli.train", f"--config={ROOT}/configs/{job}.py:8b",
                        f"--workdir={tmp_path}", "--dry_run", "--dry_run_devices=8", *overrides],
                       cwd=ROOT, env={**ENV, "XLA_FLAGS": ""}, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout[out.stdout.index("{"):out.stdout.rindex("}") + 1])


def test_dry_run_compiles_the_8b_step_on_8_fake_devices(tmp_path):
  report = _dry_run(tmp_path, "sft_reasoning", "--config.data.max_len=4096", "--config.data.batch_size=8")
  assert report["task"] == "sft" and report["devices"] == 8 and report["mesh"]["fsdp"] == 8
  assert 7.5 < report["params_billion"] < 9.0
  assert 0 < report["per_device_GiB"]["arguments"] < 40 and report["per_device_GiB"]["temporaries"] > 0
  assert report["model_TFLOPs_per_step"] > 1000
  assert "ref_params" not in report["state_GiB_per_device"]


def test_dry_run_compiles_the_8b_dpo_step_with_its_reference_model(tmp_path):
  """The DPO step (policy and frozen reference over [chosen; rejected]) compiles from the config alone."""
  report = _dry_run(tmp_path, "dpo", "--config.data.max_len=1024", "--config.data.batch_size=8")
  assert report["task"] == "dpo" and report["reference_model"] and report["mesh"]["fsdp"] == 8
  state = report["state_GiB_per_device"]
  params_gib = report["params_billion"] * 1e9 * 4 / 8 / 2**30  # fp32 master weights over 8 devices
  assert abs(state["params"] - params_gib) < 0.05 * params_gib
  assert state["ref_params"] == state["params"]  # the reference copy is part of the train state
  assert report["per_device_GiB"]["arguments"] >= state["params"] + state["ref_params"] + state["opt_state"]
  # both sides of every pair run through the model: the FLOPs of 2 x 8 rows
  from configs.dpo import get_config
  from insightv_jax.train.flops import train_flops
  from insightv_jax.train.state import model_config
  mc = model_config(get_config("8b").model)
  assert report["model_TFLOPs_per_step"] == round(train_flops(mc, 1024, 2 * 8, report["tiles_per_row"]) / 1e12, 1)
