"""Greedy decode throughput: our jitted KV-cache sampler vs transformers' PyTorch `generate` (KV cache).

Same config (benchmarks/common.py), same weights, batch 8, a 64-token text prompt per row (different lengths,
left-padded), 128 new tokens, greedy, fp32 CPU, both in this run (each side in its own process). Prints
tokens/s of each, the ratio (goal >= 3x) and whether the greedy tokens agree.

    python benchmarks/generate.py
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
  ap.add_argument("--side", choices=["jax", "torch"])
  ap.add_argument("--ckpt")
  args = ap.parse_args()
  if args.side:
    print(json.dumps((side_jax if args.side == "jax" else side_torch)(args.ckpt)))
    return
  import torch
  from transformers import LlavaNextForConditionalGeneration
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as tmp:
    LlavaNextForConditionalGeneration(common.hf_torch_config()).save_pretrained(tmp)
    ours = common.run_side(__file__, "jax", [f"--ckpt={tmp}"])
    ref = common.run_side(__file__, "torch", [f"--ckpt={tmp}"])
  n = BATCH * NEW
  agree = float(np.mean(np.asarray(ours["tokens"]) == np.asarray(ref["tokens"])))
  print(f"greedy decode, batch {BATCH}, prompt {PROMPT} (left-padded), {NEW} new tokens, fp32 CPU")
  print(f"ours (JAX)               {n / ours['seconds']:8.1f} tokens/s  ({ours['seconds']:.2f} s)")
  print(f"transformers (PyTorch)   {n / ref['seconds']:8.1f} tokens/s  ({ref['seconds']:.2f} s)")
  print(f"ratio ours / transformers: {ref['seconds'] / ours['seconds']:.2f}x (goal >= 3x); "
        f"greedy tokens agree: {agree:.1%}")


if __name__ == "__main__":
  main()
