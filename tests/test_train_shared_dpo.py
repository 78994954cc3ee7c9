"""Shared-prompt DPO: `[prompt | chosen | rejected]` rows give the unshared path's log-probs, loss and gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_data import loader_config, write_training_data

from insightv_jax.data import loader, records, shared_pairs, sources
from insightv_jax.data.batches import DpoBatch, SharedDpoBatch
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.model.llava import LlavaNext
from insightv_jax.train import optim, steps
from insightv_jax.train import state as state_lib

N = 12


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tiny_cfg):
  """tests/train_data's image pairs (a sound chain vs a miscounted one) with reference log-probs that name each
  pair, its tokenizer, and a model fitted to it."""
  root = str(tmp_path_factory.mktemp("shared_dpo"))
  data = write_training_data(root, N)
  src = sources.open_source("array_record", data["dpo"])
  recs = [dataclasses.replace(records.loads(src[i][1]), ref_hash="r", ref_chosen_logp=-1.0 - i,
                              ref_rejected_logp=-2.0 - i) for i in range(len(src))]
  records.write_array_record(f"{root}/named.ar", recs)
  tok = load_tokenizer(data["tok"])
  cfg = fit_model_config(tiny_cfg, tok)
  graphdef, params = nnx.split(LlavaNext(cfg, rngs=nnx.Rngs(3)))
  return dict(root=root, tok=tok, cfg=cfg, src=sources.open_source("array_record", f"{root}/named.ar"),
              graphdef=graphdef, params=nnx.to_pure_dict(params))


def _batch(pairs, batch_type, **kw):
  cfg = loader_config(**{**dict(max_len=384, batch_size=4, image_root=pairs["root"], seed=5), **kw})
  ds = loader.make_dataset(pairs["src"], cfg, pairs["cfg"], pairs["tok"], batch_type=batch_type)
  batch, stats = next(iter(ds))
  assert stats.skipped == 0
  return batch


def _logps(pairs, batch):
  logp, count = jax.jit(lambda p, b: steps.pair_logprobs(pairs["graphdef"], p, b, chunk=128))(pairs["params"], batch)
  return np.asarray(logp), np.asarray(count)


def _grads(pairs, batch):
  """d/dparams of a weighted sum of every pair's chosen and rejected log-probs (linear in them, so fp32 noise in
  the log-probs is not amplified, as a DPO loss's sigmoid of their -300-sized differences does)."""
  def f(p):
    logp, _ = steps.pair_logprobs(pairs["graphdef"], p, batch, chunk=128)
    return (logp * jnp.linspace(-1.0, 1.0, logp.shape[0])).sum()  # chosen and rejected weighted apart
  return jax.jit(jax.grad(f))(pairs["params"])


def _dpo(pairs, batch):
  return float(jax.jit(lambda p: steps.dpo_loss(pairs["graphdef"], p, batch, beta=0.5, sft_weight=0.7,
                                                chunk=128)[0])(pairs["params"]))


def test_shared_row_is_laid_out_as_documented():
  """The worked row of batches.py: p2 heads both branches, positions continue from the prompt."""
  p, c, r = [10, 11, 12], [20, 21], [30, 31, 32]
  chosen = (np.asarray(p + c), np.asarray([0, 0, 0, 1, 1]))
  rejected = (np.asarray(p + r), np.asarray([0, 0, 0, 1, 1, 1]))
  ids, mask, pos, br = shared_pairs.share_prompt(chosen, rejected, max_len=9)
  np.testing.assert_array_equal(ids, [10, 11, 12, 20, 21, 12, 30, 31, 32])
  np.testing.assert_array_equal(br, [0, 0, 1, 1, 1, 2, 2, 2, 2])
  np.testing.assert_array_equal(pos, [0, 1, 2, 3, 4, 2, 3, 4, 5])
  np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 0, 1, 1, 1])
  # one token short: the longer (rejected) reply loses its last token; two targets short of min: over-long
  ids, mask, _, br = shared_pairs.share_prompt(chosen, rejected, max_len=8)
  np.testing.assert_array_equal(ids, [10, 11, 12, 20, 21, 12, 30, 31])
  with pytest.raises(shared_pairs.TooLong, match="max_len=6"):
    shared_pairs.share_prompt(chosen, rejected, max_len=6, min_target_tokens=2)


def test_shared_rows_give_the_unshared_logprobs_loss_and_gradients(pairs):
  """Same pairs, same order: per-pair log-probs, token counts, loss and every gradient agree in fp32."""
  plain, shared = _batch(pairs, DpoBatch), _batch(pairs, SharedDpoBatch)
  assert isinstance(shared, SharedDpoBatch) and shared.tokens.input_ids.shape == plain.chosen.input_ids.shape
  # the shared row is shorter than the two rows it replaces, and holds each image's tokens once
  image = pairs["cfg"].image_token_index
  assert ((shared.tokens.input_ids == image).sum(1) == (plain.chosen.input_ids == image).sum(1)).all()
  assert ((shared.tokens.segment_ids > 0).sum(1) < (plain.chosen.segment_ids > 0).sum(1)
          + (plain.rejected.segment_ids > 0).sum(1)).all()
  lp_plain, n_plain = _logps(pairs, plain)
  lp_shared, n_shared = _logps(pairs, shared)
  np.testing.assert_array_equal(n_shared, n_plain)
  assert n_plain.min() > 10 and np.abs(lp_plain).min() > 10  # real replies, real log-probs
  np.testing.assert_allclose(lp_shared, lp_plain, rtol=1e-6, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(shared.ref_logps).reshape(-1, 2), plain.ref_logps)
  np.testing.assert_allclose(_dpo(pairs, shared), _dpo(pairs, plain), rtol=1e-5)
  g_plain, g_shared = _grads(pairs, plain), _grads(pairs, shared)
  # each parameter's gradient to 1e-5 of its largest entry, or of 0.01 for the few that are ~0 (key biases, which
  # softmax ignores)
  rel = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(a).max(), 1e-2)), g_plain,
                     g_shared)
  assert max(jax.tree.leaves(rel)) < 1e-5, {
      jax.tree_util.keystr(p): r for p, r in jax.tree_util.tree_leaves_with_path(rel) if r >= 1e-5}
  trained = [float(jnp.abs(g).max()) > 1e-2 for g in jax.tree.leaves(g_plain)]
  assert sum(trained) > 0.7 * len(trained)  # most parameters get a real gradient (61 of 81 here)


def test_packed_shared_rows_give_the_same_pairs_logprobs(pairs):
  """Two pairs per row (each with its image): every filled pair slot has the log-probs of its unshared rows."""
  plain = _batch(pairs, DpoBatch, batch_size=N)  # every pair, in reading order
  packed = _batch(pairs, SharedDpoBatch, batch_size=4, pack=True, pairs_per_row=2, images_per_row=2, max_len=640)
  assert (packed.tokens.segment_ids.max(1) == 2).all()  # every row holds two pairs
  lp_plain, n_plain = _logps(pairs, plain)
  lp_packed, n_packed = _logps(pairs, packed)
  k = len(n_packed) // 2
  filled = n_packed[:k] > 0
  assert filled.sum() == 8
  plain_by_name = {float(r): i for i, r in enumerate(plain.ref_logps[:, 0])}
  names = np.asarray(packed.ref_logps).reshape(-1, 2)[:, 0]
  assert (names[~filled] == 0).all() and len({float(r) for r in names[filled]}) == 8
  for slot in np.flatnonzero(filled):
    i = plain_by_name[float(names[slot])]
    np.testing.assert_array_equal([n_packed[slot], n_packed[k + slot]], [n_plain[i], n_plain[N + i]])
    np.testing.assert_allclose([lp_packed[slot], lp_packed[k + slot]], [lp_plain[i], lp_plain[N + i]], rtol=1e-6,
                               atol=1e-5)


@pytest.mark.parametrize("batch_type", [DpoBatch, SharedDpoBatch])
def test_frozen_tower_runs_once_with_the_two_tower_loss_and_gradients(pairs, batch_type, monkeypatch):
  """With the vision tower frozen, `ref_params` is the trained part only (`state.trained_part`) and the reference
  reuses the policy's tower output: the tower runs once per step, and the DPO loss and every gradient equal the
  path with a full reference copy (tower included, run twice)."""
  batch = _batch(pairs, batch_type)
  params = pairs["params"]
  trainable = optim.trainable_mask(params, ["^vision_tower/"])
  # a reference that differs from the policy where it is trained (as after some DPO steps), equal where frozen
  noise = iter(jax.random.split(jax.random.key(7), len(jax.tree.leaves(params))))
  ref_full = jax.tree.map(lambda x, t: x + 0.02 * jax.random.normal(next(noise), x.shape, x.dtype) if t else x,
                          params, trainable)
  ref_part = state_lib.trained_part(ref_full, trainable)
  assert set(ref_part) == set(params) - {"vision_tower"} and state_lib.shares_tower(ref_part)
  assert not state_lib.shares_tower(ref_full)
  stop_frozen = lambda p: jax.tree.map(lambda x, t: x if t else jax.lax.stop_gradient(x), p, trainable)

  towers = []
  encode_tiles = LlavaNext.encode_tiles
  monkeypatch.setattr(LlavaNext, "encode_tiles", lambda self, pv: towers.append(1) or encode_tiles(self, pv))

  def loss_and_grads(ref):
    towers.clear()
    f = lambda p: steps.dpo_loss(pairs["graphdef"], stop_frozen(p), batch, beta=0.1, sft_weight=0.7, chunk=128,
                                 ref_params=ref)
    (loss, aux), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
    return float(loss), jax.tree.map(float, aux), grads, len(towers)

  loss2, aux2, g2, runs2 = loss_and_grads(ref_full)
  loss1, aux1, g1, runs1 = loss_and_grads(ref_part)
  assert (runs2, runs1) == (2, 1)  # tower calls while tracing: policy and reference, then the policy's only
  assert abs(aux2["rewards/margin"]) > 1e-3  # the reference differs: a real DPO loss, not log(2) at a zero margin
  np.testing.assert_allclose(loss1, loss2, rtol=1e-6)
  for k in aux2:  # rewards: beta x differences of ~-300 fp32 log-probs, so 1e-5 is 3 ulps of those
    np.testing.assert_allclose(aux1[k], aux2[k], rtol=1e-6, atol=1e-5, err_msg=k)
  # each gradient to 1e-5 of its largest entry (measured: at most 2e-6; XLA fuses the two programs differently, so
  # the reference log-probs differ by a few fp32 ulps, and the loss's sigmoid carries that into every gradient)
  rel = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(a).max(), 1e-2)), g2, g1)
  assert max(jax.tree.leaves(rel)) < 1e-5, {
      jax.tree_util.keystr(p): r for p, r in jax.tree_util.tree_leaves_with_path(rel) if r >= 1e-5}
  assert float(jnp.abs(g1["multi_modal_projector"]["linear_1"]["kernel"]).max()) > 1e-3  # trained: real gradients
