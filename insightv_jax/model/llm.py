"""LLaMA / Qwen2 decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU.

One attention mask mechanism serves training, padding, packing and KV-cache decoding:
a query at slot i of segment a may see a key at slot j of segment b iff j <= i and a == b.
Segment 0 is padding (padding tokens only ever see padding, so no softmax row is empty).

    segment ids  [0 0 1 1 1]   (left padding)      [1 1 2 2 0]   (two packed examples + pad)
    positions    [0 0 0 1 2]                        [0 1 0 1 0]

The attention products themselves (the "xla" path, cuDNN and splash kernels) live in `attention`; the
decoder's `attention` argument (`LlavaConfig.attention`) picks one.

Notation: b batch, t query tokens, s key slots, d width, h query heads, k KV heads, g = h / k,
e head dim, f MLP width, v vocabulary, l layers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from insightv_jax import sharding
from insightv_jax.model import attention as attn
from insightv_jax.model.attention import Kernel
from insightv_jax.model.config import TextConfig
from insightv_jax.model.layers import Dense, Embed, LayerStack, RMSNorm, activation, remat_policy


class KVCache(NamedTuple):
  """Decoding cache. segment_ids: [b, s] (0 = empty/pad).

  k, v: one [b, k, s, e] array per layer (a tuple) when layers are unrolled, or one stacked [l, b, k, s, e]
  array when they are scanned. Keys sit in [k, s, e] order so that both attention products read them
  without a transpose, and each decode step writes one [b, k, 1, e] slice in place (no per-step copy of
  the cache: the while loop's carry is updated where it lies).
  """

  k: jax.Array | tuple[jax.Array, ...]
  v: jax.Array | tuple[jax.Array, ...]
  segment_ids: jax.Array

  @classmethod
  def zeros(cls, cfg: TextConfig, batch: int, max_len: int, dtype, *, stacked: bool) -> KVCache:
    shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
    if stacked:
      make = lambda: jnp.zeros((cfg.num_hidden_layers,) + shape, dtype)
    else:
      make = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_hidden_layers))
    return cls(make(), make(), jnp.zeros((batch, max_len), jnp.int32))


def rope_inv_freq(cfg: TextConfig) -> np.ndarray:
  """Inverse frequencies [e/2] (float32), including LLaMA-3 / linear scaling."""
  e = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (np.arange(0, e, 2, dtype=np.int64).astype(np.float32) / e))
  sc = cfg.rope_scaling_dict
  if not sc:
    return inv.astype(np.float32)
  if sc["rope_type"] == "linear":
    return (inv / sc["factor"]).astype(np.float32)
  factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
  old = sc["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv
  out = np.where(wavelen > old / lo, inv / factor, inv)
  smooth = (old / wavelen - lo) / (hi - lo)
  smoothed = (1 - smooth) * out / factor + smooth * out
  medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
  return np.where(medium, smoothed, out).astype(np.float32)


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """positions [b, t] -> (cos, sin) [b, t, 1, e], computed once per forward and shared by all layers."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [b, t, e/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
  """x: [b, t, n, e]; the "rotate half" layout of transformers."""
  cos, sin = rope
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x.astype(jnp.float32) * cos + rotated * sin).astype(x.dtype)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """[b, t] segment ids -> [b, t] positions restarting at 0 for each segment (0 on padding)."""
  t = jnp.arange(segment_ids.shape[1])[None, :]
  start = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                           segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  first = jax.lax.cummax(jnp.where(start, t, 0), axis=1)
  return jnp.where(segment_ids == 0, 0, t - first).astype(jnp.int32)


def attention_mask(q_segment: jax.Array, q_slot: jax.Array, kv_segment: jax.Array,
                   branches: jax.Array | None = None) -> jax.Array:
  """[b, t] query segments, [b, t] query slots, [b, s] key segments -> bool [b, t, s].

  branches [b, t] (shared-prompt rows, no cache, so s = t): 0 = the segment's shared prompt, k > 0 = one of
  its replies; a key on a reply branch is seen only by queries of the same branch (see `attention`'s doc).
  """
  kv_slot = jnp.arange(kv_segment.shape[1])[None, None, :]
  mask = (kv_slot <= q_slot[:, :, None]) & (q_segment[:, :, None] == kv_segment[:, None, :])
  if branches is None:
    return mask
  return mask & ((branches[:, None, :] == 0) | (branches[:, None, :] == branches[:, :, None]))


class Attention(nnx.Module):
  def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype, kernel: Kernel = Kernel()):
    d, e, h, k = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.q_proj = Dense(d, h * e, axes=("embed", "heads"), use_bias=cfg.qkv_bias, **kw)
    self.k_proj = Dense(d, k * e, axes=("embed", "kv_heads"), use_bias=cfg.qkv_bias, **kw)
    self.v_proj = Dense(d, k * e, axes=("embed", "kv_heads"), use_bias=cfg.qkv_bias, **kw)
    self.o_proj = Dense(h * e, d, axes=("heads", "embed"), use_bias=cfg.o_bias, **kw)
    self.h, self.k, self.e = h, k, e
    self.kernel = kernel

  def __call__(self, x, rope, mask: attn.Mask, kv=None, cache_index=None):
    """x: [b, t, d]; mask: who sees whom (s key slots); kv: optional (k, v) caches [b, k, s, e] written at slot
    cache_index. `self.kernel` ("cudnn" / "splash") runs where the queries are the keys (no cache, or a prefill
    at slot 0); everything else takes the "xla" path (see `insightv_jax.model.attention`)."""
    b, t, _ = x.shape
    q = apply_rope(self.q_proj(x).reshape(b, t, self.h, self.e), rope)
    k_new = apply_rope(self.k_proj(x).reshape(b, t, self.k, self.e), rope)  # [b, t, k, e]
    v_new = self.v_proj(x).reshape(b, t, self.k, self.e)
    k, v = k_new.transpose(0, 2, 1, 3), v_new.transpose(0, 2, 1, 3)  # [b, k, t, e]
    if kv is not None:
      k = jax.lax.dynamic_update_slice_in_dim(kv[0], k.astype(kv[0].dtype), cache_index, axis=2)
      v = jax.lax.dynamic_update_slice_in_dim(kv[1], v.astype(kv[1].dtype), cache_index, axis=2)
      new_kv = (k, v)
    else:
      new_kv = None
    own_keys = kv is None or (isinstance(cache_index, int) and cache_index == 0)  # slots 0..t-1 are all it sees
    if self.kernel.name != "xla" and t > 1 and own_keys and attn.takes(self.kernel, mask):
      own = attn.Mask(mask.dense[:, :, :t], mask.q_segment, mask.kv_segment[:, :t])
      out = attn.kernel_attention(self.kernel, q, k_new, v_new, own)
    else:
      out = attn.xla_attention(q, k, v, mask.dense, causal_blocks=kv is None)
    return self.o_proj(out.astype(x.dtype)), new_kv


class MLP(nnx.Module):
  def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    kw = dict(use_bias=cfg.mlp_bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.gate_proj = Dense(cfg.hidden_size, cfg.intermediate_size, axes=("embed", "mlp"), **kw)
    self.up_proj = Dense(cfg.hidden_size, cfg.intermediate_size, axes=("embed", "mlp"), **kw)
    self.down_proj = Dense(cfg.intermediate_size, cfg.hidden_size, axes=("mlp", "embed"), **kw)
    self.act = activation(cfg.hidden_act)

  def __call__(self, x):
    h = self.act(self.gate_proj(x)) * self.up_proj(x)
    return self.down_proj(sharding.constrain(h, ("batch", "seq", "act_mlp")))


class DecoderLayer(nnx.Module):
  def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype, kernel: Kernel = Kernel()):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.self_attn = Attention(cfg, rngs=rngs, kernel=kernel, **kw)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.mlp = MLP(cfg, rngs=rngs, **kw)

  def __call__(self, x, rope, mask, kv=None, cache_index=None):
    attn, new_kv = self.self_attn(self.input_layernorm(x), rope, mask, kv, cache_index)
    x = x + attn
    x = x + self.mlp(self.post_attention_layernorm(x))
    return sharding.constrain(x, ("batch", "seq", "act_embed")), new_kv


class Decoder(nnx.Module):
  """Token embeddings -> L decoder layers -> final RMSNorm; `logits` applies the (tied or untied) head.

  attention: an `insightv_jax.model.attention.IMPLEMENTATIONS` name, resolved here for this platform and dtype
  (one that cannot run here raises `AttentionUnavailable`), or a resolved `attention.Kernel` (tests run the
  accelerator paths on CPU with `Kernel(name, interpret=True)`).
  """

  def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype, remat: str, scan: bool,
               attention: str | Kernel = "auto"):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.cfg = cfg
    self.kernel = attention if isinstance(attention, Kernel) else attn.resolve(attention, dtype)
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs, **kw)
    self.layers = LayerStack(lambda r: DecoderLayer(cfg, rngs=r, kernel=self.kernel, **kw), cfg.num_hidden_layers,
                             scan=scan, rngs=rngs)
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    if not cfg.tie_word_embeddings:
      self.lm_head = Dense(cfg.hidden_size, cfg.vocab_size, axes=("embed", "vocab"), use_bias=False, rngs=rngs,
                           stddev=0.02, **kw)
    self.remat = remat_policy(remat)
    self.dtype = dtype

  def __call__(self, x: jax.Array, segment_ids: jax.Array, positions: jax.Array,
               cache: KVCache | None = None, cache_index: jax.Array | int = 0, branches: jax.Array | None = None):
    """x: [b, t, d] input embeddings -> (hidden [b, t, d], updated cache or None).

    Without a cache, keys are the t tokens themselves. With a cache of s slots, the t tokens are written
    at slots [cache_index, cache_index + t) and attend to every filled slot before them.
    branches [b, t] (shared-prompt rows, no cache): 0 = shared prompt, k > 0 = reply k, which no other reply
    sees (`attention_mask`); positions then continue from the prompt on every branch.
    """
    if branches is not None and cache is not None:
      raise ValueError("branches (shared-prompt rows) are for cache-free forwards (training and scoring)")
    b, t, _ = x.shape
    q_slot = jnp.broadcast_to(jnp.arange(t)[None] + cache_index, (b, t))
    if cache is None:
      kv_seg = segment_ids
      xs = None
    else:
      kv_seg = jax.lax.dynamic_update_slice_in_dim(cache.segment_ids, segment_ids.astype(jnp.int32),
                                                   cache_index, axis=1)
      xs = (cache.k, cache.v) if self.layers.scan else list(zip(cache.k, cache.v))
    mask = attn.Mask(attention_mask(segment_ids, q_slot, kv_seg, branches), segment_ids, kv_seg,
                     branched=branches is not None)
    x = sharding.constrain(x, ("batch", "seq", "act_embed"))

    rope = rope_tables(positions, rope_inv_freq(self.cfg))

    def layer_fn(layer, h, kv):
      h, new_kv = layer(h, rope, mask, kv, cache_index)
      return h, new_kv

    x, new_kv = self.layers.apply(x, layer_fn, xs=xs, policy=self.remat if cache is None else None)
    new_cache = None
    if cache is not None:
      new_k, new_v = new_kv if self.layers.scan else (tuple(kv[0] for kv in new_kv), tuple(kv[1] for kv in new_kv))
      new_cache = KVCache(new_k, new_v, kv_seg)
    return self.norm(x), new_cache

  def init_cache(self, batch: int, max_len: int) -> KVCache:
    """An empty cache of max_len slots in the compute dtype, laid out for this stack (scanned or not)."""
    return KVCache.zeros(self.cfg, batch, max_len, self.dtype, stacked=self.layers.scan)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[b, t, d] -> [b, t, v] in the compute dtype."""
    if self.cfg.tie_word_embeddings:
      return self.embed_tokens.attend(hidden)
    return self.lm_head(hidden)
