"""CLIP and SigLIP vision towers (ViT encoders) as used by LLaVA-NeXT.

CLIP:   patches (conv, no bias) + class token + positions -> pre-LayerNorm -> L pre-LN blocks.
SigLIP: patches (conv, bias) + positions (no class token)  ->               L pre-LN blocks.
Both have a post-LayerNorm that LLaVA does not use (it reads hidden states, not the pooled output);
it is kept so that checkpoints round-trip.

`hidden_states[0]` is the encoder input (after CLIP's pre-LayerNorm), `hidden_states[i]` the output of
block i, as in `transformers`. LLaVA-NeXT takes `hidden_states[vision_feature_layer]` (default -2), so
only the blocks up to that layer are run.

Notation: n images (tiles), c channels, h/w pixels, p patch size, s tokens per tile, d width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from insightv_jax.model.config import LlavaConfig, VisionConfig
from insightv_jax.model.layers import Dense, LayerNorm, LayerStack, activation, remat_policy


class VisionAttention(nnx.Module):
  def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    d, kw = cfg.hidden_size, dict(use_bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.q_proj = Dense(d, d, axes=("vision_embed", "heads"), **kw)
    self.k_proj = Dense(d, d, axes=("vision_embed", "heads"), **kw)
    self.v_proj = Dense(d, d, axes=("vision_embed", "heads"), **kw)
    self.out_proj = Dense(d, d, axes=("heads", "vision_embed"), **kw)
    self.num_heads = cfg.num_attention_heads
    self.head_dim = cfg.head_dim

  def __call__(self, x: jax.Array) -> jax.Array:  # x: [n, s, d]
    n, s, _ = x.shape
    split = lambda y: y.reshape(n, s, self.num_heads, self.head_dim)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    logits = jnp.einsum("nqhk,nshk->nhqs", q * (self.head_dim**-0.5), k)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("nhqs,nshk->nqhk", probs, v).reshape(n, s, -1)
    return self.out_proj(out)


class VisionBlock(nnx.Module):
  def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.layer_norm1 = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)
    self.self_attn = VisionAttention(cfg, rngs=rngs, **kw)
    self.layer_norm2 = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)
    self.fc1 = Dense(cfg.hidden_size, cfg.intermediate_size, axes=("vision_embed", "mlp"), use_bias=True,
                     rngs=rngs, **kw)
    self.fc2 = Dense(cfg.intermediate_size, cfg.hidden_size, axes=("mlp", "vision_embed"), use_bias=True,
                     rngs=rngs, **kw)
    self.act = activation(cfg.hidden_act)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.self_attn(self.layer_norm1(x))
    return x + self.fc2(self.act(self.fc1(self.layer_norm2(x))))


class VisionTower(nnx.Module):
  """pixel_values [n, c, h, w] -> selected hidden states [n, s, d * len(feature_layers)]."""

  def __init__(self, cfg: LlavaConfig, *, rngs: nnx.Rngs):
    vc = cfg.vision
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.cfg = vc
    self.feature_layers = cfg.feature_layers
    self.drop_class_token = cfg.vision_feature_select_strategy == "default"
    self.remat = remat_policy(cfg.remat)
    self.dtype = dtype
    p = vc.patch_size
    self.patch_embedding = Dense(vc.num_channels * p * p, vc.hidden_size, axes=("patch", "vision_embed"),
                                 use_bias=not vc.has_class_token, rngs=rngs, **kw)
    if vc.has_class_token:
      self.class_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (vc.hidden_size,), param_dtype),
                                       axes=("vision_embed",))
      self.pre_layrnorm = LayerNorm(vc.hidden_size, eps=vc.layer_norm_eps, **kw)
    self.position_embedding = nnx.Param(
        0.02 * jax.random.normal(rngs.params(), (vc.num_positions, vc.hidden_size), param_dtype),
        axes=("positions", "vision_embed"))
    self.layers = LayerStack(lambda r: VisionBlock(vc, rngs=r, **kw), vc.num_hidden_layers,
                             scan=cfg.scan_layers, rngs=rngs)
    self.post_layernorm = LayerNorm(vc.hidden_size, eps=vc.layer_norm_eps, **kw)

  def embed(self, pixel_values: jax.Array) -> jax.Array:
    """[n, c, h, w] -> [n, s, d]: non-overlapping p x p patches, flattened (c, kh, kw) like a conv kernel."""
    n, c, h, w = pixel_values.shape
    p = self.cfg.patch_size
    gh, gw = h // p, w // p  # a "valid" conv drops the remainder (SigLIP-384/14 -> 27 x 27, 6 px unused)
    x = pixel_values[:, :, :gh * p, :gw * p].astype(self.dtype).reshape(n, c, gh, p, gw, p)
    x = x.transpose(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)
    x = self.patch_embedding(x)
    if self.cfg.has_class_token:
      cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype), (n, 1, x.shape[-1]))
      x = jnp.concatenate([cls, x], axis=1)
    x = x + self.position_embedding[...].astype(self.dtype)[None]
    if self.cfg.has_class_token:
      x = self.pre_layrnorm(x)
    return x

  def __call__(self, pixel_values: jax.Array) -> jax.Array:
    x = self.embed(pixel_values)
    needed = max(self.feature_layers)
    collect = len(self.feature_layers) > 1 or 0 in self.feature_layers

    def block(layer, h, _):
      h = layer(h)
      return h, (h if collect else None)

    x_last, hs = self.layers.apply(x, block, n=needed, policy=self.remat)
    if collect:
      all_hidden = [x] + ([] if hs is None else list(hs))  # hidden state after 0, 1, ..., needed layers
      feats = jnp.concatenate([all_hidden[i] for i in self.feature_layers], axis=-1)
    else:
      feats = x_last
    if self.drop_class_token:
      feats = feats[:, 1:]
    return feats
