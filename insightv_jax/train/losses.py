"""Losses: masked next-token cross-entropy and log-probs, computed in sequence chunks.

Full fp32 logits [b, t, v] are never materialised for the whole batch: the LM head and the log-softmax
run over chunks of `chunk` positions under `jax.checkpoint`, so the backward pass recomputes each chunk's
logits instead of storing them (LLaMA-3's 128K vocabulary x 8K tokens would be 4 GB per sequence).

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
                   chunk: int = 512) -> jax.Array:
  """log p(labels) [b, t] float32 from final hidden states [b, t, d], `chunk` positions at a time."""
  b, t, d = hidden.shape
  chunk = min(chunk, t)
  pad = (-t) % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, pad)))
  n = (t + pad) // chunk
  hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)  # [n, b, c, d]
  ls = labels.reshape(b, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one(h, lab):
    logits = logits_fn(h).astype(jnp.float32)  # [b, c, v]
    picked = jnp.take_along_axis(logits, lab[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)

  out = jax.lax.map(lambda x: one(*x), (hs, ls))  # [n, b, c]
  return out.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]


def masked_cross_entropy(hidden, logits_fn, input_ids, loss_mask, segment_ids, chunk: int = 512):
  """Mean CE over trainable target tokens -> (loss [], per-token loss [b, t], weights [b, t])."""
  labels, weights = next_token_targets(input_ids, loss_mask, segment_ids)
  nll = -token_logprobs(hidden, logits_fn, labels, chunk) * weights
  return nll.sum() / jnp.maximum(weights.sum(), 1.0), nll, weights
