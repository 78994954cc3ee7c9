"""Pure train-step functions over (graphdef, params) for SFT and DPO, with gradient accumulation.

A loss function returns (sum of per-item losses, aux) where aux["count"] is the number of items the
sum runs over (target tokens for SFT, pairs for DPO); the step divides summed gradients by the total
count, so accumulating A micro-batches gives exactly the gradient of the full batch.

State: {"step": int32 [], "params": pure dict of arrays, "opt_state": optax state}.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from insightv_jax.train import losses


def sft_loss(graphdef, params, batch, *, chunk: int = 512):
  model = nnx.merge(graphdef, params)
  h, _ = model.hidden_states(batch["input_ids"], batch.get("pixel_values"), batch.get("image_sizes"),
                             segment_ids=batch["segment_ids"], positions=batch["positions"])
  _, nll, weights = losses.masked_cross_entropy(h, model.logits, batch["input_ids"], batch["loss_mask"],
                                                batch["segment_ids"], chunk)
  return nll.sum(), {"count": weights.sum()}


def pair_logprobs(graphdef, params, batch, *, chunk: int = 512):
  """Chosen and rejected sequence log-probs from ONE forward over [chosen; rejected], images encoded once.

  Returns (logps [2b], token counts [2b]) with the chosen rows first.
  """
  model = nnx.merge(graphdef, params)
  feats = None
  if "pixel_values" in batch:
    feats = model.image_features(batch["pixel_values"], batch["image_sizes"])
  cat = lambda k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]], axis=0)
  ids, seg = cat("input_ids"), cat("segment_ids")
  x = jnp.concatenate([model.embed(batch["chosen_input_ids"], feats),
                       model.embed(batch["rejected_input_ids"], feats)], axis=0)
  h, _ = model.language_model(x, seg, cat("positions"))
  return losses.sequence_logprobs(h, model.logits, ids, cat("loss_mask"), seg, chunk)


def dpo_loss(graphdef, params, batch, *, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             sft_weight: float = 0.0, chunk: int = 512, ref_params=None):
  """DPO on a batch of pairs; reference log-probs from batch["ref_logps"] [b, 2] or from `ref_params`."""
  logp, count = pair_logprobs(graphdef, params, batch, chunk=chunk)
  b = logp.shape[0] // 2
  if ref_params is not None:
    ref_logp, _ = pair_logprobs(graphdef, ref_params, batch, chunk=chunk)
    ref_logp = jax.lax.stop_gradient(ref_logp)
    ref_c, ref_r = ref_logp[:b], ref_logp[b:]
  else:
    ref_c, ref_r = batch["ref_logps"][:, 0], batch["ref_logps"][:, 1]
  pc, pr = logp[:b], logp[b:]
  if loss_type == "ipo":  # IPO is defined on length-averaged log-probs
    nc, nr = jnp.maximum(count[:b], 1), jnp.maximum(count[b:], 1)
    pc, pr, ref_c, ref_r = pc / nc, pr / nr, ref_c / nc, ref_r / nr
  per_pair, rc, rr = losses.dpo_loss(pc, pr, ref_c, ref_r, beta=beta, loss_type=loss_type,
                                     label_smoothing=label_smoothing)
  valid = (count[:b] > 0).astype(jnp.float32)  # padding rows of a short final batch
  total = (per_pair * valid).sum()
  if sft_weight:
    total = total + sft_weight * (-(logp[:b] / jnp.maximum(count[:b], 1)) * valid).sum()
  aux = {"count": valid.sum(), "rewards/chosen": (rc * valid).sum(), "rewards/rejected": (rr * valid).sum(),
         "rewards/accuracy": ((rc > rr) * valid).sum(), "rewards/margin": ((rc - rr) * valid).sum()}
  return total, aux


def make_train_step(graphdef, loss_fn: Callable, tx: optax.GradientTransformation, trainable, *,
                    accum_steps: int = 1, schedule: optax.Schedule | None = None):
  """-> step(state, batch) -> (state, metrics). Metrics are means over the batch's items.

  loss_fn(graphdef, params, batch, ref_params) -> (summed loss, aux); ref_params is state["ref_params"]
  (a frozen reference model, DPO) or None.
  """

  def step(state, batch):
    params, ref = state["params"], state.get("ref_params")

    def loss_of(p, mb):
      p = jax.tree.map(lambda x, t: x if t else jax.lax.stop_gradient(x), p, trainable)
      return loss_fn(graphdef, p, mb, ref)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    batch = {k: v for k, v in batch.items() if k != "num_skipped"}
    if accum_steps == 1:
      (loss_sum, aux), grads = grad_fn(params, batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:]), batch)
      (l0, a0), g0 = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l0, a0, g0))

      def body(carry, mb):
        (l, a), g = grad_fn(params, mb)
        return jax.tree.map(jnp.add, carry, (l, a, g)), None

      (loss_sum, aux, grads), _ = jax.lax.scan(body, zeros, micro)
    denom = jnp.maximum(aux["count"], 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    trained = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
    metrics = {"loss": loss_sum / denom, "grad_norm": optax.tree.norm(trained), "items": aux["count"]}
    metrics.update({k: v / denom for k, v in aux.items() if k != "count"})
    if schedule is not None:
      metrics["learning_rate"] = schedule(state["step"])
    return {**state, "step": state["step"] + 1, "params": new_params, "opt_state": opt_state}, metrics

  return step
