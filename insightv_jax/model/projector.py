"""The `mlp2x_gelu` projector: vision features [n, s, dv] -> LLM embeddings [n, s, d]."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.layers import Dense, activation


class Projector(nnx.Module):
  def __init__(self, cfg: LlavaConfig, *, rngs: nnx.Rngs):
    dv = cfg.vision.hidden_size * len(cfg.feature_layers)
    d = cfg.text.hidden_size
    kw = dict(use_bias=cfg.multimodal_projector_bias, rngs=rngs, dtype=jnp.dtype(cfg.dtype),
              param_dtype=jnp.dtype(cfg.param_dtype))
    self.linear_1 = Dense(dv, d, axes=("vision_embed", "mlp"), **kw)
    self.linear_2 = Dense(d, d, axes=("mlp", "embed"), **kw)
    self.act = activation(cfg.projector_hidden_act)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(self.act(self.linear_1(x)))
