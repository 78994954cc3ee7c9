"""GRPO over group rows (`data.group_rows.GroupBatch`): per-token log-probs of every reply from one forward, and
the loss function of the train step (`steps.make_train_step`'s contract: summed loss, aux["count"]).

    logps = group_logprobs(graphdef, params, batch, temperature=t)     # [B * R, L], reply slot order
    step = steps.make_train_step(graphdef, functools.partial(grpo_loss_fn, loss_type="dapo", ...), tx, trainable)
    state, metrics = step(state, batch)
    metrics.update(losses.grpo_metrics(metrics))                       # kl, clip fractions, ratio mean
    loss_fn = loss(config)                                             # the run's grpo_loss_fn, from configs/grpo.py
    TASK.abstract_batch(config, model_cfg, mesh)                       # the dry run's view (tasks.Task interface)
    TASK.rollout_memory(config, model_cfg, mesh)                       # the B x G sampling KV cache, GiB

Log-probs are those of the sampling distribution: logits / temperature (TRL computes them the same way), so with
old_logps = None (one optimizer step per rollout, TRL's num_iterations = 1) the ratio is exactly 1.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from insightv_jax.data.batches import Geometry
from insightv_jax.data.group_rows import GroupBatch
from insightv_jax.data.images import ImageProcessorConfig
from insightv_jax.model.llm import KVCache
from insightv_jax.train import flops, losses, tasks
from insightv_jax.train import state as state_lib


def group_logprobs(graphdef, params, batch: GroupBatch, *, temperature: float = 1.0, chunk: int = 512):
  """log p(reply token) of every reply slot -> [B * R, L] float32 (0 where reply_mask is 0).

  One forward over the rows: in group rows each prompt and its images run once and each reply sees the prompt and
  itself (`branches`); in plain rows (branches None) each row is `[prompt | reply]`. Only the chunks that hold a
  reply position run the LM head.
  """
  model = nnx.merge(graphdef, params)
  t = batch.tokens
  b, r, L = batch.reply_positions.shape
  h, _ = model.hidden_states(t.input_ids, batch.pixel_values, batch.image_sizes, segment_ids=t.segment_ids,
                             positions=t.positions, branches=batch.branches)
  labels = jnp.concatenate([t.input_ids[:, 1:], jnp.zeros_like(t.input_ids[:, :1])], axis=1)  # next token
  where = batch.reply_positions.reshape(b, r * L)
  mask = batch.reply_mask.reshape(b, r * L)
  rows = jnp.arange(b)[:, None]
  needed = jnp.zeros(t.input_ids.shape, jnp.int32).at[rows, where].add(mask) > 0
  logits_fn = lambda x: model.logits(x).astype(jnp.float32) / temperature
  lp = losses.token_logprobs(h, logits_fn, labels, chunk, needed)  # [B, T]
  picked = jnp.take_along_axis(lp, where, axis=1) * mask.astype(jnp.float32)
  return picked.reshape(b * r, L)


def grpo_loss_fn(graphdef, params, batch: GroupBatch, ref_params=None, *, loss_type: str = "grpo",
                 epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.0,
                 importance_sampling_level: str = "token", max_completion_length: int | None = None,
                 temperature: float = 1.0, chunk: int = 512):
  """`losses.grpo_sums` of a GroupBatch -> (summed loss, aux with "count"), for `steps.make_train_step`.

  old_logps: batch.old_logps, or (None) the detached current log-probs. Reference log-probs (beta != 0): from
  ref_params (a frozen reference model) when given, else batch.ref_logps. max_completion_length (dr_grpo):
  defaults to the batch's reply width L. ref_params may be the reference's trained part only (`state.trained_part`,
  as `build_train_state(reference_model=True)` keeps it): what it lacks is frozen and taken from params.
  """
  if beta != 0.0 and ref_params is None and batch.ref_logps is None:
    raise ValueError(f"beta={beta} needs a reference: ref_params, or GroupBatch.ref_logps")
  logps = group_logprobs(graphdef, params, batch, temperature=temperature, chunk=chunk)
  n, L = logps.shape
  flat = lambda x: None if x is None else x.reshape(n, L)
  old = flat(batch.old_logps)
  old = jax.lax.stop_gradient(logps) if old is None else old
  ref = None
  if beta != 0.0:
    if ref_params is not None:
      ref_full = state_lib.reference_params(ref_params, params)
      ref = jax.lax.stop_gradient(group_logprobs(graphdef, ref_full, batch, temperature=temperature, chunk=chunk))
    else:
      ref = flat(batch.ref_logps)
  return losses.grpo_sums(logps, old, ref, batch.advantages.reshape(n), batch.reply_mask.reshape(n, L),
                          loss_type=loss_type, epsilon=epsilon, epsilon_high=epsilon_high, beta=beta,
                          importance_sampling_level=importance_sampling_level,
                          max_completion_length=max_completion_length or L)


def loss(config):
  """configs/grpo.py's loss -> loss_fn(graphdef, params, batch, ref_params) for `steps.make_train_step`."""
  g = config.grpo
  return functools.partial(grpo_loss_fn, loss_type=g.loss_type, epsilon=g.epsilon,
                           epsilon_high=g.epsilon_high or None, beta=g.beta,
                           importance_sampling_level=g.importance_sampling_level, temperature=g.temperature,
                           chunk=config.loss_chunk)


def geometry(config, model_cfg, process_count: int = 1) -> Geometry:
  """The group rows' shapes: rows = questions_per_step / groups_per_row (/ process_count: this process's share),
  one image slot per group."""
  g = config.grpo
  proc = ImageProcessorConfig.for_model(model_cfg)
  return Geometry(rows=g.questions_per_step // g.groups_per_row // process_count, max_len=config.data.max_len,
                  images_per_row=g.groups_per_row, num_tiles=proc.num_tiles, tile=proc.tile)


def abstract_batch(config, model_cfg, mesh) -> GroupBatch:
  """The GLOBAL GroupBatch the compiled step takes (old_logps when num_iterations > 1)."""
  g = config.grpo
  return GroupBatch.abstract(geometry(config, model_cfg), g.groups_per_row * g.num_generations, g.max_new_tokens,
                             mesh, old_logps=g.num_iterations > 1)


@dataclasses.dataclass(frozen=True)
class GrpoTask(tasks.Task):
  """The GRPO step in the `tasks.Task` interface the dry run reads (the loop itself is pipelines/grpo.py): group
  rows, the frozen reference when beta != 0, and the rollout's KV cache (`rollout_memory`)."""

  def abstract_batch(self, config, model_cfg, mesh) -> GroupBatch:
    return abstract_batch(config, model_cfg, mesh)

  def step_flops(self, config, model_cfg) -> float:
    """One optimizer step over the group rows (forward + backward), plus the reference's forward when beta != 0."""
    geo = geometry(config, model_cfg)
    train = flops.train_flops(model_cfg, geo.max_len, geo.rows, geo.num_tiles * geo.images_per_row)
    return train * (4.0 / 3.0 if config.grpo.beta else 1.0)

  def rollout_memory(self, config, model_cfg, mesh) -> dict:
    """The sampler's KV cache (`KVCache.zeros` shapes, compute dtype): one generate call holds prompts_per_call x G
    rows of (prompt + max_new_tokens) slots, the prompt being what data.max_len leaves after the G replies; the
    whole rollout, B x G rows. Per device: rows split over the mesh's batch axes (data x fsdp)."""
    g = config.grpo
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    prompt = config.data.max_len - g.num_generations * (g.max_new_tokens + 1)
    slots = prompt + g.max_new_tokens

    def gib(prompts: int) -> float:
      cache = jax.eval_shape(lambda: KVCache.zeros(model_cfg.text, prompts * g.num_generations, slots,
                                                   jnp.dtype(model_cfg.dtype), stacked=True))
      return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(cache)) / 2**30

    per_call = g.prompts_per_call or g.questions_per_step
    return {"prompt_tokens": prompt, "cache_slots": slots, "prompts_per_call": per_call,
            "kv_cache_GiB_per_call": round(gib(per_call), 3),
            "kv_cache_GiB_per_call_per_device": round(gib(per_call) / ways, 3),
            "kv_cache_GiB_all_B_x_G": round(gib(g.questions_per_step), 3),
            "kv_cache_GiB_all_B_x_G_per_device": round(gib(g.questions_per_step) / ways, 3)}


TASK = GrpoTask("grpo", lambda config: GroupBatch, loss=loss,
                reference=lambda config: "model" if config.grpo.beta != 0.0 else "none",
                trained_tokens=lambda batch: int(batch.reply_mask.sum()), flops_rows=lambda config: 1)
