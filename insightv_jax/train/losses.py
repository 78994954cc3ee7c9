"""Losses: masked next-token cross-entropy and log-probs, computed in sequence chunks.

Full fp32 logits [b, t, v] are never materialised for the whole batch: the LM head and the log-softmax
run over chunks of `chunk` positions under `jax.checkpoint`, so the backward pass recomputes each chunk's
logits instead of storing them (LLaMA-3's 128K vocabulary x 8K tokens would be 4 GB per sequence).
A chunk in which no position is a target (prompt and image tokens) skips the LM head altogether.

Targets: position i predicts token i+1 when token i+1 is a trainable token (loss_mask) of the same
segment (packed rows never predict across examples; padding never counts).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def next_token_targets(input_ids, loss_mask, segment_ids):
  """[b, t] ids, mask, segments -> (labels [b, t], weights [b, t] float32)."""
  labels = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
  nxt_mask = jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1)
  nxt_seg = jnp.concatenate([segment_ids[:, 1:], jnp.zeros_like(segment_ids[:, :1])], axis=1)
  weights = (nxt_mask > 0) & (nxt_seg == segment_ids) & (segment_ids > 0)
  return labels, weights.astype(jnp.float32)


def token_logprobs(hidden: jax.Array, logits_fn: Callable[[jax.Array], jax.Array], labels: jax.Array,
                   chunk: int = 512, needed: jax.Array | None = None) -> jax.Array:
  """log p(labels) [b, t] float32 from final hidden states [b, t, d], `chunk` positions at a time.

  needed [b, t] (optional): positions whose log-prob is used. A chunk with none (e.g. one that holds only
  prompt and image tokens) skips its LM head and returns zeros, forward and backward: LLaVA SFT rows
  start with hundreds to thousands of image and prompt tokens, whose chunks need no logits.
  """
  b, t, d = hidden.shape
  chunk = min(chunk, t)
  pad = (-t) % chunk
  if needed is None:
    needed = jnp.ones(labels.shape, bool)
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, pad)))
    needed = jnp.pad(needed, ((0, 0), (0, pad)))
  n = (t + pad) // chunk
  hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)  # [n, b, c, d]
  ls = labels.reshape(b, n, chunk).swapaxes(0, 1)
  ns = needed.reshape(b, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one(h, lab):
    logits = logits_fn(h).astype(jnp.float32)  # [b, c, v]
    picked = jnp.take_along_axis(logits, lab[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)

  def maybe(h, lab, need):
    return jax.lax.cond(jnp.any(need), one, lambda h, lab: jnp.zeros(lab.shape, jnp.float32), h, lab)

  out = jax.lax.map(lambda x: maybe(*x), (hs, ls, ns))  # [n, b, c]
  return out.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]


def masked_cross_entropy(hidden, logits_fn, input_ids, loss_mask, segment_ids, chunk: int = 512):
  """Mean CE over trainable target tokens -> (loss [], per-token loss [b, t], weights [b, t])."""
  labels, weights = next_token_targets(input_ids, loss_mask, segment_ids)
  nll = -token_logprobs(hidden, logits_fn, labels, chunk, weights > 0) * weights
  return nll.sum() / jnp.maximum(weights.sum(), 1.0), nll, weights


def sequence_logprobs(hidden, logits_fn, input_ids, loss_mask, segment_ids, chunk: int = 512):
  """Summed log-prob of each row's trainable tokens -> (logp [b], token count [b])."""
  labels, weights = next_token_targets(input_ids, loss_mask, segment_ids)
  lp = token_logprobs(hidden, logits_fn, labels, chunk, weights > 0) * weights
  return lp.sum(-1), weights.sum(-1)


def pair_sums(values: jax.Array, segment_ids: jax.Array, branches: jax.Array, pairs_per_row: int, branch: int):
  """Per-pair sums over one branch of shared-prompt rows: values [b, t] -> [b * K] (pair k of row r at r * K + k).

  Segment k + 1 of a row is its pair k (`batches.SharedDpoBatch`); only tokens with `branches == branch` count.
  """
  pair = jax.nn.one_hot(segment_ids - 1, pairs_per_row, dtype=values.dtype)  # [b, t, K]; padding (-1) is all 0
  return jnp.einsum("bt,btk->bk", jnp.where(branches == branch, values, 0), pair).reshape(-1)


DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
  """The DPO family on sequence log-probs [b] -> (losses [b], chosen_rewards [b], rejected_rewards [b]).

  With h = (pi_c - pi_r) - (ref_c - ref_r) and s = label_smoothing:
    sigmoid: -(1 - s) log sigma(beta h) - s log sigma(-beta h)        (DPO; s > 0 is conservative DPO)
    hinge:   max(0, 1 - beta h)                                       (SLiC)
    ipo:     (h - 1 / (2 beta))^2                                     (IPO; pass LENGTH-AVERAGED log-probs)
    robust:  ((1 - s)(-log sigma(beta h)) + s log sigma(-beta h)) / (1 - 2 s)   (rDPO, unbiased under noise)
  Rewards are beta * (policy - reference) log-prob ratios (detached), as TRL reports them.
  """
  if loss_type not in DPO_LOSS_TYPES:
    raise ValueError(f"loss_type={loss_type!r}; expected one of {DPO_LOSS_TYPES}")
  h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
  s = label_smoothing
  if loss_type == "sigmoid":
    losses = -(1 - s) * jax.nn.log_sigmoid(beta * h) - s * jax.nn.log_sigmoid(-beta * h)
  elif loss_type == "hinge":
    losses = jax.nn.relu(1 - beta * h)
  elif loss_type == "ipo":
    losses = (h - 1 / (2 * beta)) ** 2
  else:
    if not 0 <= s < 0.5:
      raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {s}")
    losses = ((1 - s) * -jax.nn.log_sigmoid(beta * h) + s * jax.nn.log_sigmoid(-beta * h)) / (1 - 2 * s)
  chosen_rewards = jax.lax.stop_gradient(beta * (policy_chosen_logps - ref_chosen_logps))
  rejected_rewards = jax.lax.stop_gradient(beta * (policy_rejected_logps - ref_rejected_logps))
  return losses, chosen_rewards, rejected_rewards
