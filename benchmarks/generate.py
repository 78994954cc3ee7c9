"""Decode throughput of our jitted KV-cache sampler, two comparisons, each measured in this run.

vs_torch: greedy decode vs transformers' PyTorch `generate` (KV cache). Same config (benchmarks/common.py),
  same weights, batch 8, a 64-token text prompt per row (different lengths, left-padded), 128 new tokens,
  greedy, fp32 CPU, each side in its own process. Prints tokens/s of each, the ratio (goal >= 3x) and whether
  the greedy tokens agree.
samples: n samples per prompt, as iterative DPO and the local data-generation backend ask them: 8 prompts,
  each with its own image (5 AnyRes tiles, ~330 image tokens) and question, 8 samples each (64 rows), 128 new
  tokens at temperature 1 / top-p 0.95 with one seed per row. Grouped (`generate(..., num_samples=8)`: each
  prompt prefilled once) vs the same prompts repeated 8 times (64 prefills), same program otherwise, same
  process, alternating, best of `--repeats` each. Prints tokens/s both ways, the ratio (goal >= 1.5x) and
  whether the 64 rows are token-identical (they must be). In the same process it also times the grouped program
  greedy (temperature 0) and with 1 new token, so that the decode step's cost at 64 rows reads greedy vs sampled:
  per step = (seconds at 128 new tokens - seconds at 1) / 127 (no row stops: no eos ids). The load average is
  printed next to the numbers (only same-run ratios compare on a shared machine).

    python benchmarks/generate.py [--part=all|vs_torch|samples] [--repeats=2]
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

BATCH, PROMPT, NEW = 8, 64, 128
PROMPTS, SAMPLES = 8, 8  # the samples part: prompts x samples per prompt
IMAGE_HW = [(600, 600), (500, 700), (700, 450), (640, 640), (480, 600), (620, 520), (560, 700), (700, 700)]


def prompts():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 8000, (BATCH, PROMPT)).astype(np.int32)
  mask = np.ones_like(ids)
  for r in range(BATCH):
    mask[r, :r * 3] = 0  # rows of different lengths, left-padded
    ids[r, :r * 3] = 0
  return ids, mask


def side_jax(ckpt):
  import jax

  from insightv_jax.hf import load_llava_next
  from insightv_jax.infer import generate
  model = load_llava_next(ckpt)
  ids, mask = prompts()
  run = lambda: generate(model, ids, attention_mask=mask, max_new_tokens=NEW)
  jax.block_until_ready(run())  # compile
  t0 = time.perf_counter()
  out = jax.block_until_ready(run())
  dt = time.perf_counter() - t0
  return {"side": "jax", "seconds": dt, "tokens": np.asarray(out).tolist()}


def image_prompts(cfg):
  """PROMPTS left-padded prompts: a few text tokens, one image's tokens, a question of 12-40 tokens."""
  from PIL import Image

  from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
  from insightv_jax.infer import bucket_length
  rng = np.random.default_rng(1)
  proc = ImageProcessorConfig.for_model(cfg)
  items = [preprocess(Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)), proc) for hw in IMAGE_HW]
  pixel_values, sizes = stack_batch(items)
  rows = []
  for (h, w), extra in zip(sizes, range(12, 41, 4)):
    n_img = proc.num_image_tokens(int(h), int(w))
    rows.append(np.concatenate([rng.integers(0, cfg.text.vocab_size - 1, 4), np.full(n_img, cfg.image_token_index),
                                rng.integers(0, cfg.text.vocab_size - 1, extra)]))
  t = bucket_length(max(len(r) for r in rows))
  ids = np.zeros((PROMPTS, t), np.int32)
  mask = np.zeros_like(ids)
  for i, r in enumerate(rows):
    ids[i, t - len(r):] = r
    mask[i, t - len(r):] = 1
  return ids, mask, pixel_values, sizes


def side_samples(ckpt, repeats):
  import jax
  import jax.numpy as jnp

  from insightv_jax.hf import load_llava_next
  from insightv_jax.infer import generate
  model = load_llava_next(ckpt)
  ids, mask, pv, sizes = image_prompts(model.cfg)
  seeds = np.arange(PROMPTS * SAMPLES, dtype=np.uint32) * 7919 + 1
  kw = dict(max_new_tokens=NEW, temperature=1.0, top_p=0.95, seed=seeds)
  rep = lambda x: np.repeat(x, SAMPLES, axis=0)
  grouped = lambda **k: lambda: generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, num_samples=SAMPLES,
                                         **{**kw, **k})
  runs = {"grouped": grouped(),
          "repeated": lambda: generate(model, rep(ids), jnp.asarray(rep(pv)), jnp.asarray(rep(sizes)), rep(mask), **kw),
          "greedy": grouped(temperature=0.0), "prefill": grouped(max_new_tokens=1)}
  out = {name: np.asarray(jax.block_until_ready(run())) for name, run in runs.items()}  # compile
  best = {name: float("inf") for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      best[name] = min(best[name], time.perf_counter() - t0)
  load = common.load_average()
  return {"side": "samples", "seconds": best, "prompt_len": int(ids.shape[1]), "load": load,
          "image_tokens": [int(x) for x in (ids == model.cfg.image_token_index).sum(1)],
          "identical": bool((out["grouped"] == out["repeated"]).all())}


def side_torch(ckpt):
  import torch
  from transformers import LlavaNextForConditionalGeneration
  torch.set_num_threads(os.cpu_count())
  model = LlavaNextForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
  ids, mask = prompts()
  kw = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
            max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0, eos_token_id=None)
  with torch.no_grad():
    model.generate(**{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm up
    t0 = time.perf_counter()
    out = model.generate(**kw)
    dt = time.perf_counter() - t0
  return {"side": "torch", "seconds": dt, "tokens": out[:, PROMPT:].numpy().tolist()}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--side", choices=["jax", "torch", "samples"])
  ap.add_argument("--ckpt")
  ap.add_argument("--part", choices=["all", "vs_torch", "samples"], default="all")
  ap.add_argument("--repeats", type=int, default=2)
  args = ap.parse_args()
  if args.side:
    fn = {"jax": side_jax, "torch": side_torch, "samples": lambda c: side_samples(c, args.repeats)}[args.side]
    print(json.dumps(fn(args.ckpt)))
    return
  import torch
  from transformers import LlavaNextForConditionalGeneration
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as tmp:
    LlavaNextForConditionalGeneration(common.hf_torch_config()).save_pretrained(tmp)
    if args.part in ("all", "vs_torch"):
      ours = common.run_side(__file__, "jax", [f"--ckpt={tmp}"])
      ref = common.run_side(__file__, "torch", [f"--ckpt={tmp}"])
    if args.part in ("all", "samples"):
      group = common.run_side(__file__, "samples", [f"--ckpt={tmp}", f"--repeats={args.repeats}"])
  if args.part in ("all", "vs_torch"):
    n = BATCH * NEW
    agree = float(np.mean(np.asarray(ours["tokens"]) == np.asarray(ref["tokens"])))
    print(f"greedy decode, batch {BATCH}, prompt {PROMPT} (left-padded), {NEW} new tokens, fp32 CPU")
    print(f"ours (JAX)               {n / ours['seconds']:8.1f} tokens/s  ({ours['seconds']:.2f} s)")
    print(f"transformers (PyTorch)   {n / ref['seconds']:8.1f} tokens/s  ({ref['seconds']:.2f} s)")
    print(f"ratio ours / transformers: {ref['seconds'] / ours['seconds']:.2f}x (goal >= 3x); "
          f"greedy tokens agree: {agree:.1%}")
  if args.part in ("all", "samples"):
    n = PROMPTS * SAMPLES * NEW
    sec = group["seconds"]
    print(f"{SAMPLES} samples x {PROMPTS} prompts with an image (prompt {group['prompt_len']} tokens, "
          f"{min(group['image_tokens'])}-{max(group['image_tokens'])} image tokens), {NEW} new tokens, "
          f"temperature 1.0, top-p 0.95, fp32 CPU, best of {args.repeats}")
    print(f"grouped (one prefill per prompt)   {n / sec['grouped']:8.1f} tokens/s  ({sec['grouped']:.2f} s)")
    print(f"repeated prompts ({SAMPLES}x prefill)     {n / sec['repeated']:8.1f} tokens/s  ({sec['repeated']:.2f} s)")
    print(f"ratio grouped / repeated: {sec['repeated'] / sec['grouped']:.2f}x (goal >= 1.5x); "
          f"rows token-identical: {group['identical']}")
    step = {k: (sec[k] - sec["prefill"]) / (NEW - 1) * 1e3 for k in ("greedy", "grouped")}
    print(f"decode step at {PROMPTS * SAMPLES} rows: greedy {step['greedy']:.1f} ms, sampled (T=1.0, top-p 0.95) "
          f"{step['grouped']:.1f} ms, ratio {step['grouped'] / step['greedy']:.2f}x; prefill + 1 token "
          f"{sec['prefill']:.2f} s; load average {group['load']}")


if __name__ == "__main__":
  main()
