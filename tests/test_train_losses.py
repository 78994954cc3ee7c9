"""Losses: DPO family against the reference formulas, a DPO gradient check, CE masking."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insightv_jax.train import losses


def _ref(pc, pr, rc, rr, beta, loss_type, ls):
  """TRL's DPO loss table, written out in numpy (float64)."""
  logsig = lambda x: -np.logaddexp(0, -x)
  h = (pc - pr) - (rc - rr)
  if loss_type == "sigmoid":
    loss = -logsig(beta * h) * (1 - ls) - logsig(-beta * h) * ls
  elif loss_type == "hinge":
    loss = np.maximum(0, 1 - beta * h)
  elif loss_type == "ipo":
    loss = (h - 1 / (2 * beta)) ** 2
  else:
    loss = (-logsig(beta * h) * (1 - ls) + logsig(-beta * h) * ls) / (1 - 2 * ls)
  return loss, beta * (pc - rc), beta * (pr - rr)


@pytest.mark.parametrize("loss_type", losses.DPO_LOSS_TYPES)
@pytest.mark.parametrize("beta, ls", [(0.1, 0.0), (0.5, 0.2)])
def test_dpo_loss_matches_reference_formulas(loss_type, beta, ls):
  rng = np.random.default_rng(0)
  pc, pr, rc, rr = (rng.normal(-50, 10, 16) for _ in range(4))
  got = losses.dpo_loss(*(jnp.asarray(x, jnp.float32) for x in (pc, pr, rc, rr)), beta=beta, loss_type=loss_type,
                        label_smoothing=ls)
  want = _ref(pc, pr, rc, rr, beta, loss_type, ls)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=2e-4, atol=2e-4)
  margins = np.asarray(got[1] - got[2])
  np.testing.assert_allclose(margins, beta * ((pc - rc) - (pr - rr)), rtol=2e-4, atol=2e-4)
  with pytest.raises(ValueError, match="loss_type"):
    losses.dpo_loss(*(jnp.zeros(2),) * 4, beta=0.1, loss_type="kto")


def test_dpo_gradient_of_tiny_model_matches_finite_differences(tiny_model):
  """d(DPO loss)/d(one LM-head weight) through the whole model equals a central difference."""
  from flax import nnx

  from insightv_jax.data.batches import DpoBatch, TokenRows
  from insightv_jax.train.steps import dpo_loss
  graphdef, params = nnx.split(tiny_model)
  params = nnx.to_pure_dict(params)
  rng = np.random.default_rng(0)
  b, t = 2, 12
  mask = np.zeros((b, t), np.int32)
  mask[:, 6:] = 1
  side = lambda: TokenRows(input_ids=jnp.asarray(rng.integers(0, 200, (b, t)), jnp.int32), loss_mask=jnp.asarray(mask),
                           segment_ids=jnp.ones((b, t), jnp.int32), positions=jnp.broadcast_to(jnp.arange(t), (b, t)))
  batch = DpoBatch(chosen=side(), rejected=side(), ref_logps=jnp.asarray([[-40.0, -41.0], [-39.0, -37.5]]))

  def f(p):
    return dpo_loss(graphdef, p, batch, beta=0.5, sft_weight=0.3)[0]

  with jax.default_matmul_precision("highest"):
    grads = jax.grad(f)(params)
    g = np.asarray(grads["language_model"]["lm_head"]["kernel"])
    i, j = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    eps = 1e-2
    def shifted(d):
      p = jax.tree.map(lambda x: x, params)
      k = p["language_model"]["lm_head"]["kernel"]
      p["language_model"]["lm_head"]["kernel"] = k.at[i, j].add(d)
      return float(f(p))
    fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
  assert abs(g[i, j]) > 1e-3
  np.testing.assert_allclose(g[i, j], fd, rtol=2e-2)


def test_cross_entropy_ignores_prompt_padding_and_segment_boundaries():
  v, d = 11, 4
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
  h = jnp.asarray(rng.normal(size=(1, 8, d)), jnp.float32)
  ids = jnp.asarray([[1, 2, 3, 4, 5, 6, 7, 0]])
  mask = jnp.asarray([[0, 0, 1, 1, 0, 1, 1, 0]])  # targets: 3, 4 (segment 1) and 6, 7 (segment 2)
  seg = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 0]])
  loss, nll, weights = losses.masked_cross_entropy(h, lambda x: x @ w, ids, mask, seg, chunk=3)
  np.testing.assert_array_equal(np.asarray(weights[0]), [0, 1, 1, 0, 1, 1, 0, 0])
  logp = jax.nn.log_softmax(h[0] @ w)
  want = -np.mean([logp[1, 3], logp[2, 4], logp[4, 6], logp[5, 7]])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # the third chunk (positions 6-8) has no target: its LM head is skipped, and gradients are unchanged
  grad = jax.grad(lambda x: losses.masked_cross_entropy(x, lambda y: y @ w, ids, mask, seg, chunk=3)[0])(h)
  plain = lambda x: -jnp.mean(jax.nn.log_softmax(x[0] @ w)[jnp.asarray([1, 2, 4, 5]), jnp.asarray([3, 4, 6, 7])])
  np.testing.assert_allclose(np.asarray(grad), np.asarray(jax.grad(plain)(h)), rtol=1e-5, atol=1e-7)
  # changing a non-target token's label or the padding changes nothing
  ids2 = ids.at[0, 7].set(9)
  np.testing.assert_allclose(float(losses.masked_cross_entropy(h, lambda x: x @ w, ids2, mask, seg)[0]), want,
                             rtol=1e-5)
