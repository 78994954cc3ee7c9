"""The one small benchmark config shared by every benchmark, and helpers to measure fairly.

BENCH: LLaVA-NeXT with a CLIP-style tower on 336-px tiles (patch 42 -> 8 x 8 tokens per tile, so AnyRes
prompts fit a 512-token sequence) and a LLaMA decoder of ~30M parameters. Batch 4, sequence 512.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

BATCH, SEQ = 4, 512

BENCH_HF_CONFIG = dict(
    model_type="llava_next",
    vision_config=dict(model_type="clip_vision_model", hidden_size=256, intermediate_size=1024,
                       num_hidden_layers=4, num_attention_heads=4, image_size=336, patch_size=42,
                       hidden_act="quick_gelu", layer_norm_eps=1e-5),
    text_config=dict(model_type="llama", vocab_size=8192, hidden_size=512, intermediate_size=1408,
                     num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                     max_position_embeddings=2048, rms_norm_eps=1e-5,
                     rope_parameters=dict(rope_type="default", rope_theta=500000.0), tie_word_embeddings=False),
    image_token_index=8191, image_grid_pinpoints=[[336, 672], [672, 336], [672, 672]],
    vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    multimodal_projector_bias=True, tie_word_embeddings=False)


def bench_config():
  from insightv_jax.model.config import LlavaConfig
  return LlavaConfig.from_hf(BENCH_HF_CONFIG)


def hf_torch_config():
  from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig
  d = {k: v for k, v in BENCH_HF_CONFIG.items() if k not in ("vision_config", "text_config", "model_type")}
  v = {k: x for k, x in BENCH_HF_CONFIG["vision_config"].items() if k != "model_type"}
  t = {k: x for k, x in BENCH_HF_CONFIG["text_config"].items() if k not in ("model_type", "rope_parameters")}
  t["rope_theta"] = BENCH_HF_CONFIG["text_config"]["rope_parameters"]["rope_theta"]
  return LlavaNextConfig(vision_config=CLIPVisionConfig(**v), text_config=LlamaConfig(**t), **d)


def analytic_train_flops(cfg, seq: int, batch: int, tiles: int) -> float:
  from insightv_jax.train.flops import train_flops
  return train_flops(cfg, seq, batch, tiles)


def matmul_peak_jax(n: int = 2048, reps: int = 20) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t0)


def matmul_peak_torch(n: int = 2048, reps: int = 20) -> float:
  import torch
  a = torch.ones(n, n)
  a @ a
  t0 = time.perf_counter()
  for _ in range(reps):
    a @ a
  return 2 * n**3 * reps / (time.perf_counter() - t0)


def machine() -> str:
  """'<cpu model>, <n> cores' of this machine (benchmarks print it beside their numbers)."""
  model = platform.processor() or "unknown cpu"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {os.cpu_count()} cores"


def load_average() -> str:
  """The 1, 5 and 15 min load averages (printed before each timed side: only an idle machine times fairly)."""
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def round_up(n: int, m: int = 64) -> int:
  """n rounded up to a multiple of m (our row lengths: one compiled shape per 64 tokens)."""
  return -(-n // m) * m


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_calls(one, steps: int, warmup: int = 2):
  """Calls one() `warmup` times, then `steps` times, each timed -> (last result, [seconds per timed call])."""
  for _ in range(warmup):
    one()
  times, out = [], None
  for _ in range(steps):
    t0 = time.perf_counter()
    out = one()
    times.append(time.perf_counter() - t0)
  return out, times


def time_jax_step(step, state, batch, steps: int, warmup: int = 2):
  """A jitted train step compiled for (state, batch), then `time_calls`'d (state threaded through, each call
  waited for) -> (state, last metrics, [seconds per timed step], compile seconds)."""
  import jax
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  box = {"state": state}

  def one():
    box["state"], metrics = compiled(box["state"], batch)
    jax.block_until_ready(box["state"])
    return metrics

  metrics, times = time_calls(one, steps, warmup)
  return box["state"], metrics, times, compile_s


def run_side(script: str, side: str, extra=()) -> dict:
  """Runs `script --side=side` in a fresh process (so peak memory is its own) and returns its JSON line."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, script, f"--side={side}", *extra], capture_output=True, text=True,
                       env=env, timeout=1800)
  if out.returncode:
    raise RuntimeError(f"{script} --side={side} failed:\n{out.stderr[-4000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])
