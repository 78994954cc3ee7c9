"""Layout and packing: examples -> `Loaded(batch, stats)` of fixed shapes. The Batcher pads each example to its own
row, or packs several per row (first fit, segment ids; SFT and shared-prompt DPO), fills `images_per_row` image
slots per row, and counts the records skipped while filling a batch (`BatchStats`); it applies the bad-data policy
(`bad_data.Health`) to every record it reads. `layout` lays segments out in [B, T] rows.
"""

from __future__ import annotations

import grain
import numpy as np

from insightv_jax.data.bad_data import BadRecord, Health, Skipped, Stop
from insightv_jax.data.batches import BatchStats, DpoBatch, Geometry, Loaded, SftBatch, SharedDpoBatch, TokenRows
from insightv_jax.data.images import stack_batch
from insightv_jax.data.loader_config import LoaderConfig


class Batcher(grain.IterDataset):
  """Examples -> `Loaded(batch, stats)` of fixed shapes (padding, or first-fit packing for SFT and shared-prompt
  DPO)."""

  def __init__(self, parent: grain.IterDataset, cfg: LoaderConfig, *, geometry: Geometry, pad_id: int,
               batch_type: type[SftBatch] | type[DpoBatch] | type[SharedDpoBatch], stop: Stop | None = None):
    super().__init__(parent)
    self.cfg, self.geometry, self.pad_id, self.batch_type = cfg, geometry, pad_id, batch_type
    self.stop = stop or Stop()

  def __iter__(self):
    return _BatchIterator(self._parent.__iter__(), self)


class _BatchIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, ds: Batcher):
    super().__init__(parent)
    self.ds = ds
    self._held = None  # an example fetched but not yet placed (it opens the next batch)
    self._state_before_held = None
    self._health = Health(ds.cfg, ds.stop)  # records read and skipped by this iterator (not in its state: a
    # resumed run counts afresh; the end of a finite pipeline is not checked, since a resumed run may read
    # only its last few records)

  def _fetch(self):
    if self._held is not None:
      ex, self._held = self._held, None
      return ex
    return next(self._parent)

  def __next__(self) -> Loaded:
    ds, cfg, g = self.ds, self.ds.cfg, self.ds.geometry
    B, T = g.rows, g.max_len
    dpo = ds.batch_type in (DpoBatch, SharedDpoBatch)
    shared = ds.batch_type is SharedDpoBatch
    keys = ("shared",) if shared else ("chosen", "rejected") if dpo else ("sft",)
    rows: list[list[dict]] = [[] for _ in range(B)]  # the examples of each row, in reading order
    row_len, row_imgs = [0] * B, [0] * B
    skipped, filled = 0, 0
    while not (filled == B and not cfg.pack):
      state_before = self._parent.get_state() if self._held is None else self._state_before_held
      counted = self._held is not None  # a held example was counted when it was first fetched
      try:
        ex = self._fetch()
      except StopIteration:
        if filled == 0 and skipped == 0:
          raise
        break  # a last batch may hold only padding, to report the records skipped at the very end
      if not counted:
        self._health.count(ex)
      if isinstance(ex, Skipped):
        skipped += 1
        continue
      n_img, length = len(ex["tiles"]), max(len(ex[k][0]) for k in keys)
      candidates = range(min(filled + 1, B)) if cfg.pack else ([filled] if filled < B else [])
      slot = next((r for r in candidates
                   if row_len[r] + length <= T and row_imgs[r] + n_img <= g.images_per_row
                   and not (shared and len(rows[r]) >= g.pairs_per_row)), None)
      if slot is None:  # the batch is full: this example opens the next one
        self._held, self._state_before_held = ex, state_before
        break
      filled = max(filled, slot + 1)
      rows[slot].append(ex)
      row_len[slot] += length
      row_imgs[slot] += n_img
    tokens = {k: layout([[ex[k] for ex in row] for row in rows], T, ds.pad_id, branched=shared) for k in keys}
    examples = [ex for row in rows for ex in row]
    slots = []  # row r's images, then empty slots up to images_per_row
    for row in rows:
      images = [img for ex in row for img in zip(ex["tiles"], ex["sizes"])]
      slots += images + [None] * (g.images_per_row - len(images))
    pixel_values, image_sizes = stack_batch(slots, g.num_tiles, g.tile)
    stats = BatchStats(skipped=skipped)
    if not dpo:
      return Loaded(SftBatch(tokens=tokens["sft"][0], pixel_values=pixel_values, image_sizes=image_sizes), stats)
    ref_logps = None
    if any("ref_logps" in ex for ex in examples):
      if not all("ref_logps" in ex for ex in examples):
        raise BadRecord("a DPO batch mixes pairs with and without precomputed reference log-probs")
      ref_logps = np.zeros((B, g.pairs_per_row, 2), np.float32)  # [B, K, 2]; pair k of row r
      for r, row in enumerate(rows):
        for k, ex in enumerate(row):
          ref_logps[r, k] = ex["ref_logps"]
    if shared:
      shared_rows, branches = tokens["shared"]
      return Loaded(SharedDpoBatch(tokens=shared_rows, branches=branches, pixel_values=pixel_values,
                                   image_sizes=image_sizes, ref_logps=ref_logps, pairs_per_row=g.pairs_per_row),
                    stats)
    ref_logps = None if ref_logps is None else ref_logps[:, 0]  # one pair per row: [B, 2]
    return Loaded(DpoBatch(chosen=tokens["chosen"][0], rejected=tokens["rejected"][0], pixel_values=pixel_values,
                           image_sizes=image_sizes, ref_logps=ref_logps), stats)

  def get_state(self):
    parent = self._parent.get_state() if self._held is None else self._state_before_held
    return {"parent": parent}

  def set_state(self, state):
    self._parent.set_state(state["parent"])
    self._held = None
    self._state_before_held = None


def layout(rows: list[list[tuple[np.ndarray, ...]]], T: int, pad_id: int, *, branched: bool = False):
  """Each row's segments, in order, laid out left-aligned in [B, T] rows -> (TokenRows, branches [B, T] or None).

  A segment is (ids, mask) with positions 0..n-1 (see batches.TokenRows), or with branched=True a shared-prompt
  pair (ids, mask, positions, branches) from `shared_pairs.share_prompt` (see batches.SharedDpoBatch).
  """
  B = len(rows)
  ids = np.full((B, T), pad_id, np.int32)
  mask = np.zeros((B, T), np.int32)
  seg = np.zeros((B, T), np.int32)
  pos = np.zeros((B, T), np.int32)
  br = np.zeros((B, T), np.int32)
  for r, segments in enumerate(rows):
    at = 0
    for s, (x, m, *more) in enumerate(segments, 1):
      n = len(x)
      ids[r, at:at + n], mask[r, at:at + n], seg[r, at:at + n] = x, m, s
      pos[r, at:at + n] = more[0] if branched else np.arange(n)
      if branched:
        br[r, at:at + n] = more[1]
      at += n
  return TokenRows(input_ids=ids, loss_mask=mask, segment_ids=seg, positions=pos), (br if branched else None)
