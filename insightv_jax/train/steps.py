"""Pure train-step functions over (graphdef, params) for SFT and DPO, with gradient accumulation.

A loss function returns (sum of per-item losses, aux) where aux["count"] is the number of items the
sum runs over (target tokens for SFT, pairs for DPO); the step divides summed gradients by the total
count, so accumulating A micro-batches gives exactly the gradient of the full batch.

State: {"step": int32 [], "params": pure dict of arrays, "opt_state": optax state} and, for DPO against a
frozen reference model, "ref_params": its trained parameters only (train/state.py builds it). Batches
(insightv_jax/data/batches.py): `SftBatch`, and for DPO either pair layout, `DpoBatch` (two rows per pair) or
`SharedDpoBatch` (one `[prompt | chosen | rejected]` row per pair, or several packed), with the same log-probs.
`compile_train_step` jits a step with its shardings and compiles it ahead of time; the train loop and the dry
run both use it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from insightv_jax import sharding
from insightv_jax.data import shared_pairs
from insightv_jax.data.batches import PairBatch, SftBatch, SharedDpoBatch
from insightv_jax.train import losses
from insightv_jax.train import state as state_lib


def sft_loss(graphdef, params, batch: SftBatch, *, chunk: int = 512):
  model = nnx.merge(graphdef, params)
  t = batch.tokens
  h, _ = model.hidden_states(t.input_ids, batch.pixel_values, batch.image_sizes, segment_ids=t.segment_ids,
                             positions=t.positions)
  _, nll, weights = losses.masked_cross_entropy(h, model.logits, t.input_ids, t.loss_mask, t.segment_ids, chunk)
  return nll.sum(), {"count": weights.sum()}


def pair_logprobs(graphdef, params, batch: PairBatch, *, chunk: int = 512, tower_features=None):
  """Chosen and rejected sequence log-probs of every pair, images encoded once.

  Returns (logps [2P], token counts [2P]) with the P chosen first: P = B for `DpoBatch` (ONE forward over
  [chosen; rejected] rows), B * K for `SharedDpoBatch` (one forward over the shared rows; empty pair slots
  have count 0). tower_features [I * n, s, dv]: the vision tower's output for batch.pixel_values
  (`LlavaNext.encode_tiles`) when already computed: the tower is then not run (the DPO reference of a frozen
  tower reuses the policy's).
  """
  model = nnx.merge(graphdef, params)
  feats = None
  if batch.pixel_values is not None:
    feats = model.image_features(batch.pixel_values, batch.image_sizes, tower_features=tower_features)
  if isinstance(batch, SharedDpoBatch):
    return _shared_pair_logprobs(model, batch, feats, chunk)
  rows = jax.tree.map(lambda c, r: jnp.concatenate([c, r], axis=0), batch.chosen, batch.rejected)  # [2B, T]
  x = jnp.concatenate([model.embed(batch.chosen.input_ids, feats),
                       model.embed(batch.rejected.input_ids, feats)], axis=0)
  h, _ = model.language_model(x, rows.segment_ids, rows.positions)
  return losses.sequence_logprobs(h, model.logits, rows.input_ids, rows.loss_mask, rows.segment_ids, chunk)


def _shared_pair_logprobs(model, batch: SharedDpoBatch, feats, chunk: int):
  """`pair_logprobs` of shared-prompt rows: one forward in which each prompt runs once and each reply sees
  only the prompt and itself (`branches`), then per-pair sums per branch -> (logps [2P], counts [2P])."""
  t = batch.tokens
  h, _ = model.language_model(model.embed(t.input_ids, feats), t.segment_ids, t.positions, branches=batch.branches)
  labels, weights = losses.next_token_targets(t.input_ids, t.loss_mask, t.segment_ids)
  lp = losses.token_logprobs(h, model.logits, labels, chunk, weights > 0) * weights  # [B, T]
  sums = lambda x, branch: losses.pair_sums(x, t.segment_ids, batch.branches, batch.pairs_per_row, branch)
  logps = jnp.concatenate([sums(lp, shared_pairs.CHOSEN), sums(lp, shared_pairs.REJECTED)])
  return logps, jnp.concatenate([sums(weights, shared_pairs.CHOSEN), sums(weights, shared_pairs.REJECTED)])


def dpo_loss(graphdef, params, batch: PairBatch, *, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, sft_weight: float = 0.0, chunk: int = 512, ref_params=None):
  """DPO on a batch of pairs; reference log-probs from `ref_params` if given, else batch.ref_logps ([B, 2], or
  [B, K, 2] for shared-prompt rows).

  ref_params: the reference's trained parameters (`state.trained_part`); what it lacks is frozen, so identical
  in `params` and taken from there. Without "vision_tower" (the tower frozen) the tower runs once, for both.
  """
  tower = None
  if ref_params is not None and batch.pixel_values is not None and state_lib.shares_tower(ref_params):
    tower = nnx.merge(graphdef, params).encode_tiles(batch.pixel_values)  # frozen: the same for the reference
  logp, count = pair_logprobs(graphdef, params, batch, chunk=chunk, tower_features=tower)
  b = logp.shape[0] // 2
  if ref_params is not None:
    ref_logp, _ = pair_logprobs(graphdef, state_lib.reference_params(ref_params, params), batch, chunk=chunk,
                                tower_features=None if tower is None else jax.lax.stop_gradient(tower))
    ref_logp = jax.lax.stop_gradient(ref_logp)
    ref_c, ref_r = ref_logp[:b], ref_logp[b:]
  else:
    ref = batch.ref_logps.reshape(-1, 2)  # [P, 2], pairs in the order of `pair_logprobs`
    ref_c, ref_r = ref[:, 0], ref[:, 1]
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


def compile_train_step(step_fn: Callable, abstract_state, abstract_batch, mesh):
  """`step_fn` jitted and compiled ahead of time for these abstract inputs.

  abstract_state / abstract_batch: pytrees of `jax.ShapeDtypeStruct`s whose shardings become the step's
  in_shardings (the state's also its out_shardings; metrics come back replicated). The state is donated.
  """
  shardings = lambda tree: jax.tree.map(lambda x: x.sharding, tree)
  jitted = jax.jit(step_fn, in_shardings=(shardings(abstract_state), shardings(abstract_batch)),
                   out_shardings=(shardings(abstract_state), sharding.replicated(mesh)), donate_argnums=0)
  with sharding.use_mesh(mesh):
    return jitted.lower(abstract_state, abstract_batch).compile()


def memory_gib(compiled) -> dict[str, float] | None:
  """Per-device memory of a compiled step (`memory_analysis()`) in GiB; None where the backend has none.

  peak_estimate = arguments + temporaries + outputs - aliased (donated state reused for the new state).
  """
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  gib = lambda x: round(x / 2**30, 3)
  return {"arguments": gib(mem.argument_size_in_bytes), "outputs": gib(mem.output_size_in_bytes),
          "temporaries": gib(mem.temp_size_in_bytes), "aliased": gib(mem.alias_size_in_bytes),
          "generated_code": gib(mem.generated_code_size_in_bytes),
          "peak_estimate": gib(mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
                               - mem.alias_size_in_bytes)}
