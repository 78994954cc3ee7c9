"""AnyRes geometry: best pinpoint, tile grid, unpadding, token counts and the packed-feature source index.

Given image sizes of many aspect ratios and several pinpoint sets (the tiny test tiles, LLaVA-NeXT's CLIP-336
set, SigLIP-384's 3 x 3 grids, and an odd 3 x 3-patch tile whose unpadding cuts odd margins), when the
geometry is computed with `insightv_jax.model.anyres`, then it equals a plain-Python re-implementation of
transformers' `select_best_resolution` / `unpad_image` / `LlavaNextModel.pack_image_features`, and
transformers' own packing and processor token count, so every image token of a prompt gets the feature
transformers would put there.
"""

from __future__ import annotations

import math
import types
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insightv_jax.model import anyres

LLAVA_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))

# name -> (pinpoints [[h, w], ...], tile = vision image_size, vision patch_size); side = tile // patch
GEOMETRIES = {
    "tiny-28px": (((28, 56), (56, 28), (56, 56), (28, 84), (84, 28)), 28, 14),
    "clip-336": (LLAVA_PINPOINTS, 336, 14),
    "siglip-384-3x3": (tuple((a * 384, b * 384) for a in (1, 2, 3) for b in (1, 2, 3)), 384, 14),
    "odd-10px": (((10, 10), (10, 30), (20, 20), (30, 10), (20, 30)), 10, 3),
}

# (H, W): squares, 2:1 both ways, exact pinpoint sizes, extreme strips, tiny images, odd and near-square sizes.
SIZES = ((28, 28), (28, 56), (56, 28), (30, 100), (100, 30), (7, 5), (1, 200), (200, 1), (300, 600), (200, 600),
         (600, 200), (333, 334), (1000, 1000), (123, 457), (640, 480), (480, 640), (37, 91), (1008, 336),
         (20, 30), (41, 10))


def side_of(tile: int, patch: int) -> int:
  return tile // patch


# ------------------------------------------------------------------------------------------ reference


def ref_best_resolution(h: int, w: int, pinpoints) -> int:
  """transformers' `select_best_resolution`, loop for loop, with exact fractions instead of float64."""
  best = None
  for i, (ph, pw) in enumerate(pinpoints):
    scale = min(Fraction(pw, w), Fraction(ph, h))
    down_w, down_h = math.floor(w * scale), math.floor(h * scale)
    effective = min(down_w * down_h, w * h)
    wasted = ph * pw - effective
    if best is None or effective > best[0] or (effective == best[0] and wasted < best[1]):
      best = (effective, wasted, i)
  return best[2]


def ref_unpad(feature_map: list[list[int]], h: int, w: int) -> list[list[int]]:
  """transformers' `unpad_image` on a list of rows: cut the margins that only cover padding."""
  cur_h, cur_w = len(feature_map), len(feature_map[0])
  if Fraction(w, h) > Fraction(cur_w, cur_h):  # wider than the map: it was padded top and bottom
    new_h = math.floor(Fraction(h * cur_w, w))
    pad = (cur_h - new_h) // 2
    return feature_map[pad:cur_h - pad]
  new_w = math.floor(Fraction(w * cur_h, h))
  pad = (cur_w - new_w) // 2
  return [row[pad:cur_w - pad] for row in feature_map]


def ref_pack(image_sizes, num_tiles: int, pinpoints, tile: int, side: int) -> list[list[int]]:
  """Table rows of each image's packed tokens, built the way `pack_image_features` builds the features.

  The table holds tile t of image i at rows (i * num_tiles + t) * side^2 + [0, side^2), then one newline row.
  """
  s2 = side * side
  newline = len(image_sizes) * num_tiles * s2
  packed = []
  for i, (h, w) in enumerate(image_sizes):
    first = i * num_tiles * s2
    tokens = [first + k for k in range(s2)]  # the base tile, as it is
    ph, pw = pinpoints[ref_best_resolution(h, w, pinpoints)]
    gh, gw = ph // tile, pw // tile
    stitched = [[-1] * (gw * side) for _ in range(gh * side)]  # tiles side by side in reading order
    for ty in range(gh):
      for tx in range(gw):
        tile_rows = first + (1 + ty * gw + tx) * s2
        for py in range(side):
          for px in range(side):
            stitched[ty * side + py][tx * side + px] = tile_rows + py * side + px
    for row in ref_unpad(stitched, h, w):
      tokens += row + [newline]
    packed.append(tokens)
  return packed


def ours(image_sizes, pinpoints, tile, side, xp=np):
  """(index [n, L], lengths [n], num_tiles) from anyres, with the model's table layout and buffer length."""
  sizes = np.asarray(image_sizes)
  num_tiles = anyres.max_patches(pinpoints, tile)
  length = anyres.max_image_tokens(pinpoints, tile, side, side * side)
  lay = anyres.layout(sizes[:, 0], sizes[:, 1], pinpoints, tile, side, side * side, xp=xp)
  index = anyres.feature_source_index(lay, num_tiles, side, length, xp=xp)
  return np.asarray(index), np.asarray(lay.num_tokens), num_tiles


# ------------------------------------------------------------------------------------------ worked examples


def test_best_resolution_worked_examples():
  """Given LLaVA-NeXT's pinpoints, each image gets the grid that keeps the most pixels, then wastes the least."""
  h = np.array([300, 600, 1000, 100, 1000, 300])
  w = np.array([600, 300, 1000, 100, 300, 1000])
  # 2:1 wide -> 336x672; tall -> 672x336; big square -> 672x672; tiny square: every pinpoint keeps all 100x100
  # pixels, 336x672 and 672x336 waste the least and tie -> the first; 10:3 tall -> 1008x336; 3:10 -> 336x1008.
  np.testing.assert_array_equal(anyres.best_resolution(h, w, LLAVA_PINPOINTS), [0, 1, 2, 0, 3, 4])
  rows, cols = anyres.grid_shape(h, w, LLAVA_PINPOINTS, 336)
  np.testing.assert_array_equal(rows, [1, 2, 2, 1, 3, 1])
  np.testing.assert_array_equal(cols, [2, 1, 2, 2, 1, 3])


def test_unpadded_extent_worked_examples():
  """A 3:1 image in a 1 x 2 grid (map 24 x 48) keeps 16 of 24 rows, cut 4 from the top; transposed, the columns."""
  top, rows, left, cols = anyres.unpadded_extent(np.array([200, 300, 600]), np.array([600, 600, 200]),
                                                 np.array([1, 1, 2]), np.array([2, 2, 1]), 24)
  np.testing.assert_array_equal(np.stack([top, rows, left, cols], -1),
                                [[4, 16, 0, 48],    # 3:1 wide: 200 * 48 // 600 = 16 rows kept
                                 [0, 24, 0, 48],    # 2:1 fills the 24 x 48 map: nothing cut
                                 [0, 48, 4, 16]])   # 1:3 tall in a 48 x 24 map: 16 columns kept


def test_num_image_tokens_docstring_examples():
  """The module docstring's counts: 576 + 24 * 49 = 1752 for 300 x 600, 576 + 16 * 49 = 1360 for 200 x 600."""
  n = anyres.num_image_tokens(np.array([300, 200]), np.array([600, 600]), LLAVA_PINPOINTS, 336, 24, 576)
  np.testing.assert_array_equal(n, [1752, 1360])


def test_feature_source_index_docstring_example():
  """One 28 x 56 image, grid 1 x 2 of 2 x 2-token tiles (table rows: base 0-3, tile 1 4-7, tile 2 8-11, newline 12)."""
  index = anyres.feature_source_index(anyres.layout(np.array([28]), np.array([56]), [[28, 56]], 28, 2, 4), 3, 2, 14)
  np.testing.assert_array_equal(index, [[0, 1, 2, 3,          # base tile
                                         4, 5, 8, 9, 12,      # grid row 0: tile 1 row 0, tile 2 row 0, newline
                                         6, 7, 10, 11, 12]])  # grid row 1


# ------------------------------------------------------------------------------------------ against references


@pytest.mark.parametrize("name", GEOMETRIES)
def test_best_resolution_is_exact_select_best_resolution(name):
  """Over 1500 sizes from 1 px to 4000 px, the integer choice equals transformers' rule in exact arithmetic."""
  pinpoints, _, _ = GEOMETRIES[name]
  rng = np.random.default_rng(0)
  sizes = np.concatenate([rng.integers(1, 4000, (1000, 2)), rng.integers(1, 120, (500, 2))])
  got = anyres.best_resolution(sizes[:, 0], sizes[:, 1], pinpoints)
  want = [ref_best_resolution(int(h), int(w), pinpoints) for h, w in sizes]
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_feature_source_index_matches_reference_packing(name):
  """Given a batch of all sizes, each image's first num_image_tokens entries are exactly the reference packing."""
  pinpoints, tile, patch = GEOMETRIES[name]
  side = side_of(tile, patch)
  index, lengths, num_tiles = ours(SIZES, pinpoints, tile, side)
  want = ref_pack(SIZES, num_tiles, pinpoints, tile, side)
  newline = len(SIZES) * num_tiles * side * side
  for i, size in enumerate(SIZES):
    assert lengths[i] == len(want[i]), size
    np.testing.assert_array_equal(index[i, :lengths[i]], want[i], err_msg=str(size))
  assert index.min() >= 0 and index.max() <= newline  # the tail past each image is a valid (unused) row


@pytest.mark.parametrize("name", GEOMETRIES)
def test_packing_and_count_match_transformers(name):
  """transformers' `pack_image_features`, run on a table of row ids, and its processor's token count agree."""
  torch = pytest.importorskip("torch")
  from transformers.models.llava_next.modeling_llava_next import LlavaNextModel
  from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

  pinpoints, tile, patch = GEOMETRIES[name]
  side = side_of(tile, patch)
  index, lengths, num_tiles = ours(SIZES, pinpoints, tile, side)
  s2, n = side * side, len(SIZES)
  table = torch.arange(n * num_tiles * s2 + 1, dtype=torch.float64)  # a "feature" of width 1: its own row id
  model = types.SimpleNamespace(config=types.SimpleNamespace(
      image_grid_pinpoints=[list(p) for p in pinpoints],
      vision_config=types.SimpleNamespace(image_size=tile, patch_size=patch)))
  feats = []
  for i, (h, w) in enumerate(SIZES):
    rows, cols = anyres.grid_shape(h, w, pinpoints, tile)
    tiles = table[i * num_tiles * s2:(i * num_tiles + 1 + rows * cols) * s2]  # the image's own tiles only
    feats.append(tiles.reshape(1 + rows * cols, s2, 1))
  packed, feature_lens = LlavaNextModel.pack_image_features(model, feats, torch.tensor(SIZES), "default",
                                                            image_newline=table[-1:])
  processor = types.SimpleNamespace(image_processor=types.SimpleNamespace(image_grid_pinpoints=list(pinpoints)),
                                    patch_size=patch, num_additional_image_tokens=0)
  processor._get_unpadded_features = types.MethodType(LlavaNextProcessor._get_unpadded_features, processor)
  for i, (h, w) in enumerate(SIZES):
    np.testing.assert_array_equal(index[i, :lengths[i]], packed[i][:, 0].numpy().astype(np.int64),
                                  err_msg=str((h, w)))
    assert lengths[i] == feature_lens[i] == LlavaNextProcessor._get_number_of_features(processor, h, w, tile, tile)


def test_index_and_count_are_the_same_under_jit():
  """The model computes the index with jax.numpy inside jit; the host counts with numpy: both agree."""
  pinpoints, tile, patch = GEOMETRIES["odd-10px"]
  side = side_of(tile, patch)
  host_index, host_lengths, num_tiles = ours(SIZES, pinpoints, tile, side)

  @jax.jit
  def on_device(sizes):
    lay = anyres.layout(sizes[:, 0], sizes[:, 1], pinpoints, tile, side, side * side, xp=jnp)
    return anyres.feature_source_index(lay, num_tiles, side, host_index.shape[1], xp=jnp), lay.num_tokens

  jit_index, jit_lengths = on_device(jnp.asarray(SIZES, jnp.int32))
  np.testing.assert_array_equal(jit_index, host_index)
  np.testing.assert_array_equal(jit_lengths, host_lengths)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_max_image_tokens_and_max_patches_bound_every_image(name):
  """The static buffers (tokens per image, tiles per image) fit every size, and are reached by some pinpoint."""
  pinpoints, tile, patch = GEOMETRIES[name]
  side = side_of(tile, patch)
  sizes = np.array(SIZES + tuple(pinpoints))
  rows, cols = anyres.grid_shape(sizes[:, 0], sizes[:, 1], pinpoints, tile)
  counts = anyres.num_image_tokens(sizes[:, 0], sizes[:, 1], pinpoints, tile, side, side * side)
  assert (1 + rows * cols).max() == anyres.max_patches(pinpoints, tile)
  assert counts.max() == anyres.max_image_tokens(pinpoints, tile, side, side * side)
