"""Image decoding and LLaVA-NeXT AnyRes preprocessing (numpy + Pillow, on the host / in the loader).

Matches `transformers.LlavaNextImageProcessor` (PIL backend) step by step:
  1. pick the best pinpoint (h*, w*) for the image's (H, W)        (`model.anyres.best_resolution`)
  2. resize to fit inside (h*, w*) keeping the aspect ratio (bicubic), pad with black, centred
  3. cut the padded image into (h*/tile) x (w*/tile) tiles, row-major
  4. prepend the base tile: the whole image resized to tile x tile (aspect ratio NOT kept)
  5. scale to [0, 1] and normalise with the tower's mean / std

    tiles, size = preprocess(pil_image, proc)          # tiles: [n, 3, tile, tile] float32, size: (H, W)
    pixel_values, image_sizes = stack_batch([...])      # [b, n_max, 3, tile, tile], [b, 2]; None = empty slot
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Sequence

import numpy as np
from PIL import Image

from insightv_jax.model import anyres
from insightv_jax.model.config import LlavaConfig
from insightv_jax.utils.inputs import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  """An image's way into the model: preprocessing and the AnyRes geometry that counts its tokens.

  tile: the tower's input size; pinpoints: AnyRes resolutions [(h, w), ...]; mean/std per channel.
  patches_per_side / tokens_per_tile: the tower's patch grid and the features a tile gives after the
  projector (`LlavaConfig.tokens_per_tile`); `for_model` fills them, and `num_image_tokens` needs them.
  """

  tile: int
  pinpoints: tuple[tuple[int, int], ...]
  mean: tuple[float, float, float] = CLIP_MEAN
  std: tuple[float, float, float] = CLIP_STD
  patches_per_side: int = 0
  tokens_per_tile: int = 0

  @classmethod
  def for_model(cls, cfg: LlavaConfig) -> ImageProcessorConfig:
    siglip = cfg.vision.model_type == "siglip_vision_model"
    return cls(tile=cfg.vision.image_size, pinpoints=tuple(cfg.image_grid_pinpoints),
               mean=SIGLIP_MEAN if siglip else CLIP_MEAN, std=SIGLIP_STD if siglip else CLIP_STD,
               patches_per_side=cfg.vision.patches_per_side, tokens_per_tile=cfg.tokens_per_tile)

  @property
  def num_tiles(self) -> int:
    """Tiles of the largest AnyRes grid plus the base tile: the tile slots of one image."""
    return int(anyres.max_patches(self.pinpoints, self.tile))

  def num_image_tokens(self, height: int, width: int) -> int:
    """How many `<image>` tokens an image of (height, width) pixels becomes (base tile + unpadded grid)."""
    if not self.patches_per_side:
      raise ValueError("ImageProcessorConfig without the patch geometry: build it with for_model(cfg)")
    return int(anyres.num_image_tokens(height, width, self.pinpoints, self.tile, self.patches_per_side,
                                       self.tokens_per_tile))


class ImageDecodeError(InputError):
  pass


class ImageTokenMismatch(InputError):
  pass


def check_image_tokens(ids: np.ndarray, counts: Sequence[int], image_token_id: int, where: str) -> None:
  """An example's token ids [t] must hold exactly sum(counts) image tokens, the features its images give
  (`ImageProcessorConfig.num_image_tokens` each): the model fills image tokens in reading order over the whole
  batch, so a row with fewer (a later turn's image cut by truncation) would shift every later row's images.
  Raises ImageTokenMismatch naming `where` (the record) otherwise."""
  n = int((np.asarray(ids) == image_token_id).sum())
  if n != sum(counts):
    raise ImageTokenMismatch(f"{where}: {n} image tokens in the text but its {len(counts)} image(s) give "
                             f"{sum(counts)} features ({list(counts)}); an image placeholder was cut by truncation "
                             "to max_len, or the text holds image tokens of its own")


def decode(data: bytes, where: str = "image") -> Image.Image:
  """Encoded bytes (PNG/JPEG/...) -> RGB PIL image; a clear error naming `where` if corrupt."""
  try:
    img = Image.open(io.BytesIO(data))
    img.load()
  except Exception as e:  # Pillow raises several unrelated types for bad data
    raise ImageDecodeError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e
  return img.convert("RGB")


def _fit_size(h: int, w: int, th: int, tw: int) -> tuple[int, int]:
  """Size after resizing (h, w) to fit (th, tw) keeping aspect (transformers' get_patch_output_size)."""
  scale_w, scale_h = tw / w, th / h
  if scale_w < scale_h:
    return min(math.ceil(h * scale_w), th), tw
  return th, min(math.ceil(w * scale_h), tw)


def _normalise(tiles_u8: np.ndarray, proc: ImageProcessorConfig) -> np.ndarray:
  """[n, h, w, 3] uint8 -> [n, 3, h, w] float32, exactly as transformers rescales then normalises."""
  x = (tiles_u8.astype(np.float64) * (1 / 255)).astype(np.float32)
  x = (x - np.asarray(proc.mean, np.float32)) / np.asarray(proc.std, np.float32)
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(image: Image.Image, proc: ImageProcessorConfig) -> tuple[np.ndarray, tuple[int, int]]:
  """RGB image -> (tiles [1 + rows*cols, 3, tile, tile] float32, original (H, W))."""
  if image.mode != "RGB":
    image = image.convert("RGB")
  w, h = image.size
  t = proc.tile
  idx = int(anyres.best_resolution(h, w, proc.pinpoints))
  th, tw = proc.pinpoints[idx]
  nh, nw = _fit_size(h, w, th, tw)
  resized = np.asarray(image.resize((nw, nh), Image.BICUBIC))
  (py, ry), (px, rx) = divmod(th - nh, 2), divmod(tw - nw, 2)
  padded = np.pad(resized, ((py, py + ry), (px, px + rx), (0, 0)))
  grid = padded.reshape(th // t, t, tw // t, t, 3).transpose(0, 2, 1, 3, 4).reshape(-1, t, t, 3)
  base = np.asarray(image.resize((t, t), Image.BICUBIC))[None]
  return _normalise(np.concatenate([base, grid], axis=0), proc), (h, w)


def stack_batch(items: Sequence[tuple[np.ndarray, tuple[int, int]] | None], num_tiles: int | None = None,
                tile: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The one way image slots become model inputs: each item's tiles zero-padded to `num_tiles`, stacked.

  items: `preprocess` outputs, or None for an empty slot (zeros, size (0, 0): the model gives it no image
    tokens, so a batch row may own a fixed number of slots and use fewer).
  num_tiles: tiles per slot (default: the most any item has); tile: the tile side (needed only when every
    item is None).
  Returns pixel_values [b, n, 3, tile, tile] float32 and image_sizes [b, 2] int32. E.g. a 336-px tower, one
  image on a 2x2 grid (5 tiles) and one empty slot, num_tiles=5: pixel_values [2, 5, 3, 336, 336] (the second
  slot all zeros), image_sizes [[H, W], [0, 0]].
  """
  present = [x for x in items if x is not None]
  n = num_tiles or max((len(t) for t, _ in present), default=1)
  side = present[0][0].shape[-1] if present else tile
  if side is None:
    raise ValueError("stack_batch: every slot is empty; pass tile= to size them")
  pixel_values = np.zeros((len(items), n, 3, side, side), np.float32)
  sizes = np.zeros((len(items), 2), np.int32)
  for i, item in enumerate(items):
    if item is None:
      continue
    tiles, size = item
    if len(tiles) > n:
      raise ValueError(f"image {i} has {len(tiles)} tiles, more than num_tiles={n}")
    pixel_values[i, :len(tiles)] = tiles
    sizes[i] = size
  return pixel_values, sizes
