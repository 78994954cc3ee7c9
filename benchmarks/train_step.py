"""SFT train-step throughput: our jitted JAX step vs transformers' PyTorch LlavaNext (fwd + bwd + AdamW).

Same config (benchmarks/common.py: ~30M parameters, seq 512, batch 4, one 600x600 image per row = 5 AnyRes
tiles), same weights, same batch, fp32 on CPU, measured in the same run (each side in its own process, so
peak memory is its own). Prints tokens/s, the ratio (goal >= 1.2x), each side's model FLOP/s as a fraction
of the fp32 matmul peak measured in the same run (goal >= 75%), and each side's peak RSS.

    python benchmarks/train_step.py [--steps=5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

IMAGE_HW = (600, 600)


def make_batch(cfg, seed=0):
  from PIL import Image

  from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
  from insightv_jax.model import anyres
  rng = np.random.default_rng(seed)
  items = [preprocess(Image.fromarray(rng.integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8)),
                      ImageProcessorConfig.for_model(cfg)) for _ in range(common.BATCH)]
  pixel_values, sizes = stack_batch(items)
  v = cfg.vision
  n_img = int(anyres.num_image_tokens(IMAGE_HW[0], IMAGE_HW[1], cfg.image_grid_pinpoints, v.image_size,
                                      v.patches_per_side, cfg.tokens_per_tile))
  ids = rng.integers(0, cfg.text.vocab_size - 1, (common.BATCH, common.SEQ)).astype(np.int32)
  ids[:, 4:4 + n_img] = cfg.image_token_index
  mask = np.zeros_like(ids)
  mask[:, 4 + n_img + 16:] = 1  # the reply after a short prompt is trained
  return ids, mask, pixel_values, sizes, n_img


def side_jax(ckpt: str, steps: int) -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from insightv_jax.data.batches import SftBatch, TokenRows
  from insightv_jax.hf import load_llava_next
  from insightv_jax.train.steps import make_train_step, sft_loss
  model = load_llava_next(ckpt)
  cfg = model.cfg
  ids, mask, pv, sizes, _ = make_batch(cfg)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  tx = optax.adamw(1e-5)
  trainable = jax.tree.map(lambda _: True, params)
  # loss chunks of 256 positions: each row's first 256 (prompt and image) tokens have no target, so that
  # chunk skips the LM head, as long prompts do in real SFT data
  step = jax.jit(make_train_step(graphdef, lambda g, p, b, r: sft_loss(g, p, b, chunk=256), tx, trainable),
                 donate_argnums=0)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  tokens = TokenRows(input_ids=jnp.asarray(ids), loss_mask=jnp.asarray(mask),
                     segment_ids=jnp.ones_like(jnp.asarray(ids)),
                     positions=jnp.broadcast_to(jnp.arange(common.SEQ), ids.shape))
  batch = SftBatch(tokens=tokens, pixel_values=jnp.asarray(pv), image_sizes=jnp.asarray(sizes))
  compiled = step.lower(state, batch).compile()
  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  dt = (time.perf_counter() - t0) / steps
  return {"side": "jax", "step_s": dt, "loss": float(metrics["loss"]), "peak_flops": common.matmul_peak_jax(),
          "peak_rss_mib": common.peak_rss_mib(),
          "params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))}


def side_torch(ckpt: str, steps: int) -> dict:
  import torch
  from transformers import LlavaNextForConditionalGeneration

  from insightv_jax.checkpoints import read_config
  torch.set_num_threads(os.cpu_count())
  model = LlavaNextForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)
  model.train()
  ids, mask, pv, sizes, _ = make_batch(read_config(f"hf:{ckpt}"))
  labels = np.where(mask == 1, ids, -100)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
  inputs = dict(input_ids=torch.tensor(ids, dtype=torch.long), pixel_values=torch.tensor(pv),
                image_sizes=torch.tensor(sizes), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                labels=torch.tensor(labels, dtype=torch.long))

  def one():
    opt.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    opt.step()
    return float(out.loss)

  for _ in range(2):
    one()
  t0 = time.perf_counter()
  for _ in range(steps):
    loss = one()
  dt = (time.perf_counter() - t0) / steps
  return {"side": "torch", "step_s": dt, "loss": loss, "peak_flops": common.matmul_peak_torch(),
          "peak_rss_mib": common.peak_rss_mib()}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--side", choices=["jax", "torch"])
  ap.add_argument("--ckpt")
  ap.add_argument("--steps", type=int, default=5)
  args = ap.parse_args()
  if args.side:
    fn = side_jax if args.side == "jax" else side_torch
    print(json.dumps(fn(args.ckpt, args.steps)))
    return

  import torch
  from transformers import LlavaNextForConditionalGeneration
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as tmp:
    LlavaNextForConditionalGeneration(common.hf_torch_config()).save_pretrained(tmp)
    extra = [f"--ckpt={tmp}", f"--steps={args.steps}"]
    ours = common.run_side(__file__, "jax", extra)
    ref = common.run_side(__file__, "torch", extra)
  cfg = common.bench_config()
  tiles = 5
  flops = common.analytic_train_flops(cfg, common.SEQ, common.BATCH, tiles)
  peak = max(ours["peak_flops"], ref["peak_flops"])
  tokens = common.BATCH * common.SEQ
  rows = [("ours (JAX)", ours), ("transformers (PyTorch)", ref)]
  print(f"config: {ours['params'] / 1e6:.1f}M params, batch {common.BATCH} x seq {common.SEQ}, {tiles} tiles/image, "
        f"fp32 CPU; model FLOPs/step {flops / 1e9:.1f} G; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s "
        f"(jax {ours['peak_flops'] / 1e9:.0f}, torch {ref['peak_flops'] / 1e9:.0f})")
  for name, r in rows:
    print(f"{name:24s} {tokens / r['step_s']:8.0f} tokens/s  {r['step_s'] * 1e3:7.0f} ms/step  "
          f"MFU {flops / r['step_s'] / peak:6.1%}  peak RSS {r['peak_rss_mib']:6.0f} MiB  loss {r['loss']:.4f}")
  print(f"ratio ours / transformers: {ref['step_s'] / ours['step_s']:.2f}x (goal >= 1.2x)")


if __name__ == "__main__":
  main()
