"""The train loop for SFT (reasoning or summary agent) and DPO, read top to bottom.

    train(config, workdir)   # config: configs/sft_reasoning.py, configs/sft_summary.py, configs/dpo.py

Writes into workdir: config.json (resolved), metrics.jsonl (one object per logged step), TensorBoard
events (tb/), checkpoints/ (train state + data iterator, async, keep-last-K), export/ (params-only,
the next stage's input). Restarting with the same workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time

import jax
import numpy as np
from absl import logging

from insightv_jax import checkpoints, sharding
from insightv_jax.data import loader
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.train import flops, optim, steps
from insightv_jax.train import state as state_lib
from insightv_jax.train.checkpoint import Checkpointer, is_primary
from insightv_jax.train.metrics import MetricsWriter, Progress
from insightv_jax.utils.faults import kill_if


class NonFiniteLossError(FloatingPointError):
  pass


def maybe_initialize_distributed(cfg):
  """jax.distributed from config.distributed (coordinator_address, num_processes, process_id).

  coordinator_address "auto" lets JAX discover the cluster (TPU VM slices, SLURM); "host:port" is explicit.
  """
  if not cfg.coordinator_address or jax.distributed.is_initialized():
    return
  if cfg.coordinator_address == "auto":
    jax.distributed.initialize()
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives; GPUs/TPUs use their own
  jax.distributed.initialize(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
                             process_id=cfg.process_id)


def train(config, workdir: str) -> dict:
  # ------------------------------------------------------------------------------------------- setup
  maybe_initialize_distributed(config.distributed)
  os.makedirs(workdir, exist_ok=True)
  if is_primary():
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  dpo = config.task == "dpo"
  if config.task not in ("sft", "dpo"):
    raise ValueError(f"config.task={config.task!r}; expected 'sft' or 'dpo'")

  # -------------------------------------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.data.batch_size % batch_ways:
    raise ValueError(f"config.data.batch_size={config.data.batch_size} must be divisible by mesh data x fsdp = "
                     f"{batch_ways} (mesh {dict(mesh.shape)})")
  logging.info("mesh %s over %d processes", dict(mesh.shape), jax.process_count())

  # -------------------------------------------------------------------------------- input pipeline
  tokenizer = load_tokenizer(config.tokenizer)
  model_cfg = state_lib.model_config(config.model, tokenizer)
  loader_cfg = loader.LoaderConfig(**{k: v for k, v in config.data.items() if k not in ("source", "paths")})
  source = loader.open_source(config.data.source, [p for p in config.data.paths.split(",") if p])
  dataset = loader.make_dataset(source, loader_cfg, model_cfg, tokenizer, dpo=dpo,
                                process_index=jax.process_index(), process_count=jax.process_count())
  iterator = iter(dataset)

  # ------------------------------------------------------------------------------ model and optimizer
  with sharding.use_mesh(mesh):
    model = state_lib.init_model(config.model, model_cfg, mesh, seed=config.seed)
  graphdef, params = state_lib.params_of(model)
  del model
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  trainable = optim.trainable_mask(params, list(config.optim.freeze))
  tx = optim.make_optimizer(config.optim, trainable)
  opt_shardings = state_lib.opt_state_shardings(tx, params, param_shardings, mesh)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  state = {"step": state_lib.zeros_step(mesh), "params": params, "opt_state": opt_state}
  state_shardings = {"step": sharding.replicated(mesh), "params": param_shardings, "opt_state": opt_shardings}
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  n_train = sum(int(np.prod(x.shape)) for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable)) if t)
  logging.info("parameters: %.2fM (%.2fM trained)", n_params / 1e6, n_train / 1e6)

  # ------------------------------------------------------------------------------------- update step
  if dpo:
    if config.dpo.reference == "model":  # the frozen policy at the round's start, checkpointed with the run
      state["ref_params"] = jax.tree.map(lambda x: x.copy(), params)
      state_shardings["ref_params"] = param_shardings
    elif config.dpo.reference != "precomputed":
      raise ValueError(f"config.dpo.reference={config.dpo.reference!r}; expected 'model' or 'precomputed'")
    loss_fn = _dpo_loss_fn(config)
  else:
    def loss_fn(g, p, b, ref):
      del ref
      return steps.sft_loss(g, p, b, chunk=config.loss_chunk)
  step_fn = steps.make_train_step(graphdef, loss_fn, tx, trainable, accum_steps=config.optim.accum_steps,
                                  schedule=optim.lr_schedule(config.optim))
  first = next(iterator)
  batch_shapes = {k: v for k, v in first.items() if k != "num_skipped"}
  global_batch = {k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(),) + v.shape[1:], v.dtype,
                                          sharding=sharding.batch_sharding(mesh, v.ndim))
                  for k, v in batch_shapes.items()}
  batch_shardings = {k: v.sharding for k, v in global_batch.items()}
  jitted = jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
  with sharding.use_mesh(mesh):
    t0 = time.time()
    compiled = jitted.lower(state_lib.abstract_like(state, state_shardings), global_batch).compile()
  mem = compiled.memory_analysis()
  logging.info("compiled train step in %.1fs; per-device memory: %s", time.time() - t0, _memory_summary(mem))

  # ---------------------------------------------------------------------------------- init or resume
  ckpt = Checkpointer(workdir, every=config.checkpoint.every, keep=config.checkpoint.keep,
                      async_save=config.checkpoint.async_save)
  # the first batch was only for shapes: rewind the iterator before (possibly) restoring into it
  iterator = iter(dataset)
  start, restored = ckpt.restore_or(state_lib.abstract_like(state, state_shardings), iterator)
  if restored is not None:
    state = restored
  writer = MetricsWriter(workdir, resume_step=start, enabled=is_primary())
  progress = Progress(total=config.optim.total_steps, start=start)
  # MFU: analytic model FLOPs per step (vision tower included) over the devices' peak
  tiles = global_batch["pixel_values"].shape[1] * loader_cfg.images_per_row if "pixel_values" in global_batch else 0
  seq = config.data.max_len
  step_flops = flops.train_flops(model_cfg, seq, config.data.batch_size * (2 if dpo else 1), tiles)
  peak = config.device_peak_flops or flops.device_peak(jax.devices()[0].device_kind)
  logging.info("model FLOPs per step: %.3g; device peak %s", step_flops, f"{peak:.3g}" if peak else "unknown")

  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda sig, _: stop.update(signal=sig))

  # ------------------------------------------------------------------------------------- train loop
  metrics = {}
  try:
    for step in range(start, config.optim.total_steps):
      local = next(iterator)
      skipped = int(local.pop("num_skipped"))
      batch = {k: jax.make_array_from_process_local_data(batch_shardings[k], v) for k, v in local.items()}
      state, metrics = compiled(state, batch)
      done = step + 1
      tokens = int(local["loss_mask" if not dpo else "chosen_loss_mask"].sum()) * jax.process_count()
      progress.update(done, tokens)
      will_save = config.checkpoint.every and done % config.checkpoint.every == 0
      if done % config.log_every == 0 or will_save or done == config.optim.total_steps:
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(host["loss"]):
          raise NonFiniteLossError(f"loss is {host['loss']} at step {done}; stopping. The last good checkpoint "
                                   f"(step {ckpt.latest_step()}) in {ckpt.directory} is intact.")
        host.update(step=done, skipped_records=skipped, **progress.rates())
        if peak:
          host["mfu"] = step_flops * host["steps_per_sec"] / (peak * len(jax.devices()))
        writer.write(host)
        logging.info("%s", progress.line(host))
      if will_save:
        ckpt.save(done, state, iterator)
      kill_if(config.debug_kill_at, f"step_{done}")
      if stop["signal"] is not None:
        logging.warning("SIGTERM: saving step %d before exiting", done)
        ckpt.save(done, state, iterator, force=True)
        break
    else:
      if config.optim.total_steps > start and ckpt.latest_step() != config.optim.total_steps:
        ckpt.save(config.optim.total_steps, state, iterator, force=True)
  finally:
    signal.signal(signal.SIGTERM, previous)
    ckpt.close()
    writer.close()
    if hasattr(iterator, "close"):
      iterator.close()

  # --------------------------------------------------------------------------------- params export
  if config.export_params and stop["signal"] is None:
    from flax import nnx
    checkpoints.save_model(nnx.merge(graphdef, state["params"]), os.path.join(workdir, "export"), layout="params")
  return {k: float(v) for k, v in jax.device_get(metrics).items()} if metrics else {}


def _dpo_loss_fn(config):
  d = config.dpo

  def loss_fn(g, p, b, ref):
    return steps.dpo_loss(g, p, b, beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing,
                          sft_weight=d.sft_weight, chunk=config.loss_chunk, ref_params=ref)
  return loss_fn


def _memory_summary(mem) -> str:
  if mem is None:
    return "n/a"
  gib = lambda x: f"{x / 2**30:.3f} GiB"
  return json.dumps({"arguments": gib(mem.argument_size_in_bytes), "outputs": gib(mem.output_size_in_bytes),
                     "temporaries": gib(mem.temp_size_in_bytes), "aliased": gib(mem.alias_size_in_bytes)})

