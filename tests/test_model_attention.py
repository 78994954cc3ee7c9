"""The attention implementations (insightv_jax/model/attention.py) agree with our "xla" path.

Given the decoder's three mask cases (one causal example, packed examples with padding, left-padded prompts),
when cuDNN's code path (its exact `jax.nn.dot_product_attention` call with implementation="xla", since cuDNN
itself needs an NVIDIA GPU) and the Pallas splash kernel (in Pallas' interpreter) run them on CPU, then their
outputs, the tiny model's logits, gradients and generated tokens equal the "xla" path's to < 1e-5 (fp32);
and an implementation that cannot run here fails with a message naming it and the platform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from insightv_jax import sharding
from insightv_jax.infer import generate
from insightv_jax.model import attention
from insightv_jax.model.attention import AttentionUnavailable, Kernel
from insightv_jax.model.config import ConfigError, LlavaConfig
from insightv_jax.model.llava import LlavaNext
from insightv_jax.model.llm import Attention, attention_mask

TOL = 1e-5
KERNELS = [Kernel("cudnn", interpret=True), Kernel("splash", interpret=True)]
IDS = ["cudnn-path-via-xla", "splash-interpret"]


def segment_rows(t: int) -> np.ndarray:
  """Three rows of t tokens: one causal example, two packed examples + padding, a left-padded prompt."""
  seg = np.ones((3, t), np.int32)
  seg[1, t // 3:] = 2
  seg[1, -5:] = 0
  seg[2, :t // 4] = 0
  return seg


def random_qkv(t: int, h: int = 4, k: int = 2, e: int = 16, seed: int = 0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (3, t, h, e)), jax.random.normal(kk, (3, t, k, e)),
          jax.random.normal(kv, (3, t, k, e)))


def xla_reference(q, k, v, seg):
  t = seg.shape[1]
  mask = attention_mask(jnp.asarray(seg), jnp.broadcast_to(jnp.arange(t), seg.shape), jnp.asarray(seg))
  return attention.xla_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, causal_blocks=True), mask


# ------------------------------------------------------------------------------------------ the kernels alone


@pytest.mark.parametrize("t", [40, 256], ids=["padded-to-a-block", "two-blocks"])
@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_kernel_equals_xla_on_causal_packed_and_left_padded_rows(kernel, t):
  """GQA (4 query heads over 2 KV heads); t=40 is padded to one 128-token splash block, t=256 runs two blocks
  (and the xla path's causal query blocks)."""
  q, k, v = random_qkv(t)
  seg = segment_rows(t)
  want, mask = xla_reference(q, k, v, seg)
  got = attention.kernel_attention(kernel, q, k, v, attention.Mask(mask, jnp.asarray(seg), jnp.asarray(seg)))
  assert got.shape == want.shape == (3, t, 4 * 16)
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)  # padding rows too (they see only padding)


def test_splash_under_a_mesh_runs_per_shard():
  """Rows over fsdp=2, heads over tensor=2 (shard_map): the same output as on one device."""
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 (fake) devices")
  q, k, v = random_qkv(128)
  seg = jnp.asarray(segment_rows(128)[:2])
  q, k, v = q[:2], k[:2], v[:2]
  single = attention.splash_attention(q, k, v, seg, interpret=True)
  mesh = sharding.make_mesh(data=1, fsdp=2, tensor=2, devices=jax.devices()[:4])
  with sharding.use_mesh(mesh):
    sharded = jax.jit(lambda *a: attention.splash_attention(*a, interpret=True))(q, k, v, seg)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=TOL, rtol=0)


def test_the_cached_splash_kernel_outlives_the_trace_that_built_it():
  """The kernel is cached per (heads, length): built inside one trace (a scan body, as in a scanned model), it
  serves the next trace (before the fix: UnexpectedTracerError, met when tests ran in another order)."""
  attention._splash_kernel.cache_clear()
  q, k, v = random_qkv(40)
  seg = jnp.asarray(segment_rows(40))
  run = lambda q, k, v: attention.splash_attention(q, k, v, seg, interpret=True)
  first = jax.lax.scan(lambda c, _: (c, run(q, k, v)), 0, None, length=1)[1][0]
  np.testing.assert_allclose(jax.jit(run)(q, k, v), first, atol=TOL, rtol=0)


# ------------------------------------------------------------------------------------------ inside the model


def with_kernel(model: LlavaNext, kernel: Kernel) -> LlavaNext:
  """The same model (same parameters) with every decoder attention layer running `kernel`."""
  graphdef, state = nnx.split(model)
  other = nnx.merge(graphdef, state)
  for _, module in nnx.iter_graph(other):
    if isinstance(module, Attention):
      module.kernel = kernel
  return other


@pytest.fixture(scope="module", params=[False, True], ids=["unrolled", "scanned"])
def xla_model(request, tiny_cfg):
  return LlavaNext(tiny_cfg.replace(scan_layers=request.param, attention="xla"), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_model_logits_and_gradients_equal_the_xla_path(xla_model, kernel):
  """Training forward (no cache) over the three mask cases: logits and parameter gradients."""
  other = with_kernel(xla_model, kernel)
  seg = jnp.asarray(segment_rows(64))
  ids = jnp.asarray(np.random.default_rng(1).integers(0, 200, seg.shape))

  def loss(model):
    return (model(ids, segment_ids=seg) * (seg > 0)[..., None]).astype(jnp.float32).std()

  want_logits, got_logits = xla_model(ids, segment_ids=seg), other(ids, segment_ids=seg)
  np.testing.assert_allclose(np.asarray(got_logits), np.asarray(want_logits), atol=TOL, rtol=0)
  want, got = nnx.grad(loss)(xla_model), nnx.grad(loss)(other)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=TOL, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_prefill_through_the_kernel_then_decode_gives_the_same_tokens(xla_model, kernel):
  """generate: left-padded prompts prefilled through the kernel (cache slot 0), decode steps on the xla path."""
  other = with_kernel(xla_model, kernel)
  rng = np.random.default_rng(2)
  ids = rng.integers(0, 200, (3, 24))
  mask = np.ones_like(ids)
  mask[1, :7] = 0
  mask[2, :15] = 0
  for kw in (dict(), dict(temperature=1.0, seed=[4, 5, 6])):
    want = np.asarray(generate(xla_model, ids, attention_mask=mask, max_new_tokens=8, **kw))
    got = np.asarray(generate(other, ids, attention_mask=mask, max_new_tokens=8, **kw))
    np.testing.assert_array_equal(got, want)


def shared_prompt_rows(t: int):
  """Two shared-prompt rows of t tokens (batches.SharedDpoBatch): one pair + padding, and two packed pairs."""
  seg, br, pos = np.zeros((2, t), np.int32), np.zeros((2, t), np.int32), np.zeros((2, t), np.int32)
  at = 0
  for row, pairs in ((0, [(20, 15, 11)]), (1, [(9, 12, 10), (14, 8, 6)])):
    at = 0
    for s, (p, c, r) in enumerate(pairs, 1):
      seg[row, at:at + p + c + r] = s
      br[row, at + p:at + p + c], br[row, at + p + c:at + p + c + r] = 1, 2
      pos[row, at:at + p + c + r] = np.concatenate([np.arange(p + c), p + np.arange(r)])
      at += p + c + r
  return jnp.asarray(seg), jnp.asarray(br), jnp.asarray(pos)


def test_shared_prompt_rows_cudnn_path_equals_xla_and_splash_says_it_cannot(xla_model):
  """cudnn takes the branched mask as it is; an explicit splash raises a named error; auto's splash (TPU) runs
  these rows through xla, with the xla path's logits."""
  seg, br, pos = shared_prompt_rows(64)
  ids = jnp.asarray(np.random.default_rng(3).integers(0, 200, seg.shape))
  run = lambda model: np.asarray(model.hidden_states(ids, segment_ids=seg, positions=pos, branches=br)[0])
  want = run(xla_model)
  # the rejected reply does not see the chosen one: changing a chosen token leaves every rejected state as it was
  moved = np.asarray(xla_model.hidden_states(ids.at[0, 25].set(7), segment_ids=seg, positions=pos,
                                             branches=br)[0])
  rejected = np.asarray(br == 2)
  np.testing.assert_array_equal(moved[rejected], want[rejected])
  assert not np.allclose(moved[0, 26:35], want[0, 26:35])  # the chosen reply after it does
  np.testing.assert_allclose(run(with_kernel(xla_model, Kernel("cudnn", interpret=True))), want, atol=TOL, rtol=0)
  np.testing.assert_allclose(run(with_kernel(xla_model, Kernel("splash", interpret=True, auto=True))), want,
                             atol=TOL, rtol=0)
  with pytest.raises(attention.SplashMaskUnsupported, match="shared-prompt.*dpo.shared_prompt=False"):
    run(with_kernel(xla_model, Kernel("splash", interpret=True)))


# ------------------------------------------------------------------------------------------ choosing one


def test_auto_picks_the_best_for_the_platform_and_dtype():
  assert attention.resolve("auto", "float32") == Kernel("xla")  # this CPU
  assert attention.resolve("auto", "bfloat16", on="gpu") == Kernel("cudnn")
  assert attention.resolve("auto", "float32", on="gpu") == Kernel("xla")  # cuDNN flash takes bf16 / fp16 only
  assert attention.resolve("auto", "bfloat16", on="tpu") == Kernel("splash")
  assert attention.resolve("xla", "bfloat16", on="tpu") == Kernel("xla")
  assert LlavaNext(LlavaConfig.from_hf(_tiny_hf()), rngs=nnx.Rngs(0)).language_model.kernel == Kernel("xla")


@pytest.mark.parametrize("name, on, dtype, words", [
    ("cudnn", None, "bfloat16", ["'cudnn'", "'cpu'"]),
    ("cudnn", "gpu", "float32", ["'cudnn'", "float32", "'gpu'"]),
    ("splash", None, "float32", ["'splash'", "TPU", "'cpu'"]),
    ("splash", "gpu", "bfloat16", ["'splash'", "'gpu'"]),
])
def test_an_implementation_that_cannot_run_here_names_itself_and_the_platform(name, on, dtype, words):
  with pytest.raises(AttentionUnavailable) as err:
    attention.resolve(name, dtype, on=on)
  assert all(w in str(err.value) for w in words), str(err.value)


def test_building_a_model_with_an_unavailable_or_unknown_implementation_fails_clearly():
  cfg = LlavaConfig.from_hf(_tiny_hf(), dtype="bfloat16", attention="cudnn")
  with pytest.raises(AttentionUnavailable, match="attention='cudnn' needs an NVIDIA GPU.*'cpu'"):
    LlavaNext(cfg, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="attention='flash'"):
    LlavaConfig.from_hf(_tiny_hf(), attention="flash")
  hf = cfg.to_hf()  # runtime only: never written into config.json
  assert "attention" not in hf and "attention" not in hf["text_config"]


def test_cudnn_itself_does_not_run_on_cpu():
  """What jax says when the cuDNN kernel is asked for on this CPU (why the test above runs its xla stand-in)."""
  if jax.default_backend() == "gpu":
    pytest.skip("a GPU is present")
  q, k, v = random_qkv(16)
  seg = segment_rows(16)
  _, mask = xla_reference(q, k, v, seg)
  with pytest.raises(RuntimeError, match="cuDNN is not detected"):
    attention.cudnn_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), mask)


def _tiny_hf() -> dict:
  from conftest import model_preset
  return model_preset("tiny")
