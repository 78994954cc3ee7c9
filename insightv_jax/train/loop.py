"""The train loop for SFT (reasoning or summary agent) and DPO, read top to bottom.

    train(config, workdir)   # config: configs/sft_reasoning.py, configs/sft_summary.py, configs/dpo.py

Writes into workdir: config.json (resolved), metrics.jsonl (one object per logged step), TensorBoard
events (tb/), checkpoints/ (train state + data iterator, async, keep-last-K), export/ (params, tokenizer
with the chat template, generation_config.json, insightv.json: the next stage's input, a complete model
folder). Restarting with the same workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time

import jax
from absl import logging
from flax import nnx

from insightv_jax import sharding
from insightv_jax.data import loader, model_files, sources
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.train import flops, optim, steps, tasks
from insightv_jax.train import state as state_lib
from insightv_jax.train.checkpoint import Checkpointer, is_primary
from insightv_jax.train.metrics import MetricsWriter, Progress
from insightv_jax.utils.faults import kill_if
from insightv_jax.utils.files import atomic_write


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
  model_files.apply_recorded_defaults(config)  # template / prompts "" -> what the model.init folder records
  os.makedirs(workdir, exist_ok=True)
  if is_primary():
    with atomic_write(os.path.join(workdir, "config.json")) as f:
      f.write(config.to_json_best_effort(indent=2))
  task = tasks.get(config.task)  # SFT or DPO: loss, batch type, reference model (train/tasks.py)

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
  source = sources.open_source(config.data.source, [p for p in config.data.paths.split(",") if p])
  dataset = loader.make_dataset(source, loader.LoaderConfig.from_config(config.data), model_cfg, tokenizer,
                                batch_type=task.batch_type(config), process_index=jax.process_index(),
                                process_count=jax.process_count())

  # ------------------------------------------------------------------------------ model and optimizer
  setup = state_lib.build_train_state(config, model_cfg, mesh, reference_model=task.reference_model(config))
  n_params, n_train = setup.param_counts()
  logging.info("parameters: %.2fM (%.2fM trained)", n_params / 1e6, n_train / 1e6)
  task.check_data(config, source, tokenizer, setup.state["params"])  # e.g. DPO precomputed refs: ref_hash
  graphdef, state, state_shardings = setup.graphdef, setup.state, setup.shardings

  # ------------------------------------------------------------------------------------- update step
  step_fn = steps.make_train_step(graphdef, task.loss(config), setup.tx, setup.trainable,
                                  accum_steps=config.optim.accum_steps, schedule=optim.lr_schedule(config.optim))
  del setup  # `state` holds the only reference to the initial arrays: restoring a checkpoint frees them
  global_batch = task.abstract_batch(config, model_cfg, mesh)  # ShapeDtypeStructs with their shardings
  batch_shardings = jax.tree.map(lambda x: x.sharding, global_batch)
  t0 = time.time()
  compiled = steps.compile_train_step(step_fn, state_lib.abstract_like(state, state_shardings), global_batch, mesh)
  logging.info("compiled train step in %.1fs; per-device memory (GiB): %s", time.time() - t0,
               json.dumps(steps.memory_gib(compiled)))

  # ---------------------------------------------------------------------------------- init or resume
  ckpt = Checkpointer(workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  iterator = iter(dataset)
  start, restored = ckpt.restore_or(state_lib.abstract_like(state, state_shardings), iterator)
  if restored is not None:
    state = restored
  writer = MetricsWriter(workdir, resume_step=start, enabled=is_primary())
  progress = Progress(total=config.optim.total_steps, start=start)
  # MFU: analytic model FLOPs per step (vision tower included) over the devices' peak
  step_flops = task.step_flops(config, model_cfg)
  peak = config.device_peak_flops or flops.device_peak(jax.devices()[0].device_kind)
  logging.info("model FLOPs per step: %.3g; device peak %s", step_flops, f"{peak:.3g}" if peak else "unknown")

  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda sig, _: stop.update(signal=sig))

  # ------------------------------------------------------------------------------------- train loop
  metrics = {}
  try:
    for step in range(start, config.optim.total_steps):
      local, stats = next(iterator)  # this process's rows; stats: records skipped while filling them
      local = task.fit_batch(local, config)
      batch = jax.tree.map(jax.make_array_from_process_local_data, batch_shardings, local)
      state, metrics = compiled(state, batch)
      done = step + 1
      progress.update(done, task.trained_tokens(local) * jax.process_count())
      will_save = config.checkpoint.every and done % config.checkpoint.every == 0
      if done % config.log_every == 0 or will_save or done == config.optim.total_steps:
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(host["loss"]):
          raise NonFiniteLossError(f"loss is {host['loss']} at step {done}; stopping. The last good checkpoint "
                                   f"(step {ckpt.latest_step()}) in {ckpt.directory} is intact.")
        host.update(step=done, skipped_records=stats.skipped, **progress.rates())
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
    # a complete folder: params, tokenizer + chat template, generation_config.json, insightv.json (data/model_files.py)
    model_files.save_complete(nnx.merge(graphdef, state["params"]), os.path.join(workdir, "export"), tokenizer,
                              layout="params", template=config.data.template, prompts=config.data.get("prompts"),
                              source=config.model.init)
  return {k: float(v) for k, v in jax.device_get(metrics).items()} if metrics else {}
