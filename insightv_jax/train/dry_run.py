"""`insightv-train --dry_run`: compile the real train step ahead of time on a fake mesh, allocate nothing.

Builds the model, optimizer state and batch as `jax.ShapeDtypeStruct`s carrying their shardings, lowers and
compiles the jitted step, and prints per-device memory (`memory_analysis()`) and FLOPs per step (analytic;
XLA's own count, which sees a scanned layer once, is printed too). Use it to pick a mesh and sequence length
for an 8B run before asking for hardware:

    insightv-train --config=configs/sft_reasoning.py:8b --workdir=/tmp/dry --dry_run --dry_run_devices=64 \
        --config.mesh.fsdp=64 --config.data.max_len=4096
"""

from __future__ import annotations

import json
import os


def dry_run(config, n_devices: int) -> dict:
  flag = f"--xla_force_host_platform_device_count={n_devices}"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from insightv_jax import sharding
  from insightv_jax.model import anyres
  from insightv_jax.model.llava import LlavaNext
  from insightv_jax.train import flops, optim, steps
  from insightv_jax.train import state as state_lib

  if len(jax.devices()) < n_devices:
    raise RuntimeError(f"--dry_run_devices={n_devices} but JAX already started with {len(jax.devices())} devices; "
                       "run the dry run in a fresh process")
  mc = state_lib.model_config(config.model)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                            devices=jax.devices()[:n_devices])
  abstract = nnx.eval_shape(lambda: LlavaNext(mc, rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)
  param_shardings = sharding.pure_dict_shardings(abs_state, mesh)
  params = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                        nnx.to_pure_dict(abs_state), param_shardings)
  trainable = optim.trainable_mask(params, list(config.optim.freeze))
  tx = optim.make_optimizer(config.optim, trainable)
  opt_shardings = state_lib.opt_state_shardings(tx, params, param_shardings, mesh)
  opt_state = state_lib.abstract_like(jax.eval_shape(tx.init, params), opt_shardings)
  repl = sharding.replicated(mesh)
  state = {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl), "params": params, "opt_state": opt_state}
  shardings = {"step": repl, "params": param_shardings, "opt_state": opt_shardings}
  B, T = config.data.batch_size, config.data.max_len
  tiles = anyres.max_patches(mc.image_grid_pinpoints, mc.vision.image_size)
  px = mc.vision.image_size
  shapes = {"input_ids": ((B, T), jnp.int32), "loss_mask": ((B, T), jnp.int32), "segment_ids": ((B, T), jnp.int32),
            "positions": ((B, T), jnp.int32), "pixel_values": ((B, tiles, 3, px, px), jnp.dtype(mc.dtype)),
            "image_sizes": ((B, 2), jnp.int32)}
  batch = {k: jax.ShapeDtypeStruct(s, d, sharding=sharding.batch_sharding(mesh, len(s)))
           for k, (s, d) in shapes.items()}
  fn = steps.make_train_step(graphdef, lambda g, p, b, r: steps.sft_loss(g, p, b, chunk=config.loss_chunk), tx,
                             trainable, accum_steps=config.optim.accum_steps)
  jitted = jax.jit(fn, in_shardings=(shardings, {k: v.sharding for k, v in batch.items()}),
                   out_shardings=(shardings, repl), donate_argnums=0)
  with sharding.use_mesh(mesh):
    compiled = jitted.lower(state, batch).compile()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, list) else cost
  n_params = sum(int(jnp.prod(jnp.array(x.shape))) for x in jax.tree.leaves(params))
  gib = lambda x: round(x / 2**30, 2)
  report = {
      "devices": n_devices, "mesh": dict(mesh.shape), "params_billion": round(n_params / 1e9, 3),
      "batch": B, "seq": T, "tiles_per_row": tiles, "dtype": mc.dtype, "remat": mc.remat, "scan": mc.scan_layers,
      "per_device_GiB": {"arguments": gib(mem.argument_size_in_bytes), "outputs": gib(mem.output_size_in_bytes),
                         "temporaries": gib(mem.temp_size_in_bytes),
                         "generated_code": gib(mem.generated_code_size_in_bytes),
                         "peak_estimate": gib(mem.argument_size_in_bytes + mem.temp_size_in_bytes
                                              + mem.output_size_in_bytes - mem.alias_size_in_bytes)},
      "model_TFLOPs_per_step": round(flops.train_flops(mc, T, B, tiles) / 1e12, 1),
      "xla_TFLOPs_per_step_scan_body_once": round(float(cost.get("flops", 0.0)) / 1e12, 1),
  }
  print(json.dumps(report, indent=2))
  return report
