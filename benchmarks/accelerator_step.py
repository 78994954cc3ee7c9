"""One accelerator chip: the SFT and DPO train steps of a LLaVA-NeXT with LLaMA-3-8B-shaped decoder layers.

LLaVA-NeXT LLaMA-3-8B + CLIP-L/336 (configs/models.py `llava-next-llama3-8b`: d 4096, 32 heads over 8 KV heads,
MLP 14336, vocabulary 128256) with as many decoder layers as fit the chip: the per-layer and fixed state
bytes come from the model's own shapes (fp32 master weights, AdamW moments and gradients of the trained
parameters; the vision tower is frozen; DPO adds the frozen reference copy), an activation reserve is kept, and
the step is compiled ahead of time and shrunk until XLA's memory analysis fits `--memory_fraction` of the
chip's memory (`device.memory_stats()["bytes_limit"]`). bf16 compute, scanned layers, one row of `--seq`
(default 4096) tokens per step with one 672x672 image (5 AnyRes tiles, ~2,900 image tokens) and the reply
after it trained. The steps are the library's own (`train.state.build_train_state`, `train.tasks`,
`train.steps.make_train_step` / `compile_train_step`: what `insightv-train` runs), from configs/sft_reasoning.py
and configs/dpo.py (reference = a frozen copy of the policy, NLL on the chosen reply).

Prints, per task: layers, parameters, per-device memory, step time, tokens/s (DPO: pairs/s too, and the tokens
of all rows: configs/dpo.py's shared-prompt rows, one per pair) and MFU = the analytic model FLOPs of the step
(train/flops.py: 6 x params x tokens + attention, vision tower included) / step time / the chip's bf16 peak
(train/flops.py PEAK_FLOPS by device kind, or --peak_flops).

    python benchmarks/accelerator_step.py [--attention=auto|xla|cudnn|splash] [--task=both|sft|dpo] [--layers=0]
        [--seq=4096] [--remat=dots_saveable] [--steps=5]
    python benchmarks/accelerator_step.py --tiny     # tiny shapes on CPU: checks the script end to end

Status: written and checked on CPU with --tiny only. It was NOT run on a GPU or TPU in the session that
wrote it (no accelerator was lent to that session), so README has no accelerator numbers yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

GIB = 2**30
IMAGE_HW = {"8b": (672, 672), "tiny": (56, 56)}  # a 2 x 2 AnyRes grid + the base tile: 5 tiles
QUESTION_TOKENS = 64  # text before the reply, after the image


def job_config(task: str, variant: str, args, layers: int):
  """configs/sft_reasoning.py or configs/dpo.py (variant "8b" or "tiny") on one device, `layers` decoder layers."""
  from configs import dpo, sft_reasoning
  c = (dpo if task == "dpo" else sft_reasoning).get_config(variant)
  c.model.hf_config.text_config.num_hidden_layers = layers
  c.model.attention = args.attention
  c.model.dtype = args.dtype
  c.model.remat = args.remat
  c.model.scan_layers = True
  c.data.max_len = args.seq
  c.data.batch_size = args.batch
  c.optim.accum_steps = 1
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  return c


def state_bytes(task: str, variant: str, args, layers: int) -> float:
  """Bytes of the train state plus the gradients: 16 per trained parameter (fp32 weight, two fp32 AdamW
  moments, fp32 gradient), 4 per frozen one, and 4 per parameter of DPO's frozen reference copy."""
  import jax
  from flax import nnx

  from insightv_jax.model.llava import abstract_model
  from insightv_jax.train import optim
  from insightv_jax.train import state as state_lib
  c = job_config(task, variant, args, layers)
  _, abs_state = nnx.split(abstract_model(state_lib.model_config(c.model)))
  params = nnx.to_pure_dict(abs_state)
  mask = optim.trainable_mask(params, list(c.optim.freeze))
  total = 0
  for x, trained in zip(jax.tree.leaves(params), jax.tree.leaves(mask)):
    n = int(np.prod(x.shape))
    total += n * (16 if trained else 4) + (n * 4 if task == "dpo" else 0)
  return float(total)


def layers_that_fit(task: str, args, limit: float) -> int:
  """First guess from the state bytes: (limit x fraction x (1 - activation reserve) - fixed) / per layer."""
  one, two = state_bytes(task, "8b", args, 1), state_bytes(task, "8b", args, 2)
  per_layer, fixed = two - one, one - (two - one)
  budget = limit * args.memory_fraction * (1 - args.activation_reserve) - fixed
  print(f"[{task}] state: {fixed / GIB:.1f} GiB fixed (embeddings, LM head, vision tower) + {per_layer / GIB:.2f} "
        f"GiB per decoder layer; chip memory {limit / GIB:.1f} GiB")
  return max(1, min(32, int(budget // per_layer)))


def synthetic_batch(task_obj, config, mc, mesh, variant: str):
  """A batch of the compiled step's shapes: one image per row, then a question, then the (trained) reply."""
  import jax

  from insightv_jax.data import loader, shared_pairs
  from insightv_jax.data.batches import DpoBatch, SftBatch, SharedDpoBatch, TokenRows
  from insightv_jax.data.images import ImageProcessorConfig
  abstract = task_obj.abstract_batch(config, mc, mesh)
  rng = np.random.default_rng(0)
  proc = ImageProcessorConfig.for_model(mc)
  h, w = IMAGE_HW[variant]
  n_img = proc.num_image_tokens(h, w)
  b, t = config.data.batch_size, config.data.max_len
  start = 4 + n_img + QUESTION_TOKENS
  if start >= t:
    raise ValueError(f"--seq={t} leaves no reply after the {n_img}-token image and the question")

  def rows(seed: int) -> TokenRows:
    r = np.random.default_rng(seed)
    ids = r.integers(0, mc.text.vocab_size - 1, (b, t)).astype(np.int32)
    ids[:, 4:4 + n_img] = mc.image_token_index
    loss = np.zeros((b, t), np.int32)
    loss[:, start:] = 1
    return TokenRows(input_ids=ids, loss_mask=loss, segment_ids=np.ones((b, t), np.int32),
                     positions=np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy())

  images = dict(pixel_values=rng.standard_normal(abstract.pixel_values.shape).astype(np.float32),
                image_sizes=np.tile(np.asarray([[h, w]], np.int32), (abstract.image_sizes.shape[0], 1)))
  if isinstance(abstract, (DpoBatch, SharedDpoBatch)):
    chosen, rejected = rows(1), rows(2)
    rejected.input_ids[:, :start] = chosen.input_ids[:, :start]  # the same prompt, another reply
    batch = DpoBatch(chosen=chosen, rejected=rejected, ref_logps=None, **images)
    if isinstance(abstract, SharedDpoBatch):  # each pair in one row: the prompt, then both replies cut to fit
      side = lambda x, i: (x.input_ids[i], x.loss_mask[i])
      pairs = [[shared_pairs.share_prompt(side(chosen, i), side(rejected, i), max_len=t)] for i in range(b)]
      tokens, branches = loader.layout(pairs, t, 0, branched=True)
      batch = SharedDpoBatch(tokens=tokens, branches=branches, ref_logps=None, **images)
  else:
    batch = SftBatch(tokens=rows(1), **images)
  return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), batch, abstract), abstract


def compile_for(task: str, variant: str, args, layers: int):
  """(config, model config, task, mesh, setup, compiled step, batch, abstract batch) for `layers` layers."""
  import jax

  from insightv_jax import sharding
  from insightv_jax.train import optim, steps, tasks
  from insightv_jax.train import state as state_lib
  config = job_config(task, variant, args, layers)
  task_obj = tasks.get(config.task)
  mc = state_lib.model_config(config.model)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  abstract_setup = state_lib.build_train_state(config, mc, mesh, reference_model=task_obj.reference_model(config),
                                               abstract=True)
  step_fn = steps.make_train_step(abstract_setup.graphdef, task_obj.loss(config), abstract_setup.tx,
                                  abstract_setup.trainable, schedule=optim.lr_schedule(config.optim))
  batch_abstract = task_obj.abstract_batch(config, mc, mesh)
  t0 = time.perf_counter()
  compiled = steps.compile_train_step(step_fn, abstract_setup.state, batch_abstract, mesh)
  return dict(config=config, mc=mc, task=task_obj, mesh=mesh, compiled=compiled, compile_s=time.perf_counter() - t0,
              memory=steps.memory_gib(compiled), params=abstract_setup.param_counts())


def fit_and_compile(task: str, variant: str, args, limit: float | None) -> dict:
  """Compiles with `--layers`, or with the most layers whose compiled peak fits the chip (at most 4 compiles)."""
  if args.layers or limit is None:
    from configs import models
    preset = models.get_config("tiny" if variant == "tiny" else "llava-next-llama3-8b")
    return compile_for(task, variant, args, args.layers or preset.text_config.num_hidden_layers)
  layers = layers_that_fit(task, args, limit)
  allowed = limit * args.memory_fraction / GIB
  for _ in range(4):
    built = compile_for(task, variant, args, layers)
    peak = (built["memory"] or {}).get("peak_estimate", 0.0)
    print(f"[{task}] {layers} layers: compiled in {built['compile_s']:.0f} s, peak estimate {peak:.1f} GiB "
          f"(allowed {allowed:.1f} GiB)")
    if peak <= allowed or layers == 1:
      return built
    per_layer = peak / (layers + 4)  # generous: the fixed part counts as ~4 layers
    layers = max(1, layers - max(1, int(np.ceil((peak - allowed) / per_layer))))
  return built


def run_task(task: str, variant: str, args, limit: float | None, peak_flops: float) -> dict:
  import jax

  from insightv_jax.train import state as state_lib
  built = fit_and_compile(task, variant, args, limit)
  config, mc, task_obj, mesh = built["config"], built["mc"], built["task"], built["mesh"]
  setup = state_lib.build_train_state(config, mc, mesh, reference_model=task_obj.reference_model(config))
  state = setup.state
  del setup
  batch, _ = synthetic_batch(task_obj, config, mc, mesh, variant)
  compiled = built["compiled"]
  for _ in range(2):  # warm-up (first-call allocations, autotuning)
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - t0) / args.steps
  rows = config.data.batch_size
  tokens = rows * config.data.max_len
  flops = task_obj.step_flops(config, mc)
  return {"task": task, "layers": mc.text.num_hidden_layers, "params_billion": built["params"][0] / 1e9,
          "trained_billion": built["params"][1] / 1e9, "attention": mc.attention, "dtype": mc.dtype,
          "remat": mc.remat, "seq": config.data.max_len, "rows": rows, "step_s": step_s,
          "tokens_per_s": tokens / step_s, "sequences_per_step": rows * task_obj.flops_rows(config),
          "all_tokens_per_s": tokens * task_obj.flops_rows(config) / step_s, "model_tflops_per_step": flops / 1e12,
          "mfu": flops / step_s / peak_flops if peak_flops else None, "loss": float(metrics["loss"]),
          "per_device_GiB": built["memory"], "compile_s": built["compile_s"]}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--attention", default="auto", choices=["auto", "xla", "cudnn", "splash"])
  ap.add_argument("--task", default="both", choices=["both", "sft", "dpo"])
  ap.add_argument("--layers", type=int, default=0, help="decoder layers (0: as many as fit the chip)")
  ap.add_argument("--seq", type=int, default=0, help="tokens per row (default 4096; 256 with --tiny)")
  ap.add_argument("--batch", type=int, default=1, help="rows (DPO: pairs) per step")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--remat", default="dots_saveable", choices=["none", "full", "dots_saveable", "nothing_saveable"])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--memory_fraction", type=float, default=0.9, help="of the chip's memory the step may use")
  ap.add_argument("--activation_reserve", type=float, default=0.25, help="of that, kept for activations at first")
  ap.add_argument("--peak_flops", type=float, default=0.0, help="bf16 peak FLOP/s of the chip (0: by device kind)")
  ap.add_argument("--tiny", action="store_true", help="tiny model and sequence (checks the script on CPU)")
  args = ap.parse_args()
  args.seq = args.seq or (256 if args.tiny else 4096)
  variant = "tiny" if args.tiny else "8b"

  import jax

  from insightv_jax.train.flops import device_peak
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  limit = None if args.tiny else stats.get("bytes_limit")
  peak = args.peak_flops or device_peak(device.device_kind)
  if not args.tiny and device.platform == "cpu":
    print("warning: no accelerator here; the 8B-shaped step on CPU is only a (very slow) smoke test: use --tiny")
  print(f"device: {device.device_kind} ({device.platform}), memory limit "
        f"{'n/a' if limit is None else f'{limit / GIB:.1f} GiB'}, bf16 peak "
        f"{'n/a' if not peak else f'{peak / 1e12:.0f} TFLOP/s'}; {time.strftime('%Y-%m-%d')}")
  results = []
  for task in (("sft", "dpo") if args.task == "both" else (args.task,)):
    r = run_task(task, variant, args, limit, peak)
    results.append(r)
    mfu = "n/a (no peak for this device)" if r["mfu"] is None else f"{r['mfu']:.1%}"
    extra = (f", {r['rows'] / r['step_s']:.2f} pairs/s, {r['all_tokens_per_s']:,.0f} tokens/s of all "
             f"{r['sequences_per_step']} rows" if task == "dpo" else "")
    print(f"[{task}] {r['layers']} layers ({r['params_billion']:.2f}B params, {r['trained_billion']:.2f}B trained), "
          f"attention {r['attention']}, {r['dtype']}, remat {r['remat']}, {r['rows']} x {r['seq']} tokens: "
          f"{r['step_s'] * 1e3:.0f} ms/step, {r['tokens_per_s']:,.0f} tokens/s{extra}, "
          f"{r['model_tflops_per_step']:.1f} model TFLOP/step, MFU {mfu}; "
          f"memory/device {json.dumps(r['per_device_GiB'])}")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
