"""GRPO losses and advantages against a hand-written NumPy reference (float64), gradients against central
differences of that reference, the accumulation form against the whole batch, and (when trl is installed) against
TRL 1.16.0's own `GRPOTrainer._compute_loss`."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insightv_jax.train import losses

B, T, L_MAX = 6, 7, 9


def _np_nanstd(x, axis=None):
  n = np.sum(~np.isnan(x), axis=axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    var = np.nansum((x - np.nanmean(x, axis=axis, keepdims=True)) ** 2, axis=axis) / (n - 1)
  return np.where(n > 1, np.sqrt(var), np.nan)


def _np_advantages(r, g, scale):
  """Written from the formula: (r - mean of the group) / (std + 1e-4), NaN rewards left out, their advantage 0."""
  out = np.zeros_like(r)
  for k in range(len(r) // g):
    grp = r[k * g:(k + 1) * g]
    ok = ~np.isnan(grp)
    mean = grp[ok].mean() if ok.any() else np.nan
    std = {"group": _np_nanstd(grp), "batch": _np_nanstd(r), "none": 0.0}[scale]
    a = grp - mean if scale == "none" else (grp - mean) / (std + 1e-4)
    out[k * g:(k + 1) * g] = np.nan_to_num(a, nan=0.0)
  return out


def _np_loss(lp, old, ref, adv, mask, loss_type, eps, eps_high, beta, level, max_len):
  """TRL's `_compute_loss` for one process, one accumulation step, written out in NumPy."""
  e_hi = eps if eps_high is None else eps_high
  lr = lp - old
  if level == "sequence":
    lr = np.repeat(((lr * mask).sum(1) / np.maximum(mask.sum(1), 1))[:, None], lp.shape[1], 1)
  r = np.exp(lr)
  a = adv[:, None]
  per = -np.minimum(r * a, np.clip(r, 1 - eps, 1 + e_hi) * a)
  kl = np.exp(ref - lp) - (ref - lp) - 1 if ref is not None else np.zeros_like(lp)
  per = per + beta * kl
  if loss_type == "grpo":
    loss = ((per * mask).sum(1) / np.maximum(mask.sum(1), 1)).mean()
  elif loss_type == "dr_grpo":
    loss = (per * mask).sum() / (lp.shape[0] * max_len)
  else:
    loss = (per * mask).sum() / max(mask.sum(), 1)
  low = ((r < 1 - eps) & (a < 0)).astype(float)
  high = ((r > 1 + e_hi) & (a > 0)).astype(float)
  mean = (lambda x: x[:, 0].mean()) if level == "sequence" else (lambda x: (x * mask).sum() / mask.sum())
  metrics = {"kl": (kl * mask).sum() / mask.sum(), "clip_ratio/low_mean": mean(low),
             "clip_ratio/high_mean": mean(high), "clip_ratio/region_mean": mean(np.maximum(low, high)),
             "ratio_mean": mean(r)}
  return loss, metrics


def _inputs(seed=0):
  """Completions of 2..7 tokens; ratios spread over both clip edges (exp(+-0.35)), none within 1e-3 of an edge."""
  rng = np.random.default_rng(seed)
  lengths = np.array([T, 2, 5, 3, T, 4])
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float64)
  old = rng.normal(-2.0, 0.6, (B, T))
  delta = rng.uniform(-0.35, 0.35, (B, T))
  edges = np.log([0.8, 1.2, 1.28])
  for e in edges:  # keep away from the kinks, where a central difference is not a derivative
    near = np.abs(delta - e) < 2e-3
    delta[near] += 5e-3
  lp = old + delta
  ref = old + rng.normal(0, 0.3, (B, T))
  adv = np.array([1.3, -0.7, 0.4, -1.1, -0.2, 0.9])
  return lp, old, ref, adv, mask


CASES = [("grpo", None, 0.0), ("bnpo", None, 0.0), ("dr_grpo", None, 0.04), ("dapo", 0.28, 0.0),
         ("grpo", 0.28, 0.1), ("dapo", None, 0.04)]


def _ours(lp, old, ref, adv, mask, loss_type, eps_high, beta, level, **kw):
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  return losses.grpo_loss(f32(lp), f32(old), f32(ref), f32(adv), f32(mask), loss_type=loss_type, epsilon=0.2,
                          epsilon_high=eps_high, beta=beta, importance_sampling_level=level,
                          max_completion_length=L_MAX, **kw)


@pytest.mark.parametrize("level", losses.IMPORTANCE_LEVELS)
@pytest.mark.parametrize("loss_type, eps_high, beta", CASES)
def test_grpo_loss_values_metrics_and_gradients_match_the_reference(loss_type, eps_high, beta, level):
  lp, old, ref, adv, mask = _inputs()
  ref_in = ref if beta else None
  loss, metrics = _ours(lp, old, ref_in, adv, mask, loss_type, eps_high, beta, level)
  want, want_m = _np_loss(lp, old, ref_in, adv, mask, loss_type, 0.2, eps_high, beta, level, L_MAX)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-7)
  for k, v in want_m.items():
    np.testing.assert_allclose(float(metrics[k]), v, rtol=1e-5, atol=1e-7, err_msg=k)
  # the test data reach both clip edges, else the clip terms are not tested
  r = np.exp(lp - old)
  assert (r < 0.8).any() and (r > 1.28).any()
  # gradient wrt the policy log-probs: jax.grad vs central differences of the float64 reference
  g = np.asarray(jax.grad(lambda x: _ours(x, old, ref_in, adv, mask, loss_type, eps_high, beta, level)[0])(
      jnp.asarray(lp, jnp.float32)))
  h = 1e-6
  fd = np.zeros_like(lp)
  for i, j in np.ndindex(*lp.shape):
    up, dn = lp.copy(), lp.copy()
    up[i, j] += h
    dn[i, j] -= h
    fd[i, j] = (_np_loss(up, old, ref_in, adv, mask, loss_type, 0.2, eps_high, beta, level, L_MAX)[0]
                - _np_loss(dn, old, ref_in, adv, mask, loss_type, 0.2, eps_high, beta, level, L_MAX)[0]) / (2 * h)
  np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)
  assert np.abs(fd).max() > 1e-2 and (g[mask == 0] == 0).all()  # a real gradient, none on padding


def test_on_policy_first_step_is_the_policy_gradient():
  """old = detached current log-probs (num_iterations = 1): ratio 1, nothing clipped, d loss / d logp = -A / n_b
  (grpo) per completion token."""
  lp, _, _, adv, mask = _inputs()
  f = lambda x: losses.grpo_loss(x, x, None, jnp.asarray(adv, jnp.float32), jnp.asarray(mask, jnp.float32))
  (loss, m), g = jax.value_and_grad(f, has_aux=True)(jnp.asarray(lp, jnp.float32))
  np.testing.assert_allclose(float(loss), -adv.mean(), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g), -adv[:, None] * mask / mask.sum(1, keepdims=True) / B, rtol=1e-6)
  assert float(m["ratio_mean"]) == 1.0 and float(m["clip_ratio/region_mean"]) == 0.0


@pytest.mark.parametrize("level", losses.IMPORTANCE_LEVELS)
@pytest.mark.parametrize("loss_type", losses.GRPO_LOSS_TYPES)
def test_accumulation_form_over_two_micro_batches_equals_the_whole_batch(loss_type, level):
  """Sum of the summed losses / sum of the counts (what the train step divides) = grpo_loss of the whole batch,
  for loss and gradient; the metrics too. The two halves have different token counts (7+2+5 vs 3+7+4)."""
  lp, old, ref, adv, mask = (jnp.asarray(x, jnp.float32) for x in _inputs(1))
  kw = dict(loss_type=loss_type, epsilon_high=0.28, beta=0.05, importance_sampling_level=level,
            max_completion_length=L_MAX)

  def accumulated(x):
    parts = [losses.grpo_sums(x[s], old[s], ref[s], adv[s], mask[s], **kw) for s in (slice(0, 3), slice(3, 6))]
    aux = jax.tree.map(lambda a, b: a + b, parts[0][1], parts[1][1])
    return (parts[0][0] + parts[1][0]) / aux["count"], aux

  whole = lambda x: losses.grpo_loss(x, old, ref, adv, mask, **kw)
  (l_acc, aux), g_acc = jax.value_and_grad(accumulated, has_aux=True)(lp)
  (l_all, m_all), g_all = jax.value_and_grad(whole, has_aux=True)(lp)
  np.testing.assert_allclose(float(l_acc), float(l_all), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g_acc), np.asarray(g_all), rtol=1e-5, atol=1e-8)
  divided = {k: v / aux["count"] for k, v in aux.items()}  # the step divides every aux entry by the count
  for k, v in losses.grpo_metrics(divided).items():
    np.testing.assert_allclose(float(v), float(m_all[k]), rtol=1e-5, err_msg=k)
  # an empty reply slot (all-0 mask row) adds nothing to the sums
  pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:1])])
  total, aux_pad = losses.grpo_sums(pad(lp), pad(old), pad(ref), pad(adv), pad(mask), **kw)
  total0, aux0 = losses.grpo_sums(lp, old, ref, adv, mask, **kw)
  np.testing.assert_allclose(float(total), float(total0), rtol=1e-6)
  assert {k: float(v) for k, v in aux_pad.items()} == pytest.approx({k: float(v) for k, v in aux0.items()})


@pytest.mark.parametrize("scale", losses.ADVANTAGE_SCALES)
def test_group_advantages_match_the_reference(scale):
  rng = np.random.default_rng(2)
  r = rng.integers(0, 3, 12).astype(np.float64) + rng.normal(0, 0.1, 12)
  r[4:8] = 1.0  # a group with zero spread: advantage 0 ("group" divides 0 by 1e-4)
  r[9] = np.nan  # an unscorable reply: left out of its group's statistics, advantage 0
  got = np.asarray(losses.group_advantages(jnp.asarray(r), 4, scale=scale))
  want = _np_advantages(r, 4, scale)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert got[9] == 0 and (got[4:8] == 0).all() and np.abs(got).max() > 0.1
  std = np.asarray(losses.group_std(jnp.asarray(r), 4))
  np.testing.assert_allclose(std, [_np_nanstd(r[k:k + 4]) for k in (0, 4, 8)], rtol=1e-5)
  assert np.isclose(std, 0).tolist() == [False, True, False]  # the zero-spread group
  if scale == "group":  # unit spread within a group of distinct rewards
    np.testing.assert_allclose(np.std(got[:4], ddof=1), 1.0, rtol=1e-3)
  with pytest.raises(ValueError, match="group_size=5"):
    losses.group_advantages(jnp.zeros(12), 5)
  with pytest.raises(ValueError, match="scale='std'"):
    losses.group_advantages(jnp.zeros(12), 4, scale="std")


def test_bad_arguments_name_themselves():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="loss_type='ppo'"):
    losses.grpo_loss(x, x, None, jnp.zeros(2), x, loss_type="ppo")
  with pytest.raises(ValueError, match="max_completion_length"):
    losses.grpo_loss(x, x, None, jnp.zeros(2), x, loss_type="dr_grpo")
  with pytest.raises(ValueError, match="ref_logps"):
    losses.grpo_loss(x, x, None, jnp.zeros(2), x, beta=0.1)
  with pytest.raises(ValueError, match="importance_sampling_level='tok'"):
    losses.grpo_loss(x, x, None, jnp.zeros(2), x, importance_sampling_level="tok")


# ------------------------------------------------------------------------------------------- TRL 1.16.0 itself

def _trl_loss(lp, old, ref, adv, mask, loss_type, eps_high, beta, level):
  """TRL 1.16.0's `GRPOTrainer._compute_loss` run on given per-token log-probs: the trainer's `self` is a stand-in
  holding the attributes that method reads (one process, one accumulation step, no vLLM, no entropy terms)."""
  torch = pytest.importorskip("torch")
  grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer",
                                     reason="trl is not installed (pip install trl==1.16.0, setup.py's bench extra)")
  t = lambda x: torch.tensor(x, dtype=torch.float64)
  policy = t(lp).requires_grad_(True)
  metrics = {"train": __import__("collections").defaultdict(list)}
  args = types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1)
  acc = types.SimpleNamespace(num_processes=1, gather=lambda x: x, reduce=lambda x, reduction: x,
                              gather_for_metrics=lambda x: x)
  self = types.SimpleNamespace(
      _get_per_token_logps_and_entropies=lambda *a, **k: (policy, torch.zeros_like(policy), None),
      top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
      args=args, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.2 if eps_high is None else eps_high,
      use_vllm=False, vllm_importance_sampling_correction=False, model=types.SimpleNamespace(training=True),
      current_gradient_accumulation_steps=1, max_completion_length=L_MAX, accelerator=acc,
      _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics=metrics)
  inputs = {"prompt_ids": torch.zeros((B, 2), dtype=torch.long), "prompt_mask": torch.ones((B, 2)),
            "completion_ids": torch.zeros((B, T), dtype=torch.long), "completion_mask": t(mask),
            "advantages": t(adv), "old_per_token_logps": t(old), "num_items_in_batch": t(mask.sum())}
  if beta:
    inputs["ref_per_token_logps"] = t(ref)
  loss = grpo_trainer.GRPOTrainer._compute_loss(self, None, inputs)
  loss.backward()
  return float(loss.detach()), policy.grad.numpy(), {k: v[-1] for k, v in metrics["train"].items()}


@pytest.mark.parametrize("level", losses.IMPORTANCE_LEVELS)
@pytest.mark.parametrize("loss_type, eps_high, beta", CASES)
def test_grpo_loss_equals_trl_compute_loss(loss_type, eps_high, beta, level):
  lp, old, ref, adv, mask = _inputs(3)
  ref_in = ref if beta else None
  want, want_grad, want_m = _trl_loss(lp, old, ref_in, adv, mask, loss_type, eps_high, beta, level)
  loss, metrics = _ours(lp, old, ref_in, adv, mask, loss_type, eps_high, beta, level)
  grad = jax.grad(lambda x: _ours(x, old, ref_in, adv, mask, loss_type, eps_high, beta, level)[0])(
      jnp.asarray(lp, jnp.float32))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-7)
  names = ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"] + (["kl"] if beta else [])
  for k in names:
    np.testing.assert_allclose(float(metrics[k]), want_m[k], rtol=1e-5, atol=1e-7, err_msg=k)
