"""The GRPO loop (configs/grpo.py), read top to bottom: rollout -> rewards -> advantages -> updates -> repeat.

    train_grpo(config, workdir)   # insightv-train --config=configs/grpo.py:tiny (task "grpo")

It composes the sampler (insightv_jax/infer/rollout.py) and the trainer (insightv_jax/train: state, steps, optim,
checkpoint, metrics, grpo_steps, losses, rewards), which sit side by side in the library, so it lives here as
iterative DPO does. The sampler and the trainer share one set of parameters on one mesh: each rollout merges the
train state's current params into the model it samples from (no copy, no weight sync).

With grpo.reward_judge="summary" (reasoning agent) a frozen summary agent (grpo.summary_model, an `infer.Agent`
prompted by the run's preset, greedy) reads each sampled chain, all B x G in one call, and its answer is what the
`answer` reward scores: what counts at inference. Several processes: the sampler is one SPMD program over the
global mesh (the parameters are sharded across processes), so every process runs the same rollout of all B
questions with the same seeds (identical inputs, identical replies, rewards and metrics) and packs its share of
the groups (process k: groups k * B / P ... (k + 1) * B / P - 1) into its rows; the train step is global, as SFT's.

Writes into workdir what the SFT / DPO loop writes: config.json, metrics.jsonl + TensorBoard (tb/) per rollout,
checkpoints/ (train state + the question stream's position and sampling seed counter, so a kill -9 resumes with
the metrics an uninterrupted run logs), export/ (the trained model folder).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from insightv_jax import sharding
from insightv_jax.checkpoints import load_model
from insightv_jax.data import group_rows, model_files, prompts
from insightv_jax.data.images import ImageProcessorConfig
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.infer import rollout
from insightv_jax.infer.agents import Agent, GenerationConfig
from insightv_jax.train import grpo_steps, losses, optim, rewards, steps
from insightv_jax.train import state as state_lib
from insightv_jax.train.checkpoint import Checkpointer, is_primary
from insightv_jax.train.loop import maybe_initialize_distributed
from insightv_jax.train.metrics import MetricsWriter, Progress
from insightv_jax.utils.faults import kill_if
from insightv_jax.utils.files import atomic_write
from insightv_jax.utils.inputs import InputError
from pipelines.grpo_questions import Item, QuestionStream, load_image, load_items, synthetic_questions

JUDGES = ("chain", "summary")  # grpo.reward_judge


def check_config(config) -> rewards.Rewards:
  """The GRPO fields a run cannot start with, as InputErrors naming the flag; -> the run's rewards."""
  g = config.grpo
  if g.num_generations < 2:
    raise InputError(f"--config.grpo.num_generations={g.num_generations}: GRPO compares replies within a group; "
                     "it needs G >= 2")
  if g.agent not in rewards.AGENTS:
    raise InputError(f"--config.grpo.agent={g.agent!r}; expected one of {rewards.AGENTS}")
  if g.agent == "summary" and not g.chain_source:
    raise InputError("--config.grpo.agent=summary needs --config.grpo.chain_source: files of summary_sft records "
                     "or of the reasoning agent's sampled chains (path records, joined with --config.data.paths)")
  if g.reward_judge not in JUDGES:
    raise InputError(f"--config.grpo.reward_judge={g.reward_judge!r}; expected one of {JUDGES}")
  if g.reward_judge == "summary":
    if g.agent != "reasoning":
      raise InputError("--config.grpo.reward_judge=summary has a frozen summary agent judge the reasoning agent's "
                       f"chains; with --config.grpo.agent={g.agent} the reply is the answer already: use 'chain'")
    if not g.summary_model:
      raise InputError("--config.grpo.reward_judge=summary needs --config.grpo.summary_model: the frozen summary "
                       "agent's model folder, as --config.model.init takes it (params:<dir> | hf:<dir> | llava:<dir>)")
    from pipelines.cli import _inputs  # the folder and its config.json, as every model flag is checked
    _inputs.model(g.summary_model, "--config.grpo.summary_model")
  if not g.temperature > 0:
    raise InputError(f"--config.grpo.temperature={g.temperature}: rollouts sample, and the loss divides the logits by "
                     "the sampling temperature; it must be > 0")
  if not 0 < g.top_p <= 1:
    raise InputError(f"--config.grpo.top_p={g.top_p}: expected 0 < top_p <= 1")
  if config.data.prompts and config.data.prompts not in prompts.PROMPT_PRESETS:
    raise InputError(f"--config.data.prompts={config.data.prompts!r}: unknown prompt preset; choose from "
                     f"{sorted(prompts.PROMPT_PRESETS)}")
  if g.questions_per_step % g.groups_per_row:
    raise InputError(f"--config.grpo.questions_per_step={g.questions_per_step} is not a multiple of "
                     f"--config.grpo.groups_per_row={g.groups_per_row}")
  try:
    return rewards.build_rewards(list(g.rewards), list(g.reward_weights), agent=g.agent,
                                 preset=config.data.prompts or prompts.DEFAULT_PRESET, min_steps=g.min_steps,
                                 length_budget=g.length_budget, length_interval=g.length_interval)
  except ValueError as e:
    raise InputError(f"--config.grpo.rewards={list(g.rewards)}: {e}") from e


def train_grpo(config, workdir: str) -> dict:
  # ------------------------------------------------------------------------------------------- setup
  maybe_initialize_distributed(config.distributed)
  model_files.apply_recorded_defaults(config)  # template / prompts "" -> what the model.init folder records
  reward_fns = check_config(config)
  g = config.grpo
  G, B = g.num_generations, g.questions_per_step
  P, k = jax.process_count(), jax.process_index()
  template, preset = config.data.template, config.data.prompts  # filled by apply_recorded_defaults
  os.makedirs(workdir, exist_ok=True)
  paths, image_root = config.data.paths, config.data.image_root
  if paths.startswith("synthetic:"):  # the synthetic world's questions, written into the run folder once
    image_root = os.path.join(workdir, "synthetic")
    paths = synthetic_questions(paths, image_root, seed=config.data.seed)
  items = load_items(config, paths)
  if is_primary():
    with atomic_write(os.path.join(workdir, "config.json")) as f:
      f.write(config.to_json_best_effort(indent=2))

  # -------------------------------------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  rows = B // g.groups_per_row
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % (ways * config.optim.accum_steps) or rows % P:
    raise InputError(f"--config.grpo.questions_per_step={B} gives {rows} group rows, not divisible by mesh data x "
                     f"fsdp ({ways}) x optim.accum_steps ({config.optim.accum_steps}) and by the {P} processes")
  local_rows = rows // P  # this process's share of the rows (and of the groups: local_rows x groups_per_row)
  mine = slice(k * B // P, (k + 1) * B // P)  # this process's groups of each rollout

  # ------------------------------------------------------------------------------ model and optimizer
  tokenizer = load_tokenizer(config.tokenizer)
  model_cfg = state_lib.model_config(config.model, tokenizer)
  proc = ImageProcessorConfig.for_model(model_cfg)
  setup = state_lib.build_train_state(config, model_cfg, mesh, reference_model=g.beta != 0.0)
  graphdef, state, state_shardings = setup.graphdef, setup.state, setup.shardings

  # ------------------------------------------------------------------------------------- update step
  step_fn = steps.make_train_step(graphdef, grpo_steps.loss(config), setup.tx, setup.trainable,
                                  accum_steps=config.optim.accum_steps, schedule=optim.lr_schedule(config.optim))
  del setup
  abstract_batch = grpo_steps.abstract_batch(config, model_cfg, mesh)  # what --dry_run compiles too
  rollout_shardings = jax.tree.map(lambda x: x.sharding, abstract_batch.replace(old_logps=None))
  t0 = time.time()
  compiled = steps.compile_train_step(step_fn, state_lib.abstract_like(state, state_shardings), abstract_batch, mesh)
  logging.info("compiled GRPO step in %.1fs; per-device memory (GiB): %s", time.time() - t0,
               json.dumps(steps.memory_gib(compiled)))
  old_logps_fn = jax.jit(functools.partial(grpo_steps.group_logprobs, graphdef, temperature=g.temperature,
                                           chunk=config.loss_chunk))

  # ---------------------------------------------------------------------------------- init or resume
  stream = QuestionStream(items, seed=config.data.seed, sample_seed=g.seed)
  ckpt = Checkpointer(workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  start, restored = ckpt.restore_or(state_lib.abstract_like(state, state_shardings), stream)
  if restored is not None:
    state = restored
  writer = MetricsWriter(workdir, resume_step=start, enabled=is_primary())
  progress = Progress(total=config.optim.total_steps, start=start)
  role = "summary" if g.agent == "summary" else "reasoning"
  judge = None
  if g.reward_judge == "summary":  # the frozen summary agent that answers from each sampled chain
    judge = Agent(load_model(g.summary_model, dtype=config.model.dtype, mesh=mesh), tokenizer, template,
                  GenerationConfig(max_new_tokens=g.summary_max_new_tokens, temperature=0.0,
                                   batch_size=B * G), preset=preset)

  def ask():
    """A rollout of the next B questions from the current params, scored (the same on every process)."""
    t = time.time()
    batch_items = stream.take(B)
    images = [load_image(it.question, image_root) for it in batch_items]
    prompt_list = [rollout.build_prompt(tokenizer, template, preset, role, _text(it), it.chain, image=im, proc=proc,
                                        image_token_id=model_cfg.image_token_index)
                   for it, im in zip(batch_items, images)]
    out = rollout.sample_groups(nnx.merge(graphdef, state["params"]), tokenizer, template, prompt_list,
                                num_samples=G, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                top_p=g.top_p, top_k=g.top_k, seeds=stream.seeds(B, G),
                                prompts_per_call=min(g.prompts_per_call or B, len(batch_items)), proc=proc)
    t_judge = time.time()
    judged = None
    if judge is not None:  # all B x G chains in one call (greedy)
      chains = [judge.prompts.unwrap_chain(x) for x in out.texts]
      judged = judge.complete([judge.prompts.messages("summary", _text(it), c)
                               for it, c in zip(_each(batch_items, G), chains)], _each(images, G))
    table, total = reward_fns([it.question for it in _each(batch_items, G)], out.texts,
                              chains=[it.chain for it in _each(batch_items, G)] if role == "summary" else None,
                              judged=judged)
    return _Asked(out, table, total, time.time() - t, time.time() - t_judge if judge is not None else 0.0)

  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda sig, _: stop.update(signal=sig))

  # ------------------------------------------------------------------------------------- train loop
  host = {}
  step = start
  try:
    while step < config.optim.total_steps:
      # rollout -> rewards -> advantages (dynamic sampling: zero-spread groups replaced by fresh questions)
      a = ask()
      spread = _spread(a.total, G)
      zero_spread = float(1.0 - spread.mean())
      groups, texts, tables, totals = a.out.groups, a.out.texts, a.table, a.total
      sampled, t_roll, t_judge = a.out.tokens, a.sec, a.judge_sec
      batches = 1  # rollouts of B questions this step (dynamic sampling adds some)
      if g.dynamic_sampling:
        keep = [i for i in range(B) if spread[i]]
        for _ in range(g.max_resamples):
          if len(keep) >= B:
            break
          more = ask()
          batches += 1
          t_roll, t_judge, sampled = t_roll + more.sec, t_judge + more.judge_sec, sampled + more.out.tokens
          m_spread = _spread(more.total, G)
          base = len(groups)
          groups, texts = groups + more.out.groups, texts + more.out.texts
          tables, totals = np.concatenate([tables, more.table]), np.concatenate([totals, more.total])
          keep += [base + i for i in range(B) if m_spread[i]]
        chosen = (keep + [i for i in range(len(groups)) if i not in keep])[:B]
        sel = np.concatenate([np.arange(i * G, (i + 1) * G) for i in chosen])
        groups = [groups[i] for i in chosen]
        texts, tables, totals = [texts[i] for i in sel], tables[sel], totals[sel]
      adv = np.asarray(losses.group_advantages(totals, G, scale=g.scale))

      # group rows -> num_iterations optimizer steps
      packed = group_rows.pack_groups(groups[mine], rows=local_rows, max_len=config.data.max_len,
                                      max_reply_len=g.max_new_tokens, groups_per_row=g.groups_per_row,
                                      images_per_row=g.groups_per_row, num_tiles=proc.num_tiles, tile=proc.tile,
                                      pad_id=tokenizer.pad_token_id or 0, image_token_id=model_cfg.image_token_index)
      local = packed.batch.replace(advantages=packed.to_slots(adv.reshape(B, G)[mine].reshape(-1)).astype(np.float32))
      batch = jax.tree.map(jax.make_array_from_process_local_data, rollout_shardings, local)
      t_train = time.time()
      if g.num_iterations > 1:  # the sampling policy's log-probs, before the first update
        with sharding.use_mesh(mesh):
          old = old_logps_fn(state["params"], batch)
        batch = batch.replace(old_logps=jax.device_put(old.reshape(batch.reply_mask.shape),
                                                       abstract_batch.old_logps.sharding))
      for _ in range(g.num_iterations):
        state, metrics = compiled(state, batch)
        step += 1
      metrics = jax.device_get(metrics)
      t_train = time.time() - t_train
      lengths = np.asarray([len(r) for gr in groups for r in gr.replies])
      trained = int(lengths.sum())  # every reply token of the global batch is trained
      progress.update(step, trained * g.num_iterations)

      host = {k: float(v) for k, v in metrics.items()}
      host.update({k: float(v) for k, v in losses.grpo_metrics(metrics).items()})
      if not math.isfinite(host["loss"]):
        raise FloatingPointError(f"GRPO loss is {host['loss']} at step {step}; the last good checkpoint (step "
                                 f"{ckpt.latest_step()}) in {ckpt.directory} is intact")
      host.update(reward_fns.metrics(tables))
      answer = [i for i, name in enumerate(reward_fns.names) if name == "answer"]
      host.update(step=step, reward=float(np.nanmean(totals)) if np.isfinite(totals).any() else float("nan"),
                  reward_std=(float(np.nanstd(totals, ddof=1)) if np.isfinite(totals).sum() > 1
                              else float("nan")),
                  frac_reward_zero_std=zero_spread, rollout_batches=batches, completion_length=float(lengths.mean()),
                  completion_length_max=float(lengths.max()),
                  rollout_tokens_per_sec=sampled / max(t_roll, 1e-9), rollout_sec=t_roll,
                  train_tokens_per_sec=trained * g.num_iterations / max(t_train, 1e-9), **progress.rates())
      if judge is not None:
        host["judge_sec"] = t_judge
      if answer:
        host["accuracy"] = host[f"rewards/{reward_fns.names[answer[0]]}/mean"]
      writer.write(host)
      logging.info("%s reward=%.3f zero_std=%.2f", progress.line(host), host["reward"], zero_spread)
      will_save = config.checkpoint.every and step % config.checkpoint.every < g.num_iterations
      if will_save:
        ckpt.save(step, state, stream.snapshot())
      kill_if(config.debug_kill_at, f"step_{step}")
      if stop["signal"] is not None:
        logging.warning("SIGTERM: saving step %d before exiting", step)
        ckpt.save(step, state, stream.snapshot(), force=True)
        break
    else:
      if step > start and ckpt.latest_step() != step:
        ckpt.save(step, state, stream.snapshot(), force=True)
  finally:
    signal.signal(signal.SIGTERM, previous)
    ckpt.close()
    writer.close()

  # --------------------------------------------------------------------------------- params export
  if config.export_params and stop["signal"] is None:
    model_files.save_complete(nnx.merge(graphdef, state["params"]), os.path.join(workdir, "export"), tokenizer,
                              layout="params", template=config.data.template, prompts=config.data.get("prompts"),
                              source=config.model.init)
  return host


@dataclasses.dataclass(frozen=True)
class _Asked:
  """One scored rollout of B questions: table [B * G, F], total [B * G]; sec: sampling, judging and
  scoring; judge_sec: the frozen summary agent's share of it."""

  out: rollout.Rollout
  table: np.ndarray
  total: np.ndarray
  sec: float
  judge_sec: float


def _text(item: Item) -> str:
  return prompts.format_question(item.question.question, item.question.choices)


def _each(xs, n: int) -> list:
  """Each element n times in a row (per-question values -> per reply)."""
  return [x for x in xs for _ in range(n)]


def _spread(total: np.ndarray, G: int) -> np.ndarray:
  """[groups] bool: does the group's total reward vary (NaN std, i.e. nothing scored, counts as no spread)?"""
  return ~np.isclose(np.nan_to_num(np.asarray(losses.group_std(total, G)), nan=0.0), 0.0)

