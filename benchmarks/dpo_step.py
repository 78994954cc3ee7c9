"""DPO train-step throughput: our jitted step with shared-prompt rows vs TRL's `DPOTrainer`, vs our unshared rows,
and vs our step on precomputed reference log-probs (no reference forward).

Same model (benchmarks/common.py: the ~30M-parameter LLaVA-NeXT, built once by transformers and saved, so both
sides start from the same weights), same pairs: PAIRS pairs, each a 600x600 image (5 AnyRes tiles) inside a
prompt, then a 256-token chosen and a 256-token rejected reply; sigmoid DPO, beta 0.1, against a frozen reference
model (its forward is part of every step on all sides but "ours precomputed"), AdamW, fp32 on CPU, every parameter
trained.

    ours shared     one row per pair: [prompt | chosen | rejected] (`SharedDpoBatch`): the prompt runs once
    ours unshared   two rows per pair: [prompt | chosen], [prompt | rejected] (`DpoBatch`), the image encoded once
    ours precomputed  the shared rows with the reference log-probs in the batch (`ref_logps`, as
                    insightv_jax/train/reference.py writes them into the records): no reference model in the state,
                    no reference forward in the step (dpo.reference="precomputed"); the log-probs are computed once,
                    before timing, by the reference params on the same batch
    TRL             `DPOTrainer.training_step` (its own loss code, fused LM head, reference forward) then the
                    optimizer step, on the batch its vision collator would build from these pairs: 2 x PAIRS rows
                    [prompt | reply] and the image once per row (TRL encodes it for chosen and again for rejected)

Each side runs in its own process (peak memory is its own), two warm-up steps first, then `--steps` steps timed
one by one. On a machine shared with other jobs a step is slowed by whatever else runs then, so each side's
fastest step is its number (the median is printed beside it); the ratios printed are of sides measured in this
run. Before timing, the chosen / rejected log-probs of the first pair are printed for every side (same weights,
same tokens: they must agree).

    python benchmarks/dpo_step.py [--steps=4] [--sides=shared,unshared,precomputed,trl]
    python benchmarks/dpo_step.py --steps=2 --sides=shared,precomputed     # quick: the precomputed-reference ratio
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

PAIRS, REPLY, QUESTION = 4, 256, 24  # pairs per step, tokens per reply, question + template tokens after the image
IMAGE_HW = (600, 600)  # 5 AnyRes tiles on the benchmark model (a 2x2 grid of 336-px tiles + the base tile)
BETA = 0.1
SIDES = ("shared", "unshared", "precomputed", "trl")


def make_pairs(cfg, seed: int = 0):
  """-> (prompt ids [P], chosen ids [R], rejected ids [R] per pair, pixel_values [PAIRS, 5, 3, 336, 336], sizes)."""
  from PIL import Image

  from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
  rng = np.random.default_rng(seed)
  proc = ImageProcessorConfig.for_model(cfg)
  items = [preprocess(Image.fromarray(rng.integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8)), proc)
           for _ in range(PAIRS)]
  pixel_values, sizes = stack_batch(items)
  n_img = proc.num_image_tokens(*IMAGE_HW)
  vocab = cfg.text.vocab_size - 1  # the last id is the image token
  prompts = []
  for _ in range(PAIRS):
    p = rng.integers(0, vocab, 4 + n_img + QUESTION).astype(np.int32)
    p[4:4 + n_img] = cfg.image_token_index
    prompts.append(p)
  chosen = [rng.integers(0, vocab, REPLY).astype(np.int32) for _ in range(PAIRS)]
  rejected = [rng.integers(0, vocab, REPLY).astype(np.int32) for _ in range(PAIRS)]
  return prompts, chosen, rejected, pixel_values, sizes


def our_batch(cfg, shared: bool):
  """The pairs as the loader lays them out: `SharedDpoBatch` rows or `DpoBatch` rows (padded to 64 tokens)."""
  from insightv_jax.data import loader, shared_pairs
  from insightv_jax.data.batches import DpoBatch, SharedDpoBatch
  prompts, chosen, rejected, pv, sizes = make_pairs(cfg)
  side = lambda p, r: (np.concatenate([p, r]), np.concatenate([np.zeros(len(p), np.int32), np.ones(len(r), np.int32)]))
  rows_c = [side(p, c) for p, c in zip(prompts, chosen)]
  rows_r = [side(p, r) for p, r in zip(prompts, rejected)]
  images = dict(pixel_values=pv, image_sizes=sizes)
  if shared:
    rows = [shared_pairs.share_prompt(c, r, max_len=10**6) for c, r in zip(rows_c, rows_r)]
    length = common.round_up(max(len(r[0]) for r in rows))
    tokens, branches = loader.layout([[r] for r in rows], length, 0, branched=True)
    return SharedDpoBatch(tokens=tokens, branches=branches, **images)
  t = common.round_up(max(len(r[0]) for r in rows_c + rows_r))
  return DpoBatch(chosen=loader.layout([[r] for r in rows_c], t, 0)[0],
                  rejected=loader.layout([[r] for r in rows_r], t, 0)[0], **images)


def side_jax(ckpt: str, steps: int, shared: bool, precomputed: bool = False) -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from insightv_jax.hf import load_llava_next
  from insightv_jax.train import steps as steps_lib
  model = load_llava_next(ckpt)
  batch = jax.tree.map(jnp.asarray, our_batch(model.cfg, shared))
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  logp, _ = jax.jit(lambda p, b: steps_lib.pair_logprobs(graphdef, p, b, chunk=256))(params, batch)
  tx = optax.adamw(1e-5)
  trainable = jax.tree.map(lambda _: True, params)
  loss_fn = lambda g, p, b, ref: steps_lib.dpo_loss(g, p, b, beta=BETA, chunk=256, ref_params=ref)
  step = jax.jit(steps_lib.make_train_step(graphdef, loss_fn, tx, trainable), donate_argnums=0)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  if precomputed:  # the reference's log-probs travel with the batch ([B, K, 2] shared, [B, 2] unshared)
    b = logp.shape[0] // 2
    ref = jnp.stack([logp[:b], logp[b:]], axis=-1)
    batch = batch.replace(ref_logps=ref.reshape((-1, 1, 2) if shared else (-1, 2)))
  else:
    state["ref_params"] = jax.tree.map(jnp.copy, params)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  rows = batch.tokens.input_ids.shape if shared else (2 * PAIRS, batch.chosen.input_ids.shape[1])
  name = "precomputed" if precomputed else "shared" if shared else "unshared"
  return {"side": name, "times": times, "compile_s": compile_s,
          "loss": float(metrics["loss"]), "logp_first_pair": [float(logp[0]), float(logp[PAIRS])],
          "rows": list(rows), "peak_rss_mib": common.peak_rss_mib()}


def trl_inputs(cfg):
  """The batch TRL's `DataCollatorForVisionPreference` builds from these pairs: chosen rows then rejected rows,
  [prompt | reply] (equal lengths here, so no padding), completion_mask on the replies, the image per row."""
  import torch
  prompts, chosen, rejected, pv, sizes = make_pairs(cfg)
  ids = np.stack([np.concatenate([p, r]) for p, r in zip(prompts * 2, chosen + rejected)])
  completion = np.zeros_like(ids)
  completion[:, len(prompts[0]):] = 1
  return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.ones(ids.shape, dtype=torch.long),
          "completion_mask": torch.tensor(completion, dtype=torch.long),
          "pixel_values": torch.tensor(np.concatenate([pv, pv])),
          "image_sizes": torch.tensor(np.concatenate([sizes, sizes]))}


def side_trl(ckpt: str, steps: int) -> dict:
  import datasets
  import torch
  import trl
  from transformers import LlavaNextForConditionalGeneration

  from insightv_jax.checkpoints import read_config
  from insightv_jax.data.tokenizer import train_bpe
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  load = lambda: LlavaNextForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)
  model, ref_model = load(), load()
  tok = train_bpe(["a small tokenizer: TRL wants one; the timed batch is built from token ids"] * 4, 300)
  # a one-pair text dataset only to construct the trainer; every timed step runs on `trl_inputs`
  data = datasets.Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]})
  with tempfile.TemporaryDirectory() as out:
    args = trl.DPOConfig(output_dir=out, per_device_train_batch_size=PAIRS, beta=BETA, loss_type=["sigmoid"],
                         learning_rate=1e-5, use_cpu=True, report_to=[], bf16=False, fp16=False, max_length=None,
                         save_strategy="no", logging_strategy="no", seed=0,
                         # DPOConfig turns gradient checkpointing on by default (dpo_config.py); ours recomputes
                         # nothing here, so neither side does (runs before 2026-12-07 had it on: TRL recomputed)
                         gradient_checkpointing=False)
    trainer = trl.DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data, processing_class=tok)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before each training_step
    inputs = trl_inputs(read_config(f"hf:{ckpt}"))
    with torch.no_grad():
      labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
      kw = {k: v for k, v in inputs.items() if k != "completion_mask"}
      lp = trainer.model(**kw, labels=labels, use_cache=False, fused_lm_head=True).log_probs.sum(1)

    def one():
      loss = trainer.training_step(trainer.model, inputs)
      trainer.optimizer.step()
      trainer.optimizer.zero_grad(set_to_none=True)
      return float(loss)

    for _ in range(2):
      one()
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      loss = one()
      times.append(time.perf_counter() - t0)
  return {"side": "trl", "times": times, "loss": loss, "logp_first_pair": [float(lp[0]), float(lp[PAIRS])],
          "rows": list(inputs["input_ids"].shape), "trl": trl.__version__, "torch": torch.__version__,
          "peak_rss_mib": common.peak_rss_mib()}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--side", choices=SIDES)
  ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides to run (default: all)")
  ap.add_argument("--ckpt")
  ap.add_argument("--steps", type=int, default=4)
  args = ap.parse_args()
  if args.side:
    if args.side == "trl":
      print(json.dumps(side_trl(args.ckpt, args.steps)))
    else:
      print(json.dumps(side_jax(args.ckpt, args.steps, shared=args.side != "unshared",
                                precomputed=args.side == "precomputed")))
    return
  sides = [s for s in args.sides.split(",") if s]
  unknown = sorted(set(sides) - set(SIDES))
  if unknown:
    ap.error(f"--sides: unknown {unknown}; choose from {SIDES}")

  import torch
  from transformers import LlavaNextForConditionalGeneration
  torch.manual_seed(0)
  results, trl_error = {}, None
  with tempfile.TemporaryDirectory() as tmp:
    LlavaNextForConditionalGeneration(common.hf_torch_config()).save_pretrained(tmp)
    extra = [f"--ckpt={tmp}", f"--steps={args.steps}"]
    for side in sides:
      try:
        results[side] = common.run_side(__file__, side, extra)
      except RuntimeError as e:
        if side != "trl":
          raise
        trl_error = str(e).strip().splitlines()[-1]
  print(f"{PAIRS} pairs/step, a {IMAGE_HW[0]}x{IMAGE_HW[1]} image (5 tiles) in each prompt, {REPLY}-token replies, "
        f"sigmoid DPO against a reference, fp32 CPU ({os.cpu_count()} cores, load average "
        f"{common.load_average()})")
  names = {"shared": "ours, shared prompt", "unshared": "ours, unshared", "precomputed": "ours, precomputed ref",
           "trl": "TRL DPOTrainer"}
  for side, r in results.items():
    r["step_s"], r["median_s"] = min(r["times"]), float(np.median(r["times"]))
    print(f"{names[side]:22s} {PAIRS / r['step_s']:7.3f} pairs/s  {r['step_s']:6.2f} s/step "
          f"(median {r['median_s']:6.2f})  rows {r['rows']}  "
          f"peak RSS {r['peak_rss_mib']:6.0f} MiB  logp(pair 0: chosen, rejected) "
          f"{r['logp_first_pair'][0]:.3f}, {r['logp_first_pair'][1]:.3f}")
  ratio = lambda fast, slow: results[slow]["step_s"] / results[fast]["step_s"]
  if trl_error:
    print(f"TRL could not run this model on CPU: {trl_error}")
  elif "trl" in results:
    print(f"TRL {results['trl']['trl']} (torch {results['trl']['torch']})")
    for side in ("shared", "unshared", "precomputed"):
      if side in results:
        print(f"ratio {names[side]} / TRL: {ratio(side, 'trl'):.2f}x" + (" (goal >= 1.6x)" if side == "shared" else ""))
  if {"shared", "unshared"} <= results.keys():
    print(f"ratio ours shared / ours unshared: {ratio('shared', 'unshared'):.2f}x")
  if {"shared", "precomputed"} <= results.keys():
    print(f"ratio ours precomputed ref / ours shared with the reference model: {ratio('precomputed', 'shared'):.2f}x "
          "(goal >= 1.25x)")


if __name__ == "__main__":
  main()
