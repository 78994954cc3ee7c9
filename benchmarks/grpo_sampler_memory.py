"""Per-device memory of the GRPO rollout sampler for the 8B model on a fake mesh (what `--dry_run` counts
analytically as the "rollout" KV cache): `sampler._generate` lowered and compiled ahead of time for one generate
call of `grpo.prompts_per_call` prompts x G samples, FSDP-sharded fp32 master params (the GRPO loop samples from
the train state's params), host prompt inputs as the loop sends them; prints XLA's `memory_analysis()`.

    python benchmarks/grpo_sampler_memory.py --devices=8 --prompts_per_call=16 [--prompt_len=4096]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--prompts_per_call", type=int, default=16)
  ap.add_argument("--prompt_len", type=int, default=4096, help="padded prompt length (a 64-token bucket)")
  args = ap.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp

  from configs.grpo import get_config
  from insightv_jax import sharding
  from insightv_jax.data.images import ImageProcessorConfig
  from insightv_jax.infer import sampler
  from insightv_jax.train import state as state_lib
  from insightv_jax.train import steps

  cfg = get_config("8b")
  cfg.mesh.fsdp = args.devices
  mc = state_lib.model_config(cfg.model)
  mesh = sharding.make_mesh(1, args.devices, 1, devices=jax.devices()[:args.devices])
  setup = state_lib.build_train_state(cfg, mc, mesh, abstract=True)
  proc = ImageProcessorConfig.for_model(mc)
  p, t, g, new = args.prompts_per_call, args.prompt_len, cfg.grpo.num_generations, cfg.grpo.max_new_tokens
  spec = jax.ShapeDtypeStruct
  inputs = (spec((p, t), jnp.int32), spec((p, proc.num_tiles, 3, proc.tile, proc.tile), jnp.float32),
            spec((p, 2), jnp.int32), spec((p, t), jnp.int32), spec((p * g, 3), jnp.int32), spec((p * g,), jnp.uint32))
  t0 = time.time()
  with sharding.use_mesh(mesh):
    compiled = sampler._generate.lower(setup.graphdef, setup.state["params"], *inputs, max_new_tokens=new,
                                       temperature=1.0, top_k=0, top_p=1.0, pad_id=0, num_samples=g).compile()
  print(json.dumps({"devices": args.devices, "prompts_per_call": p, "rows": p * g, "cache_slots": t + new,
                    "compile_s": round(time.time() - t0, 1), "load": os.getloadavg()[0],
                    "per_device_GiB": steps.memory_gib(compiled)}))


if __name__ == "__main__":
  main()
