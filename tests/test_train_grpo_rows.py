"""GRPO group rows: `[prompt | reply_1 | ... | reply_G]` rows (several groups per row) give the plain layout's
per-token log-probs, GRPO loss and gradients, on the tiny model with an image per question."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from insightv_jax.data import group_rows
from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
from insightv_jax.train import grpo_steps, losses

G, L = 3, 8


def test_group_row_is_laid_out_as_documented():
  """The worked row of group_rows' module doc."""
  p, a, b = [10, 11, 12], [20, 21], [30, 31, 32]
  ids, mask, pos, br, heads = group_rows.group_example(np.asarray(p), [np.asarray(a), np.asarray(b)])
  np.testing.assert_array_equal(ids, [10, 11, 12, 20, 21, 12, 30, 31, 32])
  np.testing.assert_array_equal(br, [0, 0, 1, 1, 1, 2, 2, 2, 2])
  np.testing.assert_array_equal(pos, [0, 1, 2, 3, 4, 2, 3, 4, 5])
  np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 0, 1, 1, 1])
  np.testing.assert_array_equal(heads, [2, 5])
  packed = group_rows.pack_groups([group_rows.Group(np.asarray(p), [np.asarray(a), np.asarray(b)])], rows=1,
                                  max_len=11, max_reply_len=3, num_tiles=1, tile=4)
  np.testing.assert_array_equal(packed.batch.reply_positions, [[[2, 3, 0], [5, 6, 7]]])
  np.testing.assert_array_equal(packed.batch.reply_mask, [[[1, 1, 0], [1, 1, 1]]])
  np.testing.assert_array_equal(packed.batch.tokens.segment_ids, [[1] * 9 + [0, 0]])
  with pytest.raises(group_rows.DoesNotFit, match="max_len=8"):
    group_rows.pack_groups([group_rows.Group(np.asarray(p), [np.asarray(a), np.asarray(b)])], rows=1, max_len=8,
                           max_reply_len=3, num_tiles=1, tile=4)
  with pytest.raises(group_rows.DoesNotFit, match="max_reply_len=2"):
    group_rows.pack_groups([group_rows.Group(np.asarray(p), [np.asarray(a), np.asarray(b)])], rows=1, max_len=11,
                           max_reply_len=2, num_tiles=1, tile=4)


@pytest.fixture(scope="module")
def setup(tiny_cfg, tiny_model):
  """Three questions, each with its own image (a 2-tile AnyRes grid) and G = 3 replies of 1..8 tokens."""
  rng = np.random.default_rng(0)
  proc = ImageProcessorConfig.for_model(tiny_cfg)
  groups = []
  for q in range(3):
    image = Image.fromarray(rng.integers(0, 255, (28 + 10 * q, 56, 3), np.uint8))
    tiles, size = preprocess(image, proc)
    n_img = proc.num_image_tokens(*size)
    prompt = np.concatenate([rng.integers(1, 200, 4), np.full(n_img, tiny_cfg.image_token_index),
                             rng.integers(1, 200, 5)])
    replies = [rng.integers(1, 200, int(n)) for n in rng.integers(1, L + 1, G)]
    groups.append(group_rows.Group(prompt, replies, [(tiles, size)]))
  graphdef, params = nnx.split(tiny_model)
  params = nnx.to_pure_dict(params)
  ref_params = jax.tree.map(lambda x: x + 0.02 * jnp.sign(jnp.sin(jnp.arange(x.size).reshape(x.shape))), params)
  common = dict(max_reply_len=L, num_tiles=proc.num_tiles, tile=proc.tile, image_token_id=tiny_cfg.image_token_index)
  longest = max(len(g.prompt) + sum(len(r) + 1 for r in g.replies) for g in groups)
  grouped = group_rows.pack_groups(groups, rows=2, max_len=2 * longest, groups_per_row=2, images_per_row=2,
                                   **common)
  plain = group_rows.pack_groups(groups, rows=G * 3, max_len=longest, plain=True, **common)
  adv = rng.normal(0, 1, G * 3).astype(np.float32)
  logps = jax.jit(lambda p, b: grpo_steps.group_logprobs(graphdef, p, b, temperature=0.7, chunk=64))
  return dict(graphdef=graphdef, params=params, logps=logps, ref_params=ref_params, grouped=grouped, plain=plain,
              adv=adv, groups=groups)


def _with_adv(s, packed):
  return packed.batch.replace(advantages=packed.to_slots(s["adv"]))


def test_group_rows_hold_each_prompt_and_image_once(setup, tiny_cfg):
  grouped, plain = setup["grouped"].batch, setup["plain"].batch
  image = tiny_cfg.image_token_index
  assert grouped.tokens.input_ids.shape[0] == 2 and grouped.replies_per_row == 2 * G
  assert (grouped.tokens.segment_ids.max(1) == [2, 1]).all()  # two groups in row 0, the third in row 1
  assert (grouped.tokens.input_ids == image).sum() * G == (plain.tokens.input_ids == image).sum()
  assert (grouped.tokens.segment_ids > 0).sum() < 0.5 * (plain.tokens.segment_ids > 0).sum()
  assert (grouped.image_sizes[:, 0] > 0).sum() == 3 and (plain.image_sizes[:, 0] > 0).sum() == 3 * G
  np.testing.assert_array_equal(setup["grouped"].from_slots(grouped.reply_mask),
                                setup["plain"].from_slots(plain.reply_mask))


def test_group_rows_give_the_plain_logprobs_loss_and_gradients(setup):
  """Per-token log-probs of every reply, the GRPO loss (beta > 0, reference from ref_params) and every gradient
  agree in fp32 between the two layouts."""
  gd, params, ref = setup["graphdef"], setup["params"], setup["ref_params"]
  logps = setup["logps"]
  b_grouped, b_plain = _with_adv(setup, setup["grouped"]), _with_adv(setup, setup["plain"])
  lp_g = setup["grouped"].from_slots(logps(params, b_grouped))
  lp_p = setup["plain"].from_slots(logps(params, b_plain))
  mask = setup["plain"].from_slots(b_plain.reply_mask)
  assert (lp_p[mask == 0] == 0).all() and (lp_p[mask > 0] < -0.5).all()  # real log-probs on every reply token
  np.testing.assert_allclose(lp_g, lp_p, rtol=1e-6, atol=1e-5)
  loss = functools.partial(grpo_steps.grpo_loss_fn, gd, loss_type="dapo", beta=0.1, epsilon_high=0.28,
                           temperature=0.7, chunk=64)
  f = jax.jit(jax.value_and_grad(lambda p, b: loss(p, b, ref), has_aux=True))
  (s_g, aux_g), g_g = f(params, b_grouped)
  (s_p, aux_p), g_p = f(params, b_plain)
  assert float(aux_g["count"]) == float(aux_p["count"]) == float(mask.sum())
  np.testing.assert_allclose(float(s_g), float(s_p), rtol=1e-5)
  np.testing.assert_allclose(float(aux_g["kl_sum"]), float(aux_p["kl_sum"]), rtol=1e-4)
  assert float(aux_g["kl_sum"]) > 1e-3  # the reference differs, so the KL term is tested
  rel = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(a).max(), 1e-2)), g_p, g_g)
  assert max(jax.tree.leaves(rel)) < 1e-5, {
      jax.tree_util.keystr(p): r for p, r in jax.tree_util.tree_leaves_with_path(rel) if r >= 1e-5}
  trained = [float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(g_p)]
  assert sum(trained) > 0.7 * len(trained)


def test_group_logprobs_are_the_models_own(setup, tiny_cfg):
  """One reply's log-probs from the group rows = log_softmax(logits / T) of a plain forward of [prompt | reply]
  through the model's __call__ (no shared layout code involved)."""
  gd, params = setup["graphdef"], setup["params"]
  grp = setup["groups"][1]
  reply = grp.replies[2]
  ids = np.concatenate([grp.prompt, reply])[None]
  tiles, size = grp.images[0]
  pv, sizes = stack_batch([(tiles, size)], ImageProcessorConfig.for_model(tiny_cfg).num_tiles)
  logits = jax.jit(lambda p, *x: nnx.merge(gd, p)(*x))(params, jnp.asarray(ids), jnp.asarray(pv),
                                                       jnp.asarray(sizes))[0] / 0.7
  p = len(grp.prompt)
  want = jax.nn.log_softmax(logits[p - 1:p - 1 + len(reply)], -1)[np.arange(len(reply)), reply]
  packed = setup["grouped"]
  got = packed.from_slots(setup["logps"](params, _with_adv(setup, packed)))
  np.testing.assert_allclose(got[1 * G + 2, :len(reply)], np.asarray(want), rtol=1e-5, atol=1e-5)


def test_first_update_is_the_policy_gradient(setup):
  """old_logps None (num_iterations = 1): the loss is -mean advantage of the replies (grpo), no clipping."""
  gd, params = setup["graphdef"], setup["params"]
  b = _with_adv(setup, setup["grouped"])
  total, aux = jax.jit(lambda p, b: grpo_steps.grpo_loss_fn(gd, p, b, loss_type="grpo", chunk=64))(params, b)
  np.testing.assert_allclose(float(total / aux["count"]), -setup["adv"].mean(), rtol=1e-5, atol=1e-6)
  m = losses.grpo_metrics(aux)
  assert float(m["ratio_mean"]) == pytest.approx(1.0) and float(m["clip_ratio/region_mean"]) == 0
  with pytest.raises(ValueError, match="beta=0.1 needs a reference"):
    grpo_steps.grpo_loss_fn(gd, params, b, beta=0.1, chunk=64)


def test_abstract_batch_matches_a_packed_one(setup):
  """`GroupBatch.abstract` (what the step is compiled for) has the packed batch's structure, shapes and dtypes."""
  from insightv_jax.data.batches import Geometry
  for packed, branched in ((setup["grouped"], True), (setup["plain"], False)):
    b = packed.batch
    rows, t = b.tokens.input_ids.shape
    geo = Geometry(rows=rows, max_len=t, images_per_row=b.image_sizes.shape[0] // rows,
                   num_tiles=b.pixel_values.shape[1], tile=b.pixel_values.shape[-1])
    abstract = group_rows.GroupBatch.abstract(geo, b.replies_per_row, L, branched=branched)
    shapes = lambda x: jax.tree.map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), x)
    assert jax.tree.structure(abstract) == jax.tree.structure(b)
    assert shapes(abstract) == shapes(b)


def test_train_step_with_two_micro_batches_equals_one_batch(setup):
  """grpo_loss_fn through `steps.make_train_step`: accumulating 2 micro-batches of group rows (one row each, with
  its own image slots) gives the whole batch's loss, gradient norm, GRPO metrics and updated parameters."""
  import optax

  from insightv_jax.train import steps
  gd, params = setup["graphdef"], setup["params"]
  batch = _with_adv(setup, setup["grouped"])
  batch = batch.replace(old_logps=np.asarray(setup["logps"](params, batch)).reshape(batch.reply_mask.shape) - 0.05)
  loss = functools.partial(grpo_steps.grpo_loss_fn, loss_type="grpo", epsilon_high=0.28, temperature=0.7, chunk=64)
  trainable = jax.tree.map(lambda _: True, params)
  tx = optax.sgd(0.1)
  out = []
  for accum in (1, 2):
    step = jax.jit(steps.make_train_step(gd, lambda g, p, b, ref: loss(g, p, b, ref), tx, trainable,
                                         accum_steps=accum))
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    new, metrics = step(state, batch)
    out.append((jax.device_get(metrics), new["params"]))
  (m1, p1), (m2, p2) = out
  assert m1["items"] == m2["items"] == 9  # grpo: one item per reply
  for k in ("loss", "grad_norm"):
    np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5, err_msg=k)
  for k, v in losses.grpo_metrics(m1).items():
    np.testing.assert_allclose(losses.grpo_metrics(m2)[k], v, rtol=1e-5, err_msg=k)
  assert float(losses.grpo_metrics(m1)["ratio_mean"]) > 1.02  # old_logps below the policy's: ratios above 1
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), p1, p2)
  assert max(jax.tree.leaves(diff)) < 1e-6
