"""`insightv-train --dry_run`: compile the real train step ahead of time on a fake mesh, allocate nothing.

Builds the same train state (`state.build_train_state(..., abstract=True)`: model, optimizer state and, for
DPO against a model, the reference's trained part: the frozen vision tower is the policy's) and the same batch
(`tasks.Task.abstract_batch`) as the train loop, as `jax.ShapeDtypeStruct`s carrying their shardings; lowers and
compiles the task's jitted step, and
prints per-device memory (`memory_analysis()`, and the state's share of it by part: params, opt_state,
ref_params) and FLOPs per step (analytic; XLA's own count, which sees a scanned layer once, is printed too).
Use it to pick a mesh and sequence length for an 8B run before asking for hardware:

    insightv-train --config=configs/sft_reasoning.py:8b --workdir=/tmp/dry --dry_run --dry_run_devices=64 \
        --config.mesh.fsdp=64 --config.data.max_len=4096
    insightv-train --config=configs/dpo.py:8b --workdir=/tmp/dry --dry_run --dry_run_devices=8 \
        --config.data.max_len=4096 --config.data.batch_size=8
    insightv-train --config=configs/grpo.py:8b --workdir=/tmp/dry --dry_run --dry_run_devices=8 \
        --config.optim.accum_steps=8        # GRPO: also prints the rollout's B x G KV cache ("rollout")
"""

from __future__ import annotations

import json
import os


def dry_run(config, n_devices: int) -> dict:
  flag = f"--xla_force_host_platform_device_count={n_devices}"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax

  from insightv_jax import sharding
  from insightv_jax.data import loader
  from insightv_jax.train import optim, steps, tasks
  from insightv_jax.train import state as state_lib

  if len(jax.devices()) < n_devices:
    raise RuntimeError(f"--dry_run_devices={n_devices} but JAX already started with {len(jax.devices())} devices; "
                       "run the dry run in a fresh process")
  if config.task == "grpo":  # GRPO's step (its loop is pipelines/grpo.py): group rows + the rollout's KV cache
    from insightv_jax.train import grpo_steps
    task = grpo_steps.TASK
  else:
    task = tasks.get(config.task)
  mc = state_lib.model_config(config.model)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                            devices=jax.devices()[:n_devices])
  setup = state_lib.build_train_state(config, mc, mesh, reference_model=task.reference_model(config), abstract=True)
  batch = task.abstract_batch(config, mc, mesh)
  step_fn = steps.make_train_step(setup.graphdef, task.loss(config), setup.tx, setup.trainable,
                                  accum_steps=config.optim.accum_steps, schedule=optim.lr_schedule(config.optim))
  compiled = steps.compile_train_step(step_fn, setup.state, batch, mesh)
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, list) else cost
  n_params, _ = setup.param_counts()
  geometry = loader.geometry(loader.LoaderConfig.from_config(config.data), mc)
  report = {
      "task": task.name, "devices": n_devices, "mesh": dict(mesh.shape), "params_billion": round(n_params / 1e9, 3),
      "reference_model": task.reference_model(config), "batch": config.data.batch_size, "seq": config.data.max_len,
      "tiles_per_row": geometry.num_tiles * geometry.images_per_row,
      "dtype": mc.dtype, "remat": mc.remat, "scan": mc.scan_layers, "per_device_GiB": steps.memory_gib(compiled),
      "state_GiB_per_device": {k: _shard_gib(v) for k, v in setup.state.items() if k != "step"},
      "model_TFLOPs_per_step": round(task.step_flops(config, mc) / 1e12, 1),
      "xla_TFLOPs_per_step_scan_body_once": round(float(cost.get("flops", 0.0)) / 1e12, 1),
  }
  if config.task == "grpo":  # rows: questions_per_step / groups_per_row; and the sampler's KV cache
    geo = grpo_steps.geometry(config, mc)
    report.update(batch=geo.rows, tiles_per_row=geo.num_tiles * geo.images_per_row,
                  rollout=task.rollout_memory(config, mc, mesh))
  print(json.dumps(report, indent=2))
  return report


def _shard_gib(tree) -> float:
  """GiB one device holds of a pytree of sharded `jax.ShapeDtypeStruct`s (the largest shard of each leaf)."""
  import jax
  import numpy as np
  nbytes = sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in jax.tree.leaves(tree))
  return round(nbytes / 2**30, 3)
