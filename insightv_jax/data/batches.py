"""Typed batches: what the loader yields and the train step takes.

Axes: B rows, T tokens per row (max_len), I image slots (B * images_per_row), n tiles per slot (the most
AnyRes tiles an image can have, base tile included), tile the vision tower's input side. In the loader B is
this process's share of the global batch; in the train step it is the global batch.

    TokenRows   input_ids, loss_mask, segment_ids, positions    [B, T] int32 each
    SftBatch    tokens: TokenRows; pixel_values [I, n, 3, tile, tile] float32; image_sizes [I, 2] int32
    DpoBatch    chosen, rejected: TokenRows (row b of each is the same pair); pixel_values, image_sizes
                as in SftBatch, once for both sides; ref_logps [B, 2] float32 (chosen, rejected) or None
    SharedDpoBatch  tokens: TokenRows, branches [B, T] int32: up to K pairs per row, each prompt once
                (`[prompt | chosen | rejected]`); pixel_values, image_sizes as in SftBatch; ref_logps
                [B, K, 2] float32 or None; K = pairs_per_row (static)
    BatchStats  skipped: records the loader skipped while filling the batch (host-side; never in the step)
    Loaded      (batch, stats): one element of the loader

Token rows, worked: one packed row (B=1, T=8) holding example a (3 tokens, last one trained) and example b
(4 tokens, last two trained), then one pad:

    input_ids    [[a0 a1 a2 b0 b1 b2 b3 pad]]
    segment_ids  [[ 1  1  1  2  2  2  2  0]]    example number in the row; 0 = padding
    positions    [[ 0  1  2  0  1  2  3  0]]    restart per example
    loss_mask    [[ 0  0  1  0  0  1  1  0]]    1 = a reply token the loss trains on

Shared-prompt pairs, worked: prompt p0 p1 p2 (p2 the assistant header's last token), chosen reply c0 c1,
rejected reply r0 r1 r2, K = 1, T = 10. The prompt's last token p2 heads each branch, because its hidden state
predicts each reply's first token (the hidden state of the copy equals the original's: same token, same
position, same keys), so every target is predicted from inside its own branch:

    input_ids    [[p0 p1 p2 c0 c1 p2 r0 r1 r2 pad]]
    branches     [[ 0  0  1  1  1  2  2  2  2  0]]    0 = shared prompt; 1 = chosen; 2 = rejected branch
    segment_ids  [[ 1  1  1  1  1  1  1  1  1  0]]    pair number in the row; 0 = padding
    positions    [[ 0  1  2  3  4  2  3  4  5  0]]    both branches continue from the shared prompt
    loss_mask    [[ 0  0  0  1  1  0  1  1  1  0]]

Rejected tokens see the shared prompt and their own branch, never the chosen reply (`model.llm.attention_mask`),
so each reply's log-prob equals the one of its own unshared row [prompt | reply]; the images are spliced once.

Image slots: row r owns slots [r * images_per_row, (r + 1) * images_per_row), in the order of its image
placeholders; an unused slot is zeros with size (0, 0), which the model counts as zero image tokens (so the
rows of a batch can be split into micro-batches). See `images.stack_batch`.

Why `flax.struct.dataclass` (and not plain dataclasses registered by hand): it is the JAX ecosystem's frozen
pytree dataclass, one decorator instead of a class plus a registration call. `jax.jit`, `jax.tree.map` and
`lax.scan` see the fields as leaves (micro-batching reshapes every leaf at once), key paths name the fields
(`.tokens.input_ids`), `.replace(...)` builds a changed copy, and a None field (no images, no ref_logps) is
an empty subtree. The classes live at module level, so they pickle by reference: Grain's `mp_prefetch`
workers send them to the main process (Grain walks them with `jax.tree_util`, moving the numpy leaves
through shared memory).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Union

import jax
import numpy as np
from flax import struct

from insightv_jax import sharding


@dataclasses.dataclass(frozen=True)
class Geometry:
  """What fixes every batch shape: rows B, tokens per row T, image slots per row, tiles per slot n, tile side."""

  rows: int
  max_len: int
  images_per_row: int
  num_tiles: int
  tile: int
  pairs_per_row: int = 1  # K: shared-prompt DPO pairs per row

  @property
  def image_slots(self) -> int:
    """I = B * images_per_row."""
    return self.rows * self.images_per_row


def _spec(shape: tuple[int, ...], dtype, mesh) -> jax.ShapeDtypeStruct:
  """An abstract leaf; with a mesh, its leading (row or slot) axis is split over the batch mesh axes."""
  where = None if mesh is None else sharding.batch_sharding(mesh, len(shape))
  return jax.ShapeDtypeStruct(shape, dtype, sharding=where)


def _image_specs(g: Geometry, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  return {"pixel_values": _spec((g.image_slots, g.num_tiles, 3, g.tile, g.tile), np.float32, mesh),
          "image_sizes": _spec((g.image_slots, 2), np.int32, mesh)}


@struct.dataclass
class TokenRows:
  """Token rows [B, T] int32 each: ids, loss mask (1 = trained), segment ids (0 = padding), positions."""

  input_ids: jax.Array
  loss_mask: jax.Array
  segment_ids: jax.Array
  positions: jax.Array

  @classmethod
  def abstract(cls, g: Geometry, mesh=None) -> TokenRows:
    return cls(*(_spec((g.rows, g.max_len), np.int32, mesh) for _ in range(4)))


@struct.dataclass
class SftBatch:
  """SFT rows (padded, or packed with segment ids) and their image slots; None images = text only (tests).

  tokens: TokenRows [B, T]; pixel_values [I, n, 3, tile, tile] float32; image_sizes [I, 2] int32 (H, W).
  """

  tokens: TokenRows
  pixel_values: jax.Array | None = None
  image_sizes: jax.Array | None = None

  @classmethod
  def abstract(cls, g: Geometry, mesh=None) -> SftBatch:
    """The batch as `jax.ShapeDtypeStruct`s (sharded over the batch mesh axes when a mesh is given)."""
    return cls(tokens=TokenRows.abstract(g, mesh), **_image_specs(g, mesh))


@struct.dataclass
class DpoBatch:
  """Preference pairs: row b of `chosen` and of `rejected` answer the same prompt with the same images.

  chosen, rejected: TokenRows [B, T] (padded, never packed); pixel_values [I, n, 3, tile, tile] float32 and
  image_sizes [I, 2] int32, encoded once for both sides; ref_logps [B, 2] float32: the reference model's
  (chosen, rejected) sequence log-probs when the records carry them, else None.
  """

  chosen: TokenRows
  rejected: TokenRows
  pixel_values: jax.Array | None = None
  image_sizes: jax.Array | None = None
  ref_logps: jax.Array | None = None

  @classmethod
  def abstract(cls, g: Geometry, mesh=None, *, ref_logps: bool = False) -> DpoBatch:
    """The batch as `jax.ShapeDtypeStruct`s; `ref_logps`: whether it carries precomputed reference log-probs."""
    return cls(chosen=TokenRows.abstract(g, mesh), rejected=TokenRows.abstract(g, mesh), **_image_specs(g, mesh),
               ref_logps=_spec((g.rows, 2), np.float32, mesh) if ref_logps else None)


@struct.dataclass
class SharedDpoBatch:
  """Preference pairs with each prompt once: up to K pairs per row, each `[prompt | chosen | rejected]` (see the
  module doc's worked row).

  tokens: TokenRows [B, T]: segment_ids = the pair's number in its row (1..K; 0 = padding), positions
  continuing from the prompt on both branches, loss_mask on both replies. branches [B, T] int32: 0 = shared
  prompt (and padding), 1 = chosen branch, 2 = rejected branch. pixel_values [I, n, 3, tile, tile] float32 and
  image_sizes [I, 2] int32: each pair's images once, in the row's pair order. ref_logps [B, K, 2] float32:
  precomputed (chosen, rejected) reference log-probs of pair k of row b (zeros for empty pair slots), or None.
  pairs_per_row: K (static).
  """

  tokens: TokenRows
  branches: jax.Array
  pixel_values: jax.Array | None = None
  image_sizes: jax.Array | None = None
  ref_logps: jax.Array | None = None
  pairs_per_row: int = struct.field(pytree_node=False, default=1)

  @classmethod
  def abstract(cls, g: Geometry, mesh=None, *, ref_logps: bool = False) -> SharedDpoBatch:
    """The batch as `jax.ShapeDtypeStruct`s; `ref_logps`: whether it carries precomputed reference log-probs."""
    k = g.pairs_per_row
    return cls(tokens=TokenRows.abstract(g, mesh), branches=_spec((g.rows, g.max_len), np.int32, mesh),
               **_image_specs(g, mesh), ref_logps=_spec((g.rows, k, 2), np.float32, mesh) if ref_logps else None,
               pairs_per_row=k)


PairBatch = Union[DpoBatch, SharedDpoBatch]
Batch = Union[SftBatch, DpoBatch, SharedDpoBatch]


@dataclasses.dataclass(frozen=True)
class BatchStats:
  """Host-side counters of one batch, kept out of the batch the step sees.

  skipped: records skipped (bad or over-long) while filling this batch. A finite pipeline's last batch may
  be all padding when it only reports records skipped at the very end.
  """

  skipped: int = 0


class Loaded(NamedTuple):
  """One loader element: `batch, stats = next(iterator)`."""

  batch: Batch
  stats: BatchStats
