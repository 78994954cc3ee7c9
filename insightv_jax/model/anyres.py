"""AnyRes geometry: best-resolution choice, tile grid, unpadding, and where each image token comes from.

LLaVA-NeXT cuts an image of size (H, W) into a base tile (the whole image squeezed to one tile) plus a
grid of gh x gw tiles at the best pinpoint resolution. Each tile yields an s x s map of features
(s = image_size / patch_size, e.g. 24). The grid maps are stitched into one (gh*s) x (gw*s) map, the
rows/columns that only cover padding are cut off ("unpad", so the map keeps the image's aspect ratio),
and an `image_newline` vector closes every row. The packed sequence is

    [base tile: s*s tokens] + for each kept row r: [kept columns of row r ..., newline]

Worked example (tile 336, s = 24, pinpoints incl. [336, 672]): an image of H=300, W=600 picks
(336, 672) -> grid gh=1, gw=2 -> stitched map 24 x 48. The image is 2:1 wide so the map is cut to
300 * 48 // 600 = 24 rows -> no cut; tokens = 576 + 24 * (48 + 1) = 1752.
An image of H=200, W=600 picks the same grid; rows kept = 48 * 200 // 600 = 16, cut (24 - 16) / 2 = 4
from the top and bottom -> tokens = 576 + 16 * 49 = 1360.

All functions here take integer arrays and use exact integer arithmetic, so the same code runs on the
host (numpy) and inside `jit` (jax.numpy), and the token count the host expands a prompt to always
equals what the model fills in. `layout` is the one derivation from an image's size (grid, unpadding, token
count): the image processor, the prompt's `<image>` count and the model's `feature_source_index` all read it.
`transformers` computes the best resolution in float64 and truncates, so a downscaled side can come out one
pixel short and the choice differ. With LLaVA-NeXT's pinpoints that is rare (none among 10^5 random sizes up
to 4000 px); with tiny test tiles (28 px), whose small areas tie often, it happens for about 0.2% of sizes, so
parity tests against `transformers` pick their sizes.
Unpadding is exact here and `round(x, 7)` of a float ratio there: they can only differ for sides over
about 10^7 px.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


def best_resolution(height, width, pinpoints: Sequence[Sequence[int]], xp=np):
  """Index of the best pinpoint for images of size (height, width) (int arrays, any shape).

  Maximises the effective resolution min(downscaled area, original area), then minimises the wasted
  area, then takes the first, as `transformers.image_processing_utils.select_best_resolution` does.
  """
  ph = xp.asarray([p[0] for p in pinpoints], dtype=xp.int32)
  pw = xp.asarray([p[1] for p in pinpoints], dtype=xp.int32)
  h = xp.asarray(height, dtype=xp.int32)[..., None]
  w = xp.asarray(width, dtype=xp.int32)[..., None]
  width_limited = pw * h <= ph * w  # scale = min(pw / w, ph / h) is pw / w
  down_w = xp.where(width_limited, pw, (w * ph) // h)
  down_h = xp.where(width_limited, (h * pw) // w, ph)
  effective = xp.minimum(down_w * down_h, w * h)
  wasted = pw * ph - effective
  best = effective == effective.max(axis=-1, keepdims=True)
  return xp.argmin(xp.where(best, wasted, xp.iinfo(xp.int32).max), axis=-1)


def grid_shape(height, width, pinpoints, tile: int, xp=np):
  """(rows, cols) of tiles of the best pinpoint for each image."""
  idx = best_resolution(height, width, pinpoints, xp)
  ph = xp.asarray([p[0] for p in pinpoints], dtype=xp.int32)
  pw = xp.asarray([p[1] for p in pinpoints], dtype=xp.int32)
  return ph[idx] // tile, pw[idx] // tile


def unpadded_extent(height, width, grid_rows, grid_cols, side: int, xp=np):
  """Rows/cols of the stitched (grid_rows*side) x (grid_cols*side) map kept by unpadding.

  Returns (top, rows_kept, left, cols_kept), matching `transformers`' `unpad_image`. An image wider than
  the map loses rows (equally at top and bottom), a taller one loses columns; side 24:

    H x W = 200 x 600, grid 1 x 2 -> map 24 x 48, keeps 200 * 48 // 600 = 16 rows  -> (4, 16, 0, 48)
    H x W = 600 x 200, grid 2 x 1 -> map 48 x 24, keeps 200 * 48 // 600 = 16 cols  -> (0, 48, 4, 16)
    H x W = 300 x 600, grid 1 x 2 -> map 24 x 48, same aspect ratio: nothing cut    -> (0, 24, 0, 48)
  """
  h = xp.asarray(height, dtype=xp.int32)
  w = xp.asarray(width, dtype=xp.int32)
  cur_h, cur_w = grid_rows * side, grid_cols * side
  wider = w * cur_h > cur_w * h  # the image is wider than the map: cut rows
  new_h = (h * cur_w) // w
  new_w = (w * cur_h) // h
  pad_rows = xp.where(wider, (cur_h - new_h) // 2, 0)
  pad_cols = xp.where(wider, 0, (cur_w - new_w) // 2)
  return pad_rows, cur_h - 2 * pad_rows, pad_cols, cur_w - 2 * pad_cols


class Layout(NamedTuple):
  """Everything AnyRes derives from an image's size, each an int array shaped like (height, width).

  grid_rows / grid_cols: the tiles of the chosen pinpoint (`grid_shape`); top, kept_rows, left, kept_cols: the
  stitched map's part that unpadding keeps (`unpadded_extent`); num_tokens: the packed feature length.
  """

  grid_rows: object
  grid_cols: object
  top: object
  kept_rows: object
  left: object
  kept_cols: object
  num_tokens: object


def layout(height, width, pinpoints, tile: int, side: int, tokens_per_tile: int, xp=np) -> Layout:
  """The one derivation of an image's AnyRes geometry, on the host (numpy: the image processor's tile grid and
  the prompt's `<image>` count) and on device (jax.numpy: `feature_source_index`, the feature lengths)."""
  rows, cols = grid_shape(height, width, pinpoints, tile, xp)
  top, kept_rows, left, kept_cols = unpadded_extent(height, width, rows, cols, side, xp)
  return Layout(rows, cols, top, kept_rows, left, kept_cols, tokens_per_tile + kept_rows * (kept_cols + 1))


def num_image_tokens(height, width, pinpoints, tile: int, side: int, tokens_per_tile: int, xp=np):
  """Packed feature length of each image: base tile + kept rows x (kept cols + newline)."""
  return layout(height, width, pinpoints, tile, side, tokens_per_tile, xp).num_tokens


def max_image_tokens(pinpoints, tile: int, side: int, tokens_per_tile: int) -> int:
  """Upper bound of `num_image_tokens` over all image sizes (no unpadding)."""
  return tokens_per_tile + max((p[0] // tile * side) * (p[1] // tile * side + 1) for p in pinpoints)


def max_patches(pinpoints, tile: int) -> int:
  return 1 + max((p[0] // tile) * (p[1] // tile) for p in pinpoints)


def feature_source_index(lay: Layout, num_tiles: int, side: int, length: int, xp=np):
  """Where each packed image token comes from, as an index into a flat feature table.

  lay: the `layout` of n_images images (arrays [n_images]). The table is the vision features of all tiles,
  [n_images * num_tiles * side * side, d], followed by one row for `image_newline`. Returns int32
  [n_images, length]: entry (i, j) is the table row of the j-th packed token of image i (entries past the
  image's `num_tokens` are clipped garbage).

  Example (side 2, one image with grid 1 x 2, no unpadding, num_tiles 3): tiles 0 (base), 1, 2.
    base:       rows 0..3                      (tile 0, tokens 0..3)
    grid row 0: tile1 t0, tile1 t1, tile2 t0, tile2 t1, newline
    grid row 1: tile1 t2, tile1 t3, tile2 t2, tile2 t3, newline
  """
  cols, top, left, kept_cols = lay.grid_cols, lay.top, lay.left, lay.kept_cols
  n = cols.shape[0]
  s2 = side * side
  j = xp.arange(length, dtype=xp.int32)[None, :]  # [1, length]
  q = j - s2
  row_len = (kept_cols + 1)[:, None]
  r, c = q // row_len, q % row_len
  y = r + top[:, None]
  x = c + left[:, None]
  tile_idx = 1 + (y // side) * cols[:, None] + (x // side)
  token = (y % side) * side + (x % side)
  image_base = (xp.arange(n, dtype=xp.int32) * num_tiles * s2)[:, None]
  grid_src = image_base + tile_idx * s2 + token
  newline_row = n * num_tiles * s2
  src = xp.where(c == kept_cols[:, None], newline_row, grid_src)
  src = xp.where(j < s2, image_base + j, src)
  return xp.clip(src, 0, newline_row).astype(xp.int32)
