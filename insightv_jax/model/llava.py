"""LLaVA-NeXT: vision tower -> projector -> AnyRes packing -> merge into text embeddings -> decoder.

    model = LlavaNext(cfg, rngs=nnx.Rngs(0))
    logits = model(input_ids, pixel_values, image_sizes, attention_mask)   # [b, t, v]

`input_ids` already hold `num_image_tokens(image)` copies of `cfg.image_token_index` per image (the
processor / chat template expands the placeholder), exactly as `transformers` expects. Image tokens are
filled in reading order over the batch with the images' packed features; shapes are static (jit-friendly).

Notation: b batch, i images, n tiles per image, c channels, h/w tile pixels, t tokens, d width, v vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from insightv_jax.model import anyres
from insightv_jax.model.config import ConfigError, LlavaConfig
from insightv_jax.model.llm import Decoder, KVCache, segment_positions
from insightv_jax.model.projector import Projector
from insightv_jax.model.vision import VisionTower


class LlavaNext(nnx.Module):
  """The whole model; `abstract_model(cfg)` gives its structure without allocating."""

  def __init__(self, cfg: LlavaConfig, *, rngs: nnx.Rngs):
    if cfg.vision_feature_select_strategy == "full" and cfg.vision.has_class_token:
      raise ConfigError("vision_feature_select_strategy='full' keeps CLIP's class token, which does not "
                        "tile into the AnyRes grid; use 'default' (as LLaVA-NeXT does)")
    self.cfg = cfg
    self.vision_tower = VisionTower(cfg, rngs=rngs)
    self.multi_modal_projector = Projector(cfg, rngs=rngs)
    d = cfg.text.hidden_size
    self.image_newline = nnx.Param(
        (d**-0.5) * jax.random.normal(rngs.params(), (d,), jnp.dtype(cfg.param_dtype)), axes=("embed",))
    self.language_model = Decoder(cfg.text, rngs=rngs, dtype=jnp.dtype(cfg.dtype),
                                  param_dtype=jnp.dtype(cfg.param_dtype), remat=cfg.remat, scan=cfg.scan_layers,
                                  attention=cfg.attention)

  # ------------------------------------------------------------------------------------------ images

  def max_image_tokens(self) -> int:
    c = self.cfg
    return anyres.max_image_tokens(c.image_grid_pinpoints, c.vision.image_size, c.vision.patches_per_side,
                                   c.tokens_per_tile)

  def encode_tiles(self, pixel_values: jax.Array) -> jax.Array:
    """pixel_values [i, n, c, h, w] -> the vision tower's selected features of every tile [i*n, s, dv], before
    the projector (what a frozen tower gives the policy and the DPO reference alike)."""
    return self.vision_tower(pixel_values.reshape((-1,) + pixel_values.shape[2:]))

  def image_features(self, pixel_values: jax.Array, image_sizes: jax.Array, *,
                     tower_features: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """pixel_values [i, n, c, h, w], image_sizes [i, 2] -> (packed features [i, L, d], lengths [i]).

    An image slot with size (0, 0) is empty (batch padding): its length is 0.
    L is the largest possible packed length; image k's first lengths[k] rows are its features. Tiles past
    an image's own count (batch padding) are encoded but never referenced. tower_features [i*n, s, dv]:
    `encode_tiles(pixel_values)` computed already (the tower is then not run again).
    """
    c = self.cfg
    n = pixel_values.shape[1]
    if tower_features is None:
      tower_features = self.encode_tiles(pixel_values)
    feats = self.multi_modal_projector(tower_features)  # [i*n, s, d]
    d = feats.shape[-1]
    table = jnp.concatenate([feats.reshape(-1, d), self.image_newline[...].astype(feats.dtype)[None]], axis=0)
    present = image_sizes[:, 0] > 0  # size (0, 0) marks an empty image slot: zero tokens
    safe = jnp.where(present[:, None], image_sizes, c.vision.image_size)
    layout = anyres.layout(safe[:, 0], safe[:, 1], c.image_grid_pinpoints, c.vision.image_size,
                           c.vision.patches_per_side, c.tokens_per_tile, xp=jnp)
    src = anyres.feature_source_index(layout, n, c.vision.patches_per_side, self.max_image_tokens(), xp=jnp)
    return jnp.take(table, src, axis=0), jnp.where(present, layout.num_tokens, 0)

  def embed(self, input_ids: jax.Array, image_feats: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Text embeddings [b, t, d] with image placeholders replaced by image features.

    As in transformers, placeholders are filled in reading order over the whole batch: the first
    lengths[0] image tokens (row-major over [b, t]) get image 0's features, the next lengths[1] image 1's,
    and so on. One image per row is the common case; packed rows hold several images in order. The image
    tokens of the batch must number lengths.sum(): the loader checks each example where it builds it
    (`data.images.check_image_tokens`, an error naming the record), and the clips below only keep the gather
    in bounds.
    """
    x = self.language_model.embed_tokens(input_ids)
    if image_feats is None:
      return x
    feats, lengths = image_feats
    is_image = (input_ids == self.cfg.image_token_index).reshape(-1)
    k = jnp.cumsum(is_image) - 1  # global index of each image token
    ends = jnp.cumsum(lengths)
    img = jnp.clip(jnp.searchsorted(ends, k, side="right"), 0, feats.shape[0] - 1)
    j = jnp.clip(k - (ends - lengths)[img], 0, feats.shape[1] - 1)
    gathered = feats[img, j].reshape(x.shape)
    return jnp.where(is_image.reshape(x.shape[:2])[..., None], gathered.astype(x.dtype), x)

  # ------------------------------------------------------------------------------------------ forward

  def hidden_states(self, input_ids, pixel_values=None, image_sizes=None, attention_mask=None, *,
                    segment_ids=None, positions=None, cache: KVCache | None = None, cache_index=0, branches=None):
    """Final-norm hidden states [b, t, d] (and the updated cache when one is given).

    segment_ids [b, t] (0 = padding) generalise attention_mask for packed rows; positions default to
    the index within each segment, so left padding does not shift a row's positions. branches [b, t]:
    shared-prompt rows (`Decoder.__call__`; pass their positions too).
    """
    if segment_ids is None:
      segment_ids = (jnp.ones_like(input_ids) if attention_mask is None else attention_mask).astype(jnp.int32)
    if positions is None:
      positions = segment_positions(segment_ids)
    feats = None if pixel_values is None else self.image_features(pixel_values, image_sizes)
    x = self.embed(input_ids, feats)
    h, new_cache = self.language_model(x, segment_ids, positions, cache=cache, cache_index=cache_index,
                                       branches=branches)
    return h, new_cache

  def logits(self, hidden: jax.Array) -> jax.Array:
    return self.language_model.logits(hidden)

  def __call__(self, input_ids, pixel_values=None, image_sizes=None, attention_mask=None, *, segment_ids=None,
               positions=None) -> jax.Array:
    """Logits [b, t, v]."""
    h, _ = self.hidden_states(input_ids, pixel_values, image_sizes, attention_mask, segment_ids=segment_ids,
                              positions=positions)
    return self.logits(h)


def abstract_model(cfg: LlavaConfig, seed: int = 0) -> LlavaNext:
  """The model's structure with `jax.ShapeDtypeStruct` leaves (nothing allocated, nothing computed)."""
  return nnx.eval_shape(lambda: LlavaNext(cfg, rngs=nnx.Rngs(seed)))
