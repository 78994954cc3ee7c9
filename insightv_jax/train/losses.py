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


# ------------------------------------------------------------------------------------------------------ GRPO
# The definitions of TRL 1.16.0's `GRPOTrainer` (trl/trainer/grpo_trainer.py: advantages in
# `_generate_and_score_completions` with `multi_objective_aggregation="sum_then_normalize"`, the loss and its
# metrics in `_compute_loss`; `nanstd` in trl/trainer/utils.py), so that our numbers compare with TRL's.

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
ADVANTAGE_SCALES = ("group", "batch", "none")
IMPORTANCE_LEVELS = ("token", "sequence")


def _nanstd(x: jax.Array, axis=None) -> jax.Array:
  """Unbiased std ignoring NaNs (TRL's `nanstd`): NaN where fewer than two values are present."""
  mean = jnp.nanmean(x, axis=axis, keepdims=True)
  var = jnp.nanmean((x - mean) ** 2, axis=axis)
  n = jnp.sum(~jnp.isnan(x), axis=axis)
  return jnp.sqrt(jnp.where(n > 1, var * n / jnp.maximum(n - 1, 1), jnp.nan))


def group_advantages(rewards: jax.Array, group_size: int, *, scale: str = "group") -> jax.Array:
  """Group-relative advantages: rewards [N] (group g = rewards[g * G:(g + 1) * G], G = group_size) -> [N].

    A = (r - mean of r's group) / (std + 1e-4)
  std: unbiased, over r's group ("group"), over the whole batch ("batch"), or no division ("none"). A NaN reward
  (a reply no reward function could score) is left out of the means and stds, and its advantage is 0.
  """
  if scale not in ADVANTAGE_SCALES:
    raise ValueError(f"advantage scale={scale!r}; expected one of {ADVANTAGE_SCALES}")
  rewards = jnp.asarray(rewards, jnp.float32)
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of group_size={group_size}")
  grouped = rewards.reshape(-1, group_size)
  adv = (grouped - jnp.nanmean(grouped, axis=1, keepdims=True)).reshape(-1)
  if scale == "group":
    std = jnp.repeat(_nanstd(grouped, axis=1), group_size) if group_size > 1 else jnp.zeros_like(rewards)
  else:
    std = _nanstd(rewards) if rewards.shape[0] > 1 else jnp.zeros((), jnp.float32)
  if scale != "none":
    adv = adv / (std + 1e-4)
  return jnp.nan_to_num(adv, nan=0.0)


def group_std(rewards: jax.Array, group_size: int) -> jax.Array:
  """Each group's unbiased reward std (NaN rewards left out) -> [N / group_size]; NaN where fewer than two
  rewards are present. Zero spread (TRL's `frac_reward_zero_std` counts it; DAPO's dynamic sampling drops the
  group) is `jnp.isclose(std, 0)`."""
  rewards = jnp.asarray(rewards, jnp.float32)
  return _nanstd(rewards.reshape(-1, group_size), axis=1)


def grpo_token_terms(logps, old_logps, ref_logps, advantages, mask, *, epsilon: float = 0.2,
                     epsilon_high: float | None = None, beta: float = 0.0, importance_sampling_level: str = "token"):
  """The per-token GRPO objective before any reduction (TRL `_compute_loss`, loss types grpo/bnpo/dr_grpo/dapo).

  logps, old_logps, ref_logps (or None when beta = 0): [B, T] per-token log-probs of the completions under the
  policy, the policy that sampled them (detached), the frozen reference; advantages [B]; mask [B, T] (1 = a
  completion token). With r = exp(logps - old_logps) per token ("token") or exp of its masked mean per sequence
  ("sequence", GSPO), e_lo = epsilon, e_hi = epsilon_high or epsilon:

    per_token_loss = -min(r A, clip(r, 1 - e_lo, 1 + e_hi) A) + beta * (exp(ref - logps) - (ref - logps) - 1)

  Returns (per_token_loss [B, T], terms) where terms are [B, T] float32 per-token quantities for the metrics:
  "ratio", "clip_low" (r < 1 - e_lo and A < 0), "clip_high" (r > 1 + e_hi and A > 0), "clip_region" (either),
  and "kl" (the k3 estimate; zeros without a reference). At the sequence level the ratio and clip terms are one
  value per sequence, broadcast over its tokens.
  """
  if importance_sampling_level not in IMPORTANCE_LEVELS:
    raise ValueError(f"importance_sampling_level={importance_sampling_level!r}; expected one of {IMPORTANCE_LEVELS}")
  if beta != 0.0 and ref_logps is None:
    raise ValueError(f"beta={beta} needs ref_logps (the reference model's per-token log-probs)")
  mask = mask.astype(jnp.float32)
  old_logps = jax.lax.stop_gradient(old_logps)
  e_lo, e_hi = epsilon, epsilon if epsilon_high is None else epsilon_high
  log_ratio = logps - old_logps
  if importance_sampling_level == "sequence":
    seq = (log_ratio * mask).sum(-1, keepdims=True) / jnp.maximum(mask.sum(-1, keepdims=True), 1.0)
    log_ratio = jnp.broadcast_to(seq, logps.shape)
  ratio = jnp.exp(log_ratio)
  adv = advantages.astype(jnp.float32)[:, None]
  clipped = jnp.clip(ratio, 1 - e_lo, 1 + e_hi)
  per_token = -jnp.minimum(ratio * adv, clipped * adv)
  kl = jnp.zeros_like(per_token)
  if ref_logps is not None:
    d = jax.lax.stop_gradient(ref_logps) - logps
    kl = jnp.exp(d) - d - 1
    if beta != 0.0:
      per_token = per_token + beta * kl
  low = ((ratio < 1 - e_lo) & (adv < 0)).astype(jnp.float32)
  high = ((ratio > 1 + e_hi) & (adv > 0)).astype(jnp.float32)
  terms = {"ratio": jax.lax.stop_gradient(ratio), "clip_low": low, "clip_high": high,
           "clip_region": jnp.maximum(low, high), "kl": jax.lax.stop_gradient(kl)}
  return per_token, terms


def _check_loss_type(loss_type: str, max_completion_length: int | None):
  if loss_type not in GRPO_LOSS_TYPES:
    raise ValueError(f"loss_type={loss_type!r}; expected one of {GRPO_LOSS_TYPES}")
  if loss_type == "dr_grpo" and not max_completion_length:
    raise ValueError("loss_type='dr_grpo' divides by B x max_completion_length: pass max_completion_length")


def grpo_sums(logps, old_logps, ref_logps, advantages, mask, *, loss_type: str = "grpo", epsilon: float = 0.2,
              epsilon_high: float | None = None, beta: float = 0.0, importance_sampling_level: str = "token",
              max_completion_length: int | None = None):
  """The gradient-accumulation form of `grpo_loss`: (summed loss [], aux) with aux["count"] the divisor, so that
  summing both over micro-batches and dividing gives `grpo_loss` of the whole batch (the `steps.make_train_step`
  contract). Shapes as in `grpo_token_terms`; a row whose mask is all 0 is padding (an empty reply slot) and
  counts nowhere.

    grpo      sum over sequences of each one's token mean        count = sequences
    bnpo      sum over tokens                                    count = tokens
    dapo      sum over tokens                                    count = tokens
    dr_grpo   sum over tokens                                    count = sequences x max_completion_length

  aux also holds sums (`GRPO_SUM_KEYS`; the step divides them by the same count, so their ratios stay exact
  means): "sequences", "tokens", "kl_sum" over tokens, and "ratio_sum", "clip_low_sum", "clip_high_sum",
  "clip_region_sum" over "clip_items" (tokens, or sequences at the sequence importance level); `grpo_metrics`
  turns them into TRL's means.
  """
  _check_loss_type(loss_type, max_completion_length)
  per_token, terms = grpo_token_terms(logps, old_logps, ref_logps, advantages, mask, epsilon=epsilon,
                                      epsilon_high=epsilon_high, beta=beta,
                                      importance_sampling_level=importance_sampling_level)
  mask = mask.astype(jnp.float32)
  n_tok = mask.sum(-1)  # [B]
  seqs = (n_tok > 0).astype(jnp.float32)
  if loss_type == "grpo":
    total = ((per_token * mask).sum(-1) / jnp.maximum(n_tok, 1.0)).sum()
    count = seqs.sum()
  elif loss_type == "dr_grpo":
    total, count = (per_token * mask).sum(), seqs.sum() * max_completion_length
  else:
    total, count = (per_token * mask).sum(), mask.sum()
  if importance_sampling_level == "sequence":  # ratio and clip fractions: one value per sequence
    weight, pick = seqs[:, None], lambda x: x[:, :1]
  else:
    weight, pick = mask, lambda x: x
  aux = {"count": count, "sequences": seqs.sum(), "tokens": mask.sum(), "kl_sum": (terms["kl"] * mask).sum(),
         "clip_items": weight.sum()}
  for name in ("ratio", "clip_low", "clip_high", "clip_region"):
    aux[f"{name}_sum"] = (pick(terms[name]) * weight).sum()
  return total, aux


GRPO_SUM_KEYS = ("sequences", "tokens", "kl_sum", "clip_items", "ratio_sum", "clip_low_sum", "clip_high_sum",
                 "clip_region_sum")


def grpo_metrics(aux: dict) -> dict:
  """TRL's GRPO metrics from `grpo_sums`' aux (summed over micro-batches; each entry may have been divided by one
  common count, as the train step does, which cancels here): "kl" (token mean of the k3 KL), "clip_ratio/low_mean",
  "clip_ratio/high_mean", "clip_ratio/region_mean" and "ratio_mean" (token means, or means over sequences at the
  sequence importance level, as TRL's `global_masked_mean`; TRL logs no ratio mean: ours is the same kind of mean
  of the importance ratio)."""
  tokens, items = jnp.maximum(aux["tokens"], 1e-30), jnp.maximum(aux["clip_items"], 1e-30)
  return {"kl": aux["kl_sum"] / tokens, "clip_ratio/low_mean": aux["clip_low_sum"] / items,
          "clip_ratio/high_mean": aux["clip_high_sum"] / items,
          "clip_ratio/region_mean": aux["clip_region_sum"] / items, "ratio_mean": aux["ratio_sum"] / items}


def grpo_loss(logps, old_logps, ref_logps, advantages, mask, *, loss_type: str = "grpo", epsilon: float = 0.2,
              epsilon_high: float | None = None, beta: float = 0.0, importance_sampling_level: str = "token",
              max_completion_length: int | None = None):
  """TRL's GRPO loss of one whole batch on one process -> (loss [], metrics); see `grpo_token_terms`.

    grpo      mean over the B sequences of each one's token mean (an all-0 mask row counts, with loss 0)
    bnpo      token mean over the batch
    dapo      token mean over the batch (TRL: over the whole generation batch, across processes)
    dr_grpo   token sum / (B x max_completion_length)

  Metrics: `grpo_metrics`. For the train step's micro-batches use `grpo_sums`, equal whenever every row has a
  completion token.
  """
  kw = dict(loss_type=loss_type, epsilon=epsilon, epsilon_high=epsilon_high, beta=beta,
            importance_sampling_level=importance_sampling_level, max_completion_length=max_completion_length)
  total, aux = grpo_sums(logps, old_logps, ref_logps, advantages, mask, **kw)
  b = logps.shape[0]
  count = {"grpo": b, "dr_grpo": b * (max_completion_length or 0)}.get(loss_type, jnp.maximum(aux["tokens"], 1.0))
  return total / count, grpo_metrics(aux)
