"""GRPO over group rows (`data.group_rows.GroupBatch`): per-token log-probs of every reply from one forward, and
the loss function of the train step (`steps.make_train_step`'s contract: summed loss, aux["count"]).

    logps = group_logprobs(graphdef, params, batch, temperature=t)     # [B * R, L], reply slot order
    step = steps.make_train_step(graphdef, functools.partial(grpo_loss_fn, loss_type="dapo", ...), tx, trainable)
    state, metrics = step(state, batch)
    metrics.update(losses.grpo_metrics(metrics))                       # kl, clip fractions, ratio mean

Log-probs are those of the sampling distribution: logits / temperature (TRL computes them the same way), so with
old_logps = None (one optimizer step per rollout, TRL's num_iterations = 1) the ratio is exactly 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from insightv_jax.data.group_rows import GroupBatch
from insightv_jax.train import losses
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
