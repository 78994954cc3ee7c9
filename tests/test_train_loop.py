"""The train loop: sharded == single device, exact resume after SIGKILL, two processes, DPO, NaN stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket

import jax
import numpy as np
import pytest
from conftest import xla_flags
from train_data import tiny_train_config, write_training_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return write_training_data(str(tmp_path_factory.mktemp("train_data")))


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["step"] for r in rows], np.asarray([r["loss"] for r in rows])


def _cli(cli, workdir, data, job="sft_reasoning", env_extra=None, **overrides):
  """Runs insightv-train in a fresh process; returns the CompletedProcess."""
  args = [f"--config={ROOT}/configs/{job}.py:tiny",
          f"--workdir={workdir}", f"--config.tokenizer={data['tok']}",
          f"--config.data.paths={data['dpo' if job == 'dpo' else 'sft']}", f"--config.data.image_root={data['root']}"]
  args += [f"--config.{k}={v}" for k, v in overrides.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1),
         **(env_extra or {})}
  return cli.run("pipelines.cli.train", args, env=env, workdir=f"{workdir}-logs")


def test_sharded_training_matches_single_device(data, tmp_path):
  from insightv_jax.train.loop import train
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (fake) devices")
  common = {"optim.total_steps": 5, "checkpoint.every": 0, "export_params": False}
  train(tiny_train_config(data, **common, **{"mesh.fsdp": 1}), str(tmp_path / "one"))
  train(tiny_train_config(data, **common, **{"mesh.fsdp": 4, "mesh.tensor": 2}), str(tmp_path / "mesh"))
  steps1, one = _losses(tmp_path / "one")
  steps8, mesh = _losses(tmp_path / "mesh")
  assert steps1 == steps8 == [1, 2, 3, 4, 5]
  np.testing.assert_allclose(one, mesh, rtol=2e-5)
  assert one[-1] < one[0]  # it learns


def test_resume_after_sigkill_gives_identical_losses(data, tmp_path, cli):
  full = _cli(cli, tmp_path / "full", data, **{"optim.total_steps": 20})
  assert full.returncode == 0, full.stderr[-3000:]
  killed = _cli(cli, tmp_path / "killed", data, **{"optim.total_steps": 20, "debug_kill_at": "step_12"})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  steps, _ = _losses(tmp_path / "killed")
  assert max(steps) == 12  # ran past the step-10 checkpoint before dying
  resumed = _cli(cli, tmp_path / "killed", data, **{"optim.total_steps": 20})
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  restored = re.search(r"restored step (\d+)", resumed.stderr)
  assert restored and int(restored.group(1)) in (5, 10), resumed.stderr[-2000:]  # the step-10 save may not have
  # committed before the kill (it is async); then the run falls back to step 5, which must be just as exact
  steps_full, loss_full = _losses(tmp_path / "full")
  steps_res, loss_res = _losses(tmp_path / "killed")
  assert steps_full == steps_res == list(range(1, 21))
  np.testing.assert_array_equal(loss_full, loss_res)
  assert os.path.exists(tmp_path / "killed" / "export" / "config.json")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_save_and_restore(data, tmp_path, cli):
  port = _free_port()
  env = {"XLA_FLAGS": xla_flags(2)}

  def launch(steps):
    procs = []
    for pid in range(2):
      # a constant lr: both launches compile one program (the second loads it from the compilation cache)
      overrides = {"optim.total_steps": steps, "optim.warmup_ratio": 0.0, "optim.final_lr_ratio": 1.0,
                   "checkpoint.every": 2, "mesh.fsdp": -1, "export_params": False,
                   "distributed.coordinator_address": f"127.0.0.1:{port}", "distributed.num_processes": 2,
                   "distributed.process_id": pid}
      args = [f"--config={ROOT}/configs/sft_reasoning.py:tiny",
              f"--workdir={tmp_path / 'run'}", f"--config.tokenizer={data['tok']}",
              f"--config.data.paths={data['sft']}", f"--config.data.image_root={data['root']}"]
      args += [f"--config.{k}={v}" for k, v in overrides.items()]
      procs.append(cli.start("pipelines.cli.train", args, env={**os.environ, **env},
                             stderr=tmp_path / f"process-{pid}-{steps}.stderr"))
    for p in procs:
      assert p.wait(600) == 0, p.read_stderr()[-3000:]
    return [p.read_stderr() for p in procs]

  first = launch(3)
  assert any("mesh {'data': 1, 'fsdp': 4, 'tensor': 1} over 2 processes" in e for e in first)
  second = launch(5)
  assert all("restored step 3" in e for e in second)
  steps, loss = _losses(tmp_path / "run")
  assert steps == [1, 2, 3, 4, 5] and np.isfinite(loss).all()


def test_dpo_round_learns_preferences(data, tmp_path):
  from insightv_jax.train.loop import train
  cfg = tiny_train_config(data, "dpo", **{"optim.total_steps": 16, "checkpoint.every": 0, "mesh.fsdp": 1,
                                          "export_params": False, "optim.lr": 1e-3, "dpo.sft_weight": 0.0})
  train(cfg, str(tmp_path / "dpo"))
  with open(tmp_path / "dpo" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert rows[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
  second_epoch = rows[8:]  # 32 pairs, 4 per step: pairs seen once before
  assert np.mean([r["rewards/margin"] for r in second_epoch]) > 0
  assert np.mean([r["rewards/accuracy"] for r in second_epoch]) > 0.5


def test_nonfinite_loss_stops_with_last_checkpoint_intact(data, tmp_path):
  from insightv_jax.train.loop import NonFiniteLossError, train
  cfg = tiny_train_config(data, **{"optim.total_steps": 6, "checkpoint.every": 2, "mesh.fsdp": 1,
                                   "checkpoint.async_save": False})
  train(cfg, str(tmp_path / "run"))  # a healthy run first: checkpoints 2, 4, 6
  bad = tiny_train_config(data, **{"optim.total_steps": 10, "checkpoint.every": 2, "mesh.fsdp": 1,
                                   "optim.lr": float("inf"), "optim.clip_norm": 0.0})
  with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
    train(bad, str(tmp_path / "run"))
  assert sorted(int(d) for d in os.listdir(tmp_path / "run" / "checkpoints") if d.isdigit())[-1] == 6


def test_a_constant_lr_is_one_program_whatever_the_run_length():
  import ml_collections

  from insightv_jax.train import optim
  cfg = lambda total, final: ml_collections.ConfigDict(dict(lr=3e-4, warmup_ratio=0.0, total_steps=total,
                                                            final_lr_ratio=final))
  count = jax.numpy.arange(12)
  values = lambda schedule: np.asarray(jax.vmap(lambda c: jax.numpy.float32(schedule(c)))(count))
  np.testing.assert_array_equal(values(optim.lr_schedule(cfg(5, 1.0))), values(optax_cosine(cfg(5, 1.0))))
  jaxpr = lambda c: str(jax.make_jaxpr(optim.lr_schedule(c))(count[0]))
  assert jaxpr(cfg(3, 1.0)) == jaxpr(cfg(500, 1.0))  # the length is not in the program
  assert jaxpr(cfg(3, 0.0)) != jaxpr(cfg(500, 0.0))  # a decay's is


def optax_cosine(c):
  import optax
  return optax.warmup_cosine_decay_schedule(init_value=c.lr, peak_value=c.lr, warmup_steps=0,
                                            decay_steps=c.total_steps, end_value=c.lr * c.final_lr_ratio)


def test_frozen_parameters_get_no_update_and_no_optimizer_state(tiny_model):
  import ml_collections
  from flax import nnx

  from insightv_jax import sharding
  from insightv_jax.data.batches import SftBatch, TokenRows
  from insightv_jax.train import optim, steps
  from insightv_jax.train import state as state_lib
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  graphdef, params = state_lib.params_of(tiny_model)
  cfg = ml_collections.ConfigDict(dict(lr=1e-2, warmup_ratio=0.0, total_steps=10, final_lr_ratio=0.0, b1=0.9,
                                       b2=0.99, eps=1e-8, weight_decay=0.1, clip_norm=1.0))
  trainable = optim.trainable_mask(params, ["^vision_tower/", "^multi_modal_projector/linear_1/"])
  tx = optim.make_optimizer(cfg, trainable)
  shard = jax.tree.map(lambda _: sharding.replicated(mesh), params)
  opt_state = jax.jit(tx.init, out_shardings=state_lib.opt_state_shardings(tx, params, shard, mesh))(params)
  n_state = sum(x.size for x in jax.tree.leaves(opt_state))
  n_trained = sum(x.size for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable)) if t)
  assert n_state <= 2 * n_trained + 8  # moments only for trained parameters
  rng = np.random.default_rng(0)
  ids = jax.numpy.asarray(rng.integers(0, 200, (2, 16)), jax.numpy.int32)
  tokens = TokenRows(input_ids=ids.at[:, 2:4].set(tiny_model.cfg.image_token_index),
                     loss_mask=jax.numpy.ones_like(ids), segment_ids=jax.numpy.ones_like(ids),
                     positions=jax.numpy.broadcast_to(jax.numpy.arange(16), (2, 16)))
  batch = SftBatch(tokens=tokens, pixel_values=jax.numpy.asarray(rng.normal(size=(2, 5, 3, 28, 28)), jax.numpy.float32),
                   image_sizes=jax.numpy.asarray([[40, 60], [56, 30]], jax.numpy.int32))
  step = jax.jit(steps.make_train_step(graphdef, lambda g, p, b, r: steps.sft_loss(g, p, b), tx, trainable))
  state, _ = step({"step": jax.numpy.zeros((), jax.numpy.int32), "params": params, "opt_state": opt_state}, batch)
  moved = jax.tree.map(lambda a, b: bool((a != b).any()), params, state["params"])
  for (path, m), t in zip(jax.tree_util.tree_leaves_with_path(moved), jax.tree.leaves(trainable)):
    assert t or not m, optim.path_str(path)  # frozen parameters never move
  assert not any(jax.tree.leaves(moved["vision_tower"])) and not moved["multi_modal_projector"]["linear_1"]["kernel"]
  assert moved["language_model"]["lm_head"]["kernel"] and moved["multi_modal_projector"]["linear_2"]["kernel"]
  del nnx
