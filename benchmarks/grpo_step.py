"""GRPO step and rollout: ours (group rows, one prefill per question) vs TRL's `GRPOTrainer`, and vs our plain rows.

Same model (benchmarks/common.py's ~30M-parameter LLaVA-NeXT, saved once by transformers), same data:
QUESTIONS questions per step, each a 600x600 image (5 AnyRes tiles, ~340 image tokens) in a PROMPT-token prompt,
G replies of REPLY tokens each. fp32 on CPU, every parameter trained, AdamW, TRL's GRPO defaults on both sides
(loss_type "dapo", epsilon 0.2, beta 0: `--beta` > 0 adds a frozen reference forward on all sides,
num_iterations 1), no activation checkpointing on either side (GRPOConfig turns it on by default: off here).

(a) The training step on fixed completions (reply ids and rewards drawn once; no stop token, all REPLY long):

    group       ours, one row per question `[prompt | reply_1 | ... | reply_G]` (`group_rows.pack_groups`): the
                prompt and its image run once; `grpo_steps.grpo_loss_fn` in `steps.make_train_step`, jitted
    plain       ours, one row per reply `[prompt | reply_k]` (`pack_groups(plain=True)`): the prompt and image
                repeated G times, same step
    trl         TRL's own `GRPOTrainer.training_step` (`_compute_loss`: per-token log-probs with its fused LM
                head, the clipped surrogate, the backward) and the optimizer step, on the batch
                `_generate_and_score_completions` builds for these completions (the prompt repeated per reply, as
                its RepeatSampler feeds it; pixel_values once per row); only `_prepare_inputs` (rollout + rewards)
                is bypassed. With --beta > 0 it also runs the reference forward that method runs.

(b) The rollout: G replies of REPLY new tokens per question, temperature 1.0, top-p 0.95, no stop ids (every
row runs all REPLY steps on both sides).

    rollout      ours, `infer.generate(..., num_samples=G)` as `infer.rollout.sample_groups` calls it: each
                 question prefilled once (left-padded to a 64-token bucket), its KV cache shared by G rows
    trl-rollout  TRL's generation path without vLLM, `GRPOTrainer._generate_single_turn`: transformers'
                 `generate` (do_sample, KV cache) on the prompts repeated G times, the image once per row

Each side runs in its own process (peak memory is its own): (a) two warm-up steps, then `--steps` timed steps;
(b) one warm-up call, then `--steps` calls, each also with 1 new token (prefill + 1: the rest is decode). Each
side's fastest step is its number (median beside it), ratios are of sides measured in this run, and the load
average is printed before each side (time on an idle machine). Every (a) side first computes every reply's
per-token log-probs on the same tokens: they must agree to 1e-3 (else the run fails); that forward alone (no
gradient) is timed too, so a step splits into forward and the rest.

    python benchmarks/grpo_step.py [--steps=3] [--sides=group,plain,trl,rollout,trl-rollout] [--beta=0]
    python benchmarks/grpo_step.py --small --steps=1  # quick: 1 question, G=4, 32-token replies, 420-token prompt
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

QUESTIONS, G, REPLY, PROMPT = 2, 8, 256, 1000  # questions per step, replies per question, reply / prompt tokens
SMALL = dict(questions=1, group=4, reply=32, prompt=420)
IMAGE_HW = (600, 600)  # 5 AnyRes tiles on the benchmark model (a 2x2 grid of 336-px tiles + the base tile)
LOSS_TYPE, EPSILON = "dapo", 0.2  # TRL 1.16's GRPOConfig defaults (and configs/grpo.py's loss_type)
TEMPERATURE, TOP_P = 1.0, 0.95
LR, CHUNK = 1e-5, 512  # AdamW learning rate; LM-head chunk of our loss (configs/train_base.py's loss_chunk)
LOGP_TOL = 1e-3
STEP_SIDES, ROLLOUT_SIDES = ("group", "plain", "trl"), ("rollout", "trl-rollout")
SIDES = STEP_SIDES + ROLLOUT_SIDES


def make_data(cfg, sz: dict, seed: int = 0):
  """-> dict: prompts [Q] ids [PROMPT] (4 text tokens, the image's tokens, the question), replies [Q][G] ids
  [REPLY] (never the image token), pixel_values [Q, 5, 3, 336, 336], image_sizes [Q, 2], tiles (per question
  `preprocess` outputs), advantages [Q * G] float32 (question-major), image_tokens."""
  from PIL import Image

  from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
  from insightv_jax.train import losses
  rng = np.random.default_rng(seed)
  q, g, reply, prompt_len = sz["questions"], sz["group"], sz["reply"], sz["prompt"]
  proc = ImageProcessorConfig.for_model(cfg)
  tiles = [preprocess(Image.fromarray(rng.integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8)), proc)
           for _ in range(q)]
  pixel_values, sizes = stack_batch(tiles)
  n_img = proc.num_image_tokens(*IMAGE_HW)
  question = prompt_len - 4 - n_img
  if question < 8:
    raise ValueError(f"--prompt={prompt_len} leaves {question} question tokens after {n_img} image tokens")
  vocab = cfg.text.vocab_size - 1  # the last id is the image token
  prompts = []
  for _ in range(q):
    p = rng.integers(0, vocab, prompt_len).astype(np.int32)
    p[4:4 + n_img] = cfg.image_token_index
    prompts.append(p)
  replies = [[rng.integers(0, vocab, reply).astype(np.int32) for _ in range(g)] for _ in range(q)]
  rewards = rng.random(q * g).astype(np.float32)
  adv = np.asarray(losses.group_advantages(rewards, g, scale="group"), np.float32)
  return dict(prompts=prompts, replies=replies, pixel_values=pixel_values, image_sizes=sizes, tiles=tiles,
              advantages=adv, image_tokens=n_img)


def our_batch(cfg, sz: dict, plain: bool):
  """The completions as GRPO rows -> (Packed, GroupBatch with advantages)."""
  from insightv_jax.data import group_rows
  from insightv_jax.data.images import ImageProcessorConfig
  d = make_data(cfg, sz)
  proc = ImageProcessorConfig.for_model(cfg)
  q, g, reply, prompt_len = sz["questions"], sz["group"], sz["reply"], sz["prompt"]
  groups = [group_rows.Group(p, r, [t]) for p, r, t in zip(d["prompts"], d["replies"], d["tiles"])]
  max_len = common.round_up(prompt_len + reply) if plain else common.round_up(prompt_len + g * (reply + 1))
  packed = group_rows.pack_groups(groups, rows=q * g if plain else q, max_len=max_len, max_reply_len=reply,
                                  num_tiles=proc.num_tiles, tile=proc.tile, plain=plain,
                                  image_token_id=cfg.image_token_index)
  return packed, packed.batch.replace(advantages=packed.to_slots(d["advantages"]).astype(np.float32))


def side_jax(ckpt: str, steps: int, sz: dict, plain: bool, beta: float) -> dict:
  import functools

  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from insightv_jax.hf import load_llava_next
  from insightv_jax.train import grpo_steps
  from insightv_jax.train import steps as steps_lib
  load = common.load_average()
  model = load_llava_next(ckpt)
  packed, batch = our_batch(model.cfg, sz, plain)
  batch = jax.tree.map(jnp.asarray, batch)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  fwd = jax.jit(lambda p, b: grpo_steps.group_logprobs(graphdef, p, b, temperature=TEMPERATURE, chunk=CHUNK))
  logp = jax.block_until_ready(fwd(params, batch))
  _, fwd_times = common.time_calls(lambda: jax.block_until_ready(fwd(params, batch)), steps, warmup=0)
  logps = packed.from_slots(np.asarray(logp))[:, :sz["reply"]]  # [Q * G, REPLY], question-major
  tx = optax.adamw(LR)
  trainable = jax.tree.map(lambda _: True, params)
  loss_fn = functools.partial(grpo_steps.grpo_loss_fn, loss_type=LOSS_TYPE, epsilon=EPSILON, beta=beta,
                              temperature=TEMPERATURE, chunk=CHUNK)
  step = jax.jit(steps_lib.make_train_step(graphdef, loss_fn, tx, trainable), donate_argnums=0)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  if beta:
    state["ref_params"] = jax.tree.map(jnp.copy, params)
  state, metrics, times, compile_s = common.time_jax_step(step, state, batch, steps)
  return {"side": "plain" if plain else "group", "times": times, "fwd_times": fwd_times, "compile_s": compile_s,
          "load": load, "loss": float(metrics["loss"]), "logps": logps.tolist(),
          "rows": list(batch.tokens.input_ids.shape), "peak_rss_mib": common.peak_rss_mib()}


def trl_inputs(cfg, sz: dict):
  """The batch `_generate_and_score_completions` returns for these completions (no padding: equal lengths)."""
  import torch
  d = make_data(cfg, sz)
  g = sz["group"]
  prompt_ids = np.stack([p for p in d["prompts"] for _ in range(g)])
  completion_ids = np.stack([r for rs in d["replies"] for r in rs])
  rep = lambda x: torch.tensor(np.repeat(x, g, axis=0))
  long = lambda x: torch.tensor(x, dtype=torch.long)
  mask = torch.ones(completion_ids.shape, dtype=torch.long)
  return {"prompt_ids": long(prompt_ids), "prompt_mask": torch.ones(prompt_ids.shape, dtype=torch.long),
          "completion_ids": long(completion_ids), "completion_mask": mask,
          "advantages": torch.tensor(d["advantages"]), "num_items_in_batch": mask.sum(),
          "pixel_values": rep(d["pixel_values"]), "image_sizes": rep(d["image_sizes"]).long(),
          "num_images": [1] * len(prompt_ids)}


def trl_trainer(ckpt: str, sz: dict, beta: float, out: str):
  """A `GRPOTrainer` on the saved weights (a one-prompt text dataset only to construct it; a small tokenizer)."""
  import datasets
  import torch
  import trl
  from transformers import LlavaNextForConditionalGeneration

  from insightv_jax.data.tokenizer import train_bpe
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = LlavaNextForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)
  tok = train_bpe(["a small tokenizer: TRL wants one; the timed batch is built from token ids"] * 4, 300)
  data = datasets.Dataset.from_dict({"prompt": ["a"] * sz["group"]})
  n = sz["questions"] * sz["group"]
  args = trl.GRPOConfig(output_dir=out, per_device_train_batch_size=n, num_generations=sz["group"],
                        max_completion_length=sz["reply"], loss_type=LOSS_TYPE, epsilon=EPSILON, beta=beta,
                        temperature=TEMPERATURE, top_p=TOP_P, learning_rate=LR, use_cpu=True, report_to=[],
                        bf16=False, fp16=False, save_strategy="no", logging_strategy="no", seed=0,
                        gradient_checkpointing=False,  # GRPOConfig defaults to True; ours recomputes nothing either
                        generation_kwargs={"eos_token_id": None})  # no stop id: every row samples `reply` tokens
  trainer = trl.GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                            train_dataset=data, processing_class=tok)
  return trainer


def side_trl(ckpt: str, steps: int, sz: dict, beta: float) -> dict:
  import torch
  import trl

  from insightv_jax.checkpoints import read_config
  load = common.load_average()
  with tempfile.TemporaryDirectory() as out:
    trainer = trl_trainer(ckpt, sz, beta, out)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before each training_step
    trainer.model.train()
    inputs = trl_inputs(read_config(f"hf:{ckpt}"), sz)
    seq = dict(num_images=inputs["num_images"], pixel_values=inputs["pixel_values"],
               image_sizes=inputs["image_sizes"])
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    keep = inputs["completion_ids"].size(1)
    with torch.no_grad():
      fwd = lambda: trainer._get_per_token_logps_and_entropies(trainer.model, ids, att, keep, **seq)[0]
      lp = fwd()
      _, fwd_times = common.time_calls(fwd, steps, warmup=0)
    trainer._prepare_inputs = lambda batch: batch  # the rollout + rewards: replaced by the pre-built batch

    def one():
      batch = inputs
      if beta:  # as `_generate_and_score_completions` does before the loss
        with torch.no_grad():
          ref, _, _ = trainer._get_per_token_logps_and_entropies(
              trainer.ref_model, ids, att, keep, batch_size=trainer.args.per_device_train_batch_size, **seq)
        batch = {**inputs, "ref_per_token_logps": ref}
      loss = trainer.training_step(trainer.model, batch, inputs["num_items_in_batch"])
      trainer.optimizer.step()
      trainer.optimizer.zero_grad(set_to_none=True)
      return float(loss)

    loss, times = common.time_calls(one, steps)
  return {"side": "trl", "times": times, "fwd_times": fwd_times, "loss": loss, "logps": lp.tolist(), "load": load,
          "rows": list(ids.shape), "trl": trl.__version__, "torch": torch.__version__,
          "peak_rss_mib": common.peak_rss_mib()}


def rollout_prompts(cfg, sz: dict):
  """Our sampler's input: the prompts left-padded to a 64-token bucket (as `rollout.sample_groups` pads them)."""
  from insightv_jax.infer import bucket_length
  d = make_data(cfg, sz)
  t = bucket_length(max(len(p) for p in d["prompts"]))
  ids = np.zeros((len(d["prompts"]), t), np.int32)
  mask = np.zeros_like(ids)
  for i, p in enumerate(d["prompts"]):
    ids[i, t - len(p):] = p
    mask[i, t - len(p):] = 1
  return d, ids, mask


def side_rollout(ckpt: str, steps: int, sz: dict) -> dict:
  import jax
  import jax.numpy as jnp

  from insightv_jax.hf import load_llava_next
  from insightv_jax.infer import generate
  load = common.load_average()
  model = load_llava_next(ckpt)
  d, ids, mask = rollout_prompts(model.cfg, sz)
  pv, sizes = jnp.asarray(d["pixel_values"]), jnp.asarray(d["image_sizes"])
  seeds = np.arange(len(ids) * sz["group"], dtype=np.uint32) * 7919 + 1
  run = lambda new: generate(model, ids, pv, sizes, mask, max_new_tokens=new, temperature=TEMPERATURE, top_p=TOP_P,
                             eos_ids=[], seed=seeds, num_samples=sz["group"])
  return _time_rollout(lambda new: jax.block_until_ready(run(new)), steps, sz, load, "rollout", list(ids.shape))


def side_trl_rollout(ckpt: str, steps: int, sz: dict) -> dict:
  import torch

  from insightv_jax.checkpoints import read_config
  load = common.load_average()
  with tempfile.TemporaryDirectory() as out:
    trainer = trl_trainer(ckpt, sz, 0.0, out)
    inputs = trl_inputs(read_config(f"hf:{ckpt}"), sz)
    prompt_ids = inputs["prompt_ids"].tolist()  # the prompts as the RepeatSampler feeds them: each G times
    fields = {"pixel_values": inputs["pixel_values"], "image_sizes": inputs["image_sizes"]}
    base = trainer.generation_config.max_new_tokens
    trainer.eos_token_ids = [-1]  # no stop ids (as ours): its reply cut finds none, every reply is `new` long

    def run(new):
      trainer.generation_config.max_new_tokens = trainer.generation_config.min_new_tokens = new
      try:
        out_ids, _ = trainer._generate_single_turn(prompt_ids, None, fields, sz["group"])
      finally:
        trainer.generation_config.max_new_tokens, trainer.generation_config.min_new_tokens = base, None
      if any(len(c) != new for c in out_ids):
        raise RuntimeError(f"TRL rollout: replies of {sorted({len(c) for c in out_ids})} tokens, expected {new}")
      return out_ids

    torch.manual_seed(0)
    return _time_rollout(run, steps, sz, load, "trl-rollout", [len(prompt_ids), len(prompt_ids[0])])


def _time_rollout(run, steps: int, sz: dict, load: str, name: str, rows) -> dict:
  """run(new_tokens): one warm-up call (our compile) of each shape, then `steps` timed calls of each."""
  for new in (sz["reply"], 1):
    run(new)
  times, prefill = [], []
  for _ in range(steps):
    for new, out in ((sz["reply"], times), (1, prefill)):
      t0 = time.perf_counter()
      run(new)
      out.append(time.perf_counter() - t0)
  return {"side": name, "times": times, "prefill_times": prefill, "load": load, "rows": rows,
          "peak_rss_mib": common.peak_rss_mib()}


def report(results: dict, sz: dict, beta: float):
  q, g, reply = sz["questions"], sz["group"], sz["reply"]
  for r in results.values():
    r["step_s"], r["median_s"] = min(r["times"]), float(np.median(r["times"]))
  ratio = lambda fast, slow: results[slow]["step_s"] / results[fast]["step_s"]
  names = {"group": "ours, group rows", "plain": "ours, plain rows", "trl": "TRL GRPOTrainer",
           "rollout": "ours, one prefill/question", "trl-rollout": "TRL generate (repeated)"}
  step_sides = [s for s in STEP_SIDES if s in results]
  if step_sides:
    print(f"(a) train step: {q} questions x G={g} replies of {reply} tokens, prompt {sz['prompt']} tokens "
          f"({sz['image_tokens']} image tokens, 5 tiles), {LOSS_TYPE} loss, epsilon {EPSILON}, beta {beta}, AdamW, "
          "fp32")
    for s in step_sides:
      r = results[s]
      print(f"  {names[s]:28s} {q * g * reply / r['step_s']:8.1f} reply tokens/s  {r['step_s']:7.2f} s/step "
            f"(median {r['median_s']:7.2f}; forward alone {min(r['fwd_times']):7.2f})  rows {r['rows']}  "
            f"peak RSS {r['peak_rss_mib']:6.0f} MiB  loss {r['loss']:+.5f}  load before {r['load']}")
    base = step_sides[0]
    ref = np.asarray(results[base]["logps"])
    worst = 0.0
    for s in step_sides[1:]:
      diff = float(np.abs(np.asarray(results[s]["logps"]) - ref).max())
      first = float(np.abs(np.asarray(results[s]["logps"])[0] - ref[0]).max())
      worst = max(worst, diff)
      print(f"  per-token log-probs, {s} vs {base}: max |diff| first reply {first:.2e}, all {ref.shape[0]} replies "
            f"{diff:.2e} ({ref.size} tokens)")
    if "trl" in results:
      print(f"  TRL {results['trl']['trl']} (torch {results['trl']['torch']})")
      for s in ("group", "plain"):
        if s in results:
          print(f"  ratio {names[s]} / TRL: {ratio(s, 'trl'):.2f}x" + (" (goal >= 2.5x)" if s == "group" else ""))
    if {"group", "plain"} <= results.keys():
      print(f"  ratio ours group rows / ours plain rows: {ratio('group', 'plain'):.2f}x")
    if worst > LOGP_TOL:
      raise SystemExit(f"error: the sides' per-token log-probs differ by {worst:.2e} > {LOGP_TOL}")
  if any(s in results for s in ROLLOUT_SIDES):
    print(f"(b) rollout: {q} questions x G={g} samples, {reply} new tokens, temperature {TEMPERATURE}, "
          f"top-p {TOP_P}, no stop ids, fp32")
    for s in ROLLOUT_SIDES:
      if s in results:
        r = results[s]
        pre = min(r["prefill_times"])
        print(f"  {names[s]:28s} {q * g * reply / r['step_s']:8.1f} tokens/s  {r['step_s']:7.2f} s "
              f"(median {r['median_s']:7.2f}; prefill + 1 token {pre:6.2f} s, decode "
              f"{(r['step_s'] - pre) / max(reply - 1, 1) * 1e3:6.1f} ms/step)  input rows {r['rows']}  "
              f"peak RSS {r['peak_rss_mib']:6.0f} MiB  load before {r['load']}")
    if set(ROLLOUT_SIDES) <= results.keys():
      print(f"  ratio ours / TRL: {ratio('rollout', 'trl-rollout'):.2f}x (goal >= 1.5x); prefill + 1 token "
            f"{min(results['trl-rollout']['prefill_times']) / min(results['rollout']['prefill_times']):.2f}x")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--side", choices=SIDES)
  ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides to run (default: all)")
  ap.add_argument("--ckpt")
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--beta", type=float, default=0.0, help="KL weight (> 0: a frozen reference forward per step)")
  ap.add_argument("--small", action="store_true", help=f"quick check sizes: {SMALL}")
  ap.add_argument("--questions", type=int, default=QUESTIONS)
  ap.add_argument("--group", type=int, default=G, help="G, replies per question")
  ap.add_argument("--reply", type=int, default=REPLY, help="tokens per reply")
  ap.add_argument("--prompt", type=int, default=PROMPT, help="prompt tokens (the image's included)")
  ap.add_argument("--save", help="also write the sides' raw results (JSON) to this file")
  args = ap.parse_args()
  sz = dict(SMALL) if args.small else dict(questions=args.questions, group=args.group, reply=args.reply,
                                            prompt=args.prompt)
  if args.side:
    fns = {"group": lambda: side_jax(args.ckpt, args.steps, sz, False, args.beta),
           "plain": lambda: side_jax(args.ckpt, args.steps, sz, True, args.beta),
           "trl": lambda: side_trl(args.ckpt, args.steps, sz, args.beta),
           "rollout": lambda: side_rollout(args.ckpt, args.steps, sz),
           "trl-rollout": lambda: side_trl_rollout(args.ckpt, args.steps, sz)}
    print(json.dumps(fns[args.side]()))
    return
  sides = [s for s in args.sides.split(",") if s]
  unknown = sorted(set(sides) - set(SIDES))
  if unknown:
    ap.error(f"--sides: unknown {unknown}; choose from {SIDES}")
  if sz["group"] < 2:
    ap.error(f"--group={sz['group']}: GRPO needs G >= 2")

  import torch
  from transformers import LlavaNextForConditionalGeneration

  from insightv_jax.data.images import ImageProcessorConfig
  torch.manual_seed(0)
  print(f"machine: {common.machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  sz["image_tokens"] = ImageProcessorConfig.for_model(common.bench_config()).num_image_tokens(*IMAGE_HW)
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    LlavaNextForConditionalGeneration(common.hf_torch_config()).save_pretrained(tmp)
    extra = [f"--ckpt={tmp}", f"--steps={args.steps}", f"--beta={args.beta}", f"--questions={sz['questions']}",
             f"--group={sz['group']}", f"--reply={sz['reply']}", f"--prompt={sz['prompt']}"]
    for side in sides:
      print(f"side {side}: load average {common.load_average()}", flush=True)
      t0 = time.perf_counter()
      results[side] = common.run_side(__file__, side, extra)
      print(f"side {side}: done in {time.perf_counter() - t0:.0f} s", flush=True)
  print(f"load average after: {common.load_average()}")
  if args.save:
    with open(args.save, "w") as f:
      json.dump({"sizes": sz, "beta": args.beta, "results": results}, f)
  report(results, sz, args.beta)


if __name__ == "__main__":
  main()
