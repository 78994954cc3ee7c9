"""The decoder's attention products, in three implementations behind one switch (`LlavaConfig.attention`).

  "xla"     ours: plain batched matrix products and a masked softmax, causal query blocks that skip invisible
            keys (`query_block_size`), a matrix-vector form for one-token decode steps. Runs everywhere; it
            is what CPU runs, and what the parity tests with transformers pin.
  "cudnn"   `jax.nn.dot_product_attention(..., implementation="cudnn")`: cuDNN's flash attention on NVIDIA
            GPUs, bf16 / fp16 only. Our mask goes in as its boolean `mask` (cuDNN adds it as a bias), with
            `is_causal=True` so the kernel skips the blocks above the diagonal.
  "splash"  the Pallas TPU splash-attention kernel (`jax.experimental.pallas.ops.tpu.splash_attention`):
            a static causal mask and `SegmentIds` for packing and padding; under a mesh it runs per shard
            (`jax.shard_map`: rows over the batch axes, heads over `tensor`). It cannot take shared-prompt
            rows (below): "auto" runs those through xla, an explicit "splash" raises `SplashMaskUnsupported`.
  "auto"    (the default) the best one for the platform and compute dtype: cudnn on GPU in bf16 / fp16,
            splash on TPU, xla otherwise.

The kernels run where the queries are the keys: training and scoring forwards (no cache) and the prefill of a
KV cache at slot 0, whose later slots no query can see. Decode steps (one query per row against the cache)
and chunks written at other slots take the xla path under every setting: a single query is a matrix-vector
product over the cache, which no flash kernel speeds up.

Which keys a query sees is the decoder's one rule (`llm.attention_mask`): key slot j <= query slot i and the
same segment, segment 0 being padding. With slots 0..t-1 on both sides that is exactly a causal mask "and"
equal segment ids, which is how splash takes it; cudnn takes the dense [b, t, s] mask itself.

    segment ids [0 0 1 1 1] (left padding)    mask (1 = seen):  1 0 0 0 0
                                                                1 1 0 0 0
                                                                0 0 1 0 0
                                                                0 0 1 1 0
                                                                0 0 1 1 1

Shared-prompt rows (DPO `[prompt | chosen | rejected]`, `insightv_jax/data/batches.SharedDpoBatch`) add a branch
id per token (0 = the shared prompt, 1 / 2 = one reply each): a key on another reply's branch is hidden too.
That mask depends on each row's prompt length, which splash's static masks and segment-id equality cannot say;
cudnn and xla take it as it is (`Mask.branched` marks it).

    segment ids [1 1 1 1 1 1]   branches [0 0 1 1 2 2]   (prompt p0 p1 | chosen c0 c1 | rejected r0 r1)
    mask:  p0  1 0 0 0 0 0
           p1  1 1 0 0 0 0
           c0  1 1 1 0 0 0
           c1  1 1 1 1 0 0
           r0  1 1 0 0 1 0      r0 sees the prompt and itself, not the chosen reply
           r1  1 1 0 0 1 1

`Kernel.interpret` runs an accelerator path on any platform, for tests on CPU: splash through Pallas'
interpreter, and cudnn's exact `jax.nn.dot_product_attention` call with `implementation="xla"` (the same
mask, causal flag, scale and layouts; only the backend differs).

Notation: b batch, t query tokens, s key slots, h query heads, k KV heads, g = h / k, e head dim.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from insightv_jax import sharding
from insightv_jax.model.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS

CUDNN_DTYPES = ("bfloat16", "float16")
SPLASH_BLOCKS = (512, 256, 128)  # splash block sizes, largest dividing the (padded) length first


class AttentionUnavailable(ValueError):
  """An attention implementation that cannot run here; the message names it, the platform and what to use."""


class SplashMaskUnsupported(AttentionUnavailable):
  """attention='splash' was asked for rows whose mask splash cannot express (shared-prompt DPO rows)."""


@dataclasses.dataclass(frozen=True)
class Kernel:
  """A resolved implementation: name in ("xla", "cudnn", "splash"); interpret: run it on any platform (tests);
  auto: chosen by "auto" (so it may fall back to xla for masks it cannot take) rather than asked for by name."""

  name: str = "xla"
  interpret: bool = False
  auto: bool = dataclasses.field(default=False, compare=False)


class Mask(NamedTuple):
  """Who sees whom, in the forms the implementations take.

  dense:      [b, t, s] bool, the decoder's mask (xla, cudnn).
  q_segment:  [b, t] int32 segment ids of the queries (splash; 0 = padding).
  kv_segment: [b, s] int32 segment ids of the key slots (splash).
  branched:   the rows are shared-prompt rows: `dense` also hides other branches, which the segment ids do not
              say (static; splash cannot run them).
  """

  dense: jax.Array
  q_segment: jax.Array
  kv_segment: jax.Array
  branched: bool = False


def platform() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of the default backend."""
  return jax.default_backend()


def resolve(name: str, dtype, *, on: str | None = None) -> Kernel:
  """An `IMPLEMENTATIONS` name -> the `Kernel` to run on platform `on` (default: this process's) for `dtype`.

  "auto": cudnn on GPU in bf16 / fp16, splash on TPU, xla otherwise. An explicit name that cannot run here
  raises `AttentionUnavailable` naming the implementation, the platform and the dtype.
  """
  if name not in IMPLEMENTATIONS:
    raise AttentionUnavailable(f"attention={name!r}; expected one of {IMPLEMENTATIONS}")
  on = on or platform()
  dtype = jnp.dtype(dtype).name
  if name == "auto":
    if on == "gpu" and dtype in CUDNN_DTYPES:
      return Kernel("cudnn", auto=True)
    return Kernel("splash" if on == "tpu" else "xla", auto=True)
  if name == "cudnn":
    if on != "gpu":
      raise AttentionUnavailable(f"attention='cudnn' needs an NVIDIA GPU (cuDNN flash attention); this process "
                                 f"runs on {on!r}: use attention='xla' or 'auto'")
    if dtype not in CUDNN_DTYPES:
      raise AttentionUnavailable(f"attention='cudnn' takes {' or '.join(CUDNN_DTYPES)} inputs; the model computes "
                                 f"in {dtype} on {on!r}: set dtype='bfloat16' or use attention='xla'")
  if name == "splash" and on != "tpu":
    raise AttentionUnavailable(f"attention='splash' is a Pallas TPU kernel; this process runs on {on!r}: use "
                               f"attention='xla' or 'auto'")
  return Kernel(name)


# ------------------------------------------------------------------------------------------------- xla

BLOCK_Q = (64, 128, 256, 512)  # query block sizes for causal attention without a cache (skip invisible keys)
MAX_BLOCKS = 32  # the smallest block size giving at most this many blocks is used (each block is unrolled)


def query_block_size(t: int) -> int | None:
  """Causal attention over t tokens runs in query blocks of this size (None: one block).

  Block i's queries only see keys [0, (i + 1) * bq): smaller blocks skip more of the masked half
  (t = 512: 56% of the full logits at 64, 62% at 128) but unroll into more programs.
  """
  return next((n for n in BLOCK_Q if t > n and t % n == 0 and t // n <= MAX_BLOCKS), None)


def attend(q, k, v, mask):
  """q [b, k, g, t, e] (pre-scaled), k/v [b, k, s, e], mask [b, t, s] -> [b, k, g, t, e].

  Query heads of one KV group and their tokens share one axis (g * t), so both products are plain
  batched matrix products over (b, k), with no transposes around them.
  """
  b, nk, g, t, e = q.shape
  logits = jnp.einsum("bkqe,bkse->bkqs", q.reshape(b, nk, g * t, e), k).astype(jnp.float32)
  logits = logits.reshape(b, nk, g, t, -1)
  logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(b, nk, g * t, -1)
  return jnp.einsum("bkqs,bkse->bkqe", probs, v).reshape(b, nk, g, t, e)


def attend_one(q, k, v, mask):
  """One query per row (a decode step): q [b, k, g, 1, e], k/v [b, k, s, e], mask [b, 1, s] -> [b, k, g, 1, e].

  Products and sums over the cache instead of batched matrix products: with one query the "matmuls" are
  b*k tiny matrix-vector products, which compilers run far below the speed of one fused pass over the
  cache (measured on XLA CPU, the benchmark model's 6 layers: 2.5 ms -> 1.1 ms per step).
  """
  qf = q[:, :, :, 0].astype(jnp.float32)  # [b, k, g, e]
  logits = jnp.sum(qf[:, :, :, None, :] * k[:, :, None].astype(jnp.float32), axis=-1)  # [b, k, g, s]
  logits = jnp.where(mask[:, :, None, :], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.sum(probs[..., None] * v[:, :, None].astype(jnp.float32), axis=3)  # [b, k, g, e]
  return out[:, :, :, None].astype(v.dtype)


def xla_attention(q, k, v, mask, *, causal_blocks: bool):
  """q [b, t, h, e], k/v [b, k, s, e] (cache layout), mask [b, t, s] -> [b, t, h * e]: the "xla" path.

  causal_blocks: the keys are the queries themselves (no cache), so causal query blocks may skip keys.
  """
  b, t, h, e = q.shape
  nk = k.shape[1]
  g = h // nk
  q = q.reshape(b, t, nk, g, e).transpose(0, 2, 3, 1, 4) * (e**-0.5)  # [b, k, g, t, e]
  k, v = k.astype(q.dtype), v.astype(q.dtype)
  bq = query_block_size(t)
  if causal_blocks and bq:  # causal: query block i only needs keys < (i + 1) * bq
    out = jnp.concatenate([attend(q[:, :, :, i:i + bq], k[:, :, :i + bq], v[:, :, :i + bq],
                                  mask[:, i:i + bq, :i + bq]) for i in range(0, t, bq)], axis=3)
  else:
    out = (attend_one if t == 1 else attend)(q, k, v, mask)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h * e)  # heads in (k, g) order, as q_proj


# ----------------------------------------------------------------------------------------------- cudnn

def cudnn_attention(q, k, v, mask, *, interpret: bool = False):
  """q [b, t, h, e], k/v [b, t, k, e] (the queries' own keys), mask [b, t, t] -> [b, t, h * e].

  jax.nn's cuDNN flash attention (GQA: query head n reads KV head n // g, our (k, g) head order). `mask`
  already holds the causal rule; `is_causal=True` adds nothing to it but lets the kernel skip the blocks above
  the diagonal. interpret: the same call with implementation="xla" (CPU tests).
  """
  b, t, h, e = q.shape
  out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask[:, None], scale=e**-0.5,
                                     is_causal=True, implementation="xla" if interpret else "cudnn")
  return out.reshape(b, t, h * e)


# ---------------------------------------------------------------------------------------------- splash

def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


@functools.lru_cache(maxsize=None)
def _splash_kernel(heads: int, length: int, interpret: bool):
  """The splash kernel for `heads` query heads over `length` tokens (a multiple of 128), causal."""
  from jax.experimental.pallas.ops.tpu import splash_attention as sa
  block = next(n for n in SPLASH_BLOCKS if length % n == 0)
  sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  mask = sa.MultiHeadMask([sa.CausalMask((length, length)) for _ in range(heads)])
  # cached across traces, so its mask arrays must be concrete: built inside the first trace that asks for it they
  # would be that trace's tracers, and the next trace would fail with UnexpectedTracerError
  with jax.ensure_compile_time_eval():
    return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _splash_local(q, k, v, segments, *, interpret: bool):
  """q [b, h, t, e] pre-scaled, k/v [b, k, t, e], segments [b, t] -> [b, h, t, e] on one shard."""
  from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds
  t = q.shape[2]
  n = _round_up(t, SPLASH_BLOCKS[-1])
  if n != t:  # pad to whole blocks: pad tokens get a segment of their own (-1), so they never touch real ones
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, n - t), (0, 0)))
    q, k, v = pad(q), pad(k), pad(v)
    segments = jnp.pad(segments, ((0, 0), (0, n - t)), constant_values=-1)
  kernel = _splash_kernel(q.shape[1], n, interpret)
  out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, SegmentIds(s, s)))(q, k, v, segments)
  return out[:, :, :t]


def splash_attention(q, k, v, segments, *, interpret: bool = False):
  """q [b, t, h, e], k/v [b, t, k, e] (the queries' own keys), segments [b, t] -> [b, t, h * e].

  Causal with equal segment ids (the decoder's rule for slots 0..t-1); the length is padded to whole 128-token
  blocks. Query head n reads KV head n // g (splash's MHA grouping), our (k, g) head order. Under a mesh with
  more than one device the kernel runs per shard: rows over the `batch` mesh axes, heads over `tensor`.
  """
  b, t, h, e = q.shape
  q = (q * (e**-0.5)).transpose(0, 2, 1, 3)  # [b, h, t, e]
  k, v = k.astype(q.dtype).transpose(0, 2, 1, 3), v.astype(q.dtype).transpose(0, 2, 1, 3)
  local = functools.partial(_splash_local, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is not None and not mesh.empty and mesh.size > 1:
    heads = sharding.fit_spec(sharding.logical_to_spec(("batch", "heads", None, None)), mesh)
    kv_heads = sharding.fit_spec(sharding.logical_to_spec(("batch", "kv_heads", None, None)), mesh)
    rows = jax.sharding.PartitionSpec(heads[0], None)
    local = jax.shard_map(local, mesh=mesh, in_specs=(heads, kv_heads, kv_heads, rows), out_specs=heads,
                          check_vma=False)
  out = local(q, k, v, segments)
  return out.transpose(0, 2, 1, 3).reshape(b, t, h * e)


def takes(kernel: Kernel, mask: Mask) -> bool:
  """Whether `kernel` can run this mask. Splash cannot run shared-prompt (branched) rows: under "auto" they go
  through xla (False); a model built with attention='splash' raises `SplashMaskUnsupported`."""
  if kernel.name != "splash" or not mask.branched:
    return True
  if kernel.auto:
    return False
  raise SplashMaskUnsupported(
      "attention='splash' cannot run shared-prompt DPO rows ([prompt | chosen | rejected], where the rejected "
      "reply sees the prompt but not the chosen one): splash's masks are static and its segment ids only say "
      "'same segment'. Use attention='auto' (splash elsewhere, xla for these rows) or 'xla', or set "
      "config.dpo.shared_prompt=False")


def kernel_attention(kernel: Kernel, q, k, v, mask: Mask):
  """The queries' own keys through `kernel` ("cudnn" or "splash"): q [b, t, h, e], k/v [b, t, k, e],
  mask with s = t -> [b, t, h * e]."""
  if kernel.name == "cudnn":
    return cudnn_attention(q, k, v, mask.dense, interpret=kernel.interpret)
  if kernel.name == "splash":
    return splash_attention(q, k, v, mask.q_segment, interpret=kernel.interpret)
  raise ValueError(f"kernel_attention: {kernel.name!r} is not a kernel (use xla_attention)")

