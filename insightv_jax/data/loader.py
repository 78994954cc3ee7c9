"""Grain input pipelines for SFT and DPO.

    source (ArrayRecord | TFDS | JSONL in memory)
      -> this process's slice (index % process_count == process_index)   disjoint, complete coverage
      -> shuffle (seed, reshuffled every epoch) -> repeat(num_epochs)
      -> Encoder: parse + validate record, decode image, AnyRes tiles, chat template + tokenize, truncate
      -> Batcher: pad to max_len, or pack several examples per row with segment ids; fixed-size batches
      -> mp_prefetch over `worker_count` worker processes
Iterator state (`get_state` / `set_state`, or Orbax via `grain.checkpoint`) resumes exactly.

Bad records (unparseable, failed validation, missing or corrupt image, over-long) are skipped with a log
line naming the record (file[index] and id) and counted in the batch's `num_skipped`; with
`strict=True` the first one raises instead.

Truncation policy: an example longer than max_len keeps its whole prompt (image tokens are never cut) and
loses the end of its reply, provided at least `min_target_tokens` reply tokens remain; otherwise it is
skipped as over-long.

Batch (SFT), local to this process, B = batch_size // process_count, T = max_len, I = B * images_per_row:
  input_ids, loss_mask, segment_ids, positions   [B, T] int32   (segment 0 = padding)
  pixel_values [I, n, 3, tile, tile] float32, image_sizes [I, 2] int32; row r owns image slots
  [r * images_per_row, (r + 1) * images_per_row) in the order of its placeholders; unused slots are zeros
  with size (0, 0), which the model counts as zero image tokens (so rows can be split into micro-batches)
  num_skipped [] int32 (records skipped while filling this batch; a finite pipeline's last batch may be
  all padding when it only reports records skipped at the very end)
Batch (DPO): chosen_* and rejected_* versions of the [B, T] fields (no packing); images shared, once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Sequence

import grain
import numpy as np

from insightv_jax.data import prompts, records, templates
from insightv_jax.data.images import ImageDecodeError, ImageProcessorConfig, decode, preprocess
from insightv_jax.model import anyres
from insightv_jax.model.config import LlavaConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  """max_len: tokens per row (T). batch_size: global rows per step (divided across processes).
  pack: pack several examples per row (SFT only). images_per_row: image slots per row (1 without packing).
  template: chat template name (templates.TEMPLATES). seed / num_epochs (None = forever): shuffling.
  worker_count: Grain worker processes (0 = in-process). strict: raise on the first bad record.
  min_target_tokens: reply tokens that must survive truncation. image_root: root of relative image paths.
  format: "auto" (by record kind: reasoning_sft -> reasoning agent, summary_sft -> summary agent, question ->
  direct answer, dpo_pair -> reasoning agent pair) or "cot" (summary_sft records as ONE reply holding the
  chain and the answer: the single-model chain-of-thought baseline).
  """

  max_len: int = 2048
  batch_size: int = 8
  pack: bool = False
  images_per_row: int = 1
  template: str = "llama3"
  seed: int = 0
  num_epochs: int | None = None
  worker_count: int = 0
  strict: bool = False
  min_target_tokens: int = 4
  image_root: str | None = None
  prefetch_buffer_size: int = 4
  format: str = "auto"


class BadRecord(Exception):
  """A record the loader cannot use; str() names the record and the reason."""


@dataclasses.dataclass
class Skipped:
  where: str
  reason: str


# --------------------------------------------------------------------------------------------- sources

class JsonlSource:
  """In-memory random-access source over JSONL files; elements are (where, line bytes)."""

  def __init__(self, paths: str | Sequence[str]):
    paths = [paths] if isinstance(paths, str) else list(paths)
    self._items: list[tuple[str, bytes]] = []
    for p in paths:
      with open(p, "rb") as f:
        for lineno, line in enumerate(f, 1):
          if line.strip():
            self._items.append((f"{p}:{lineno}", line))

  def __len__(self):
    return len(self._items)

  def __getitem__(self, i):
    return self._items[i]


class InMemorySource:
  """Records held in memory (tests, small evals); elements are (where, JSON bytes)."""

  def __init__(self, recs: Sequence[records.Record], name: str = "memory"):
    self._items = [(f"{name}[{i}]", r.dumps().encode()) for i, r in enumerate(recs)]

  def __len__(self):
    return len(self._items)

  def __getitem__(self, i):
    return self._items[i]


# --------------------------------------------------------------------------------------------- encoder

class Encoder:
  """(where, record bytes) -> example dict of numpy arrays, or `Skipped` (raises `BadRecord` if strict)."""

  def __init__(self, cfg: LoaderConfig, model_cfg: LlavaConfig, tokenizer):
    self.cfg = cfg
    self.tokenizer = tokenizer
    self.template = templates.TEMPLATES[cfg.template]
    self.proc = ImageProcessorConfig.for_model(model_cfg)
    v = model_cfg.vision
    self.geometry = (model_cfg.image_grid_pinpoints, v.image_size, v.patches_per_side, model_cfg.tokens_per_tile)
    self.image_token_id = model_cfg.image_token_index
    self.num_tiles = anyres.max_patches(model_cfg.image_grid_pinpoints, v.image_size)

  def __call__(self, element: tuple[str, bytes]):
    where, raw = element
    try:
      return self.encode(where, raw)
    except (records.RecordError, ImageDecodeError, BadRecord, OSError, ValueError) as e:
      reason = str(e) if where in str(e) else f"{where}: {e}"
      if self.cfg.strict:
        raise BadRecord(reason) from e
      log.warning("skipping record %s", reason)
      return Skipped(where, reason)

  def encode(self, where: str, raw: bytes) -> dict[str, Any]:
    rec = records.loads(raw, where)
    images = getattr(rec, "images", ())
    if len(images) > self.cfg.images_per_row:
      raise BadRecord(f"{where} (id={rec.id!r}): {len(images)} images, more than images_per_row="
                      f"{self.cfg.images_per_row}")
    tiles, sizes, counts = [], [], []
    for ref in images:
      try:
        data = ref.read(self.cfg.image_root)
      except FileNotFoundError as e:
        raise BadRecord(f"{where} (id={rec.id!r}): image not found: {e.filename}") from e
      t, (h, w) = preprocess(decode(data, f"{where} (id={rec.id!r})"), self.proc)
      tiles.append(t)
      sizes.append((h, w))
      counts.append(int(anyres.num_image_tokens(h, w, *self.geometry)))
    out: dict[str, Any] = {"tiles": tiles, "sizes": sizes}
    if isinstance(rec, records.DPOPair):
      for side in ("chosen", "rejected"):
        msgs = prompts.reasoning_messages(rec.prompt, getattr(rec, side))
        out[side] = self._tokenize(msgs, counts, where, rec.id)
      if rec.ref_chosen_logp is not None:
        out["ref_logps"] = np.asarray([rec.ref_chosen_logp, rec.ref_rejected_logp], np.float32)
      return out
    out["sft"] = self._tokenize(self._messages(rec, where), counts, where, rec.id)
    return out

  def _messages(self, rec: records.Record, where: str) -> list[dict]:
    if self.cfg.format == "cot":
      if not isinstance(rec, records.SummarySFT) or not rec.reasoning:
        raise BadRecord(f"{where} (id={rec.id!r}): format='cot' needs summary_sft records with a chain")
      return prompts.cot_messages(rec.question, rec.reasoning, rec.answer)
    if isinstance(rec, records.ReasoningSFT):
      return prompts.reasoning_messages(rec.question, rec.reasoning)
    if isinstance(rec, records.SummarySFT):
      judgement = None if rec.chain_quality == "none" else ("flawed" if rec.chain_quality == "wrong" else "sound")
      return prompts.summary_messages(rec.question, rec.reasoning, rec.answer, judgement)
    if isinstance(rec, records.Question):
      return prompts.direct_messages(prompts.format_question(rec.question, rec.choices), rec.answer)
    raise BadRecord(f"{where} (id={rec.id!r}): a {rec.KIND!r} record is not a training example")

  def _tokenize(self, msgs, counts, where, rid) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = templates.encode_chat(self.tokenizer, self.template, msgs, image_token_id=self.image_token_id,
                                      image_token_counts=counts)
    limit = self.cfg.max_len
    if len(ids) > limit:
      first_target = int(np.argmax(mask)) if mask.any() else len(ids)
      if first_target + self.cfg.min_target_tokens > limit:
        raise BadRecord(f"{where} (id={rid!r}): over-long: {len(ids)} tokens, prompt alone {first_target}, "
                        f"max_len={limit}")
      ids, mask = ids[:limit], mask[:limit]
    if not mask.any():
      raise BadRecord(f"{where} (id={rid!r}): no trainable tokens")
    return ids, mask


# --------------------------------------------------------------------------------------------- batcher

class Batcher(grain.IterDataset):
  """Examples -> fixed-shape batches (padding, or first-fit packing for SFT), counting skipped records."""

  def __init__(self, parent: grain.IterDataset, cfg: LoaderConfig, *, batch_size: int, num_tiles: int, tile: int,
               pad_id: int, dpo: bool):
    super().__init__(parent)
    self.cfg, self.batch_size, self.num_tiles, self.tile = cfg, batch_size, num_tiles, tile
    self.pad_id, self.dpo = pad_id, dpo

  def __iter__(self):
    return _BatchIterator(self._parent.__iter__(), self)


class _BatchIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, ds: Batcher):
    super().__init__(parent)
    self.ds = ds
    self._held = None  # an example fetched but not yet placed (it opens the next batch)
    self._state_before_held = None

  def _fetch(self):
    if self._held is not None:
      ex, self._held = self._held, None
      return ex
    return next(self._parent)

  def __next__(self):
    ds, cfg = self.ds, self.ds.cfg
    B, T = ds.batch_size, cfg.max_len
    keys = ("chosen", "rejected") if ds.dpo else ("sft",)
    rows: list[list[dict]] = [[] for _ in range(B)]  # the examples of each row, in reading order
    row_len, row_imgs = [0] * B, [0] * B
    skipped, filled = 0, 0
    while not (filled == B and not cfg.pack):
      state_before = self._parent.get_state() if self._held is None else self._state_before_held
      try:
        ex = self._fetch()
      except StopIteration:
        if filled == 0 and skipped == 0:
          raise
        break  # a last batch may hold only padding, to report the records skipped at the very end
      if isinstance(ex, Skipped):
        skipped += 1
        continue
      n_img, length = len(ex["tiles"]), max(len(ex[k][0]) for k in keys)
      candidates = range(min(filled + 1, B)) if cfg.pack else ([filled] if filled < B else [])
      slot = next((r for r in candidates
                   if row_len[r] + length <= T and row_imgs[r] + n_img <= cfg.images_per_row), None)
      if slot is None:  # the batch is full: this example opens the next one
        self._held, self._state_before_held = ex, state_before
        break
      filled = max(filled, slot + 1)
      rows[slot].append(ex)
      row_len[slot] += length
      row_imgs[slot] += n_img
    batch: dict[str, np.ndarray] = {}
    for k in keys:
      prefix = "" if k == "sft" else f"{k}_"
      for name, arr in _layout([[ex[k] for ex in row] for row in rows], T, ds.pad_id).items():
        batch[prefix + name] = arr
    examples = [ex for row in rows for ex in row]
    row_images = [[img for ex in row for img in zip(ex["tiles"], ex["sizes"])] for row in rows]
    batch.update(_stack_images(row_images, cfg.images_per_row, ds.num_tiles, ds.tile))
    if ds.dpo and any("ref_logps" in ex for ex in examples):
      if not all("ref_logps" in ex for ex in examples):
        raise BadRecord("a DPO batch mixes pairs with and without precomputed reference log-probs")
      batch["ref_logps"] = np.zeros((B, 2), np.float32)
      batch["ref_logps"][:len(examples)] = np.stack([ex["ref_logps"] for ex in examples])
    batch["num_skipped"] = np.asarray(skipped, np.int32)
    return batch

  def get_state(self):
    parent = self._parent.get_state() if self._held is None else self._state_before_held
    return {"parent": parent}

  def set_state(self, state):
    self._parent.set_state(state["parent"])
    self._held = None
    self._state_before_held = None


def _layout(rows: list[list[tuple[np.ndarray, np.ndarray]]], T: int, pad_id: int) -> dict[str, np.ndarray]:
  B = len(rows)
  ids = np.full((B, T), pad_id, np.int32)
  mask = np.zeros((B, T), np.int32)
  seg = np.zeros((B, T), np.int32)
  pos = np.zeros((B, T), np.int32)
  for r, segments in enumerate(rows):
    at = 0
    for s, (x, m) in enumerate(segments, 1):
      n = len(x)
      ids[r, at:at + n], mask[r, at:at + n], seg[r, at:at + n] = x, m, s
      pos[r, at:at + n] = np.arange(n)
      at += n
  return {"input_ids": ids, "loss_mask": mask, "segment_ids": seg, "positions": pos}


def _stack_images(row_images, per_row: int, num_tiles: int, tile: int) -> dict[str, np.ndarray]:
  """Row r owns image slots [r * per_row, (r + 1) * per_row); empty slots have size (0, 0) = no tokens."""
  I = len(row_images) * per_row
  pv = np.zeros((I, num_tiles, 3, tile, tile), np.float32)
  sizes = np.zeros((I, 2), np.int32)
  for r, images in enumerate(row_images):
    for j, (tiles, size) in enumerate(images):
      pv[r * per_row + j, :len(tiles)] = tiles
      sizes[r * per_row + j] = size
  return {"pixel_values": pv, "image_sizes": sizes}


# --------------------------------------------------------------------------------------------- pipeline

def make_dataset(source, cfg: LoaderConfig, model_cfg: LlavaConfig, tokenizer, *, dpo: bool = False,
                 process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The full pipeline for this process; iterate it, or `iter(...)` for a checkpointable iterator."""
  if cfg.batch_size % process_count:
    raise ValueError(f"batch_size={cfg.batch_size} is not divisible by process_count={process_count}")
  if dpo and cfg.pack:
    raise ValueError("packing is for SFT; DPO pairs are padded (set pack=False)")
  if not cfg.pack and cfg.images_per_row != 1:
    raise ValueError("images_per_row > 1 needs pack=True")
  if cfg.format not in ("auto", "cot"):
    raise ValueError(f"format={cfg.format!r}; expected 'auto' or 'cot'")
  ds = grain.MapDataset.source(source)
  if len(ds) < process_count:
    raise ValueError(f"source has {len(ds)} records for {process_count} processes")
  ds = ds[process_index::process_count]
  ds = ds.shuffle(seed=cfg.seed).repeat(cfg.num_epochs)
  ds = ds.map(Encoder(cfg, model_cfg, tokenizer))
  it = ds.to_iter_dataset()
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  it = Batcher(it, cfg, batch_size=cfg.batch_size // process_count,
               num_tiles=anyres.max_patches(model_cfg.image_grid_pinpoints, model_cfg.vision.image_size),
               tile=model_cfg.vision.image_size, pad_id=pad_id, dpo=dpo)
  if cfg.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                     per_worker_buffer_size=cfg.prefetch_buffer_size))
  return it


def open_source(kind: str, paths: str | Sequence[str], split: str = "train"):
  """kind: 'array_record' (paths: files), 'jsonl' (paths: files), 'tfds' (paths: a prepared builder dir)."""
  listed = [paths] if isinstance(paths, str) else list(paths)
  missing = [p for p in listed if not os.path.exists(p)]
  if missing or not listed:
    raise FileNotFoundError(f"{kind} data source: {'no paths given' if not listed else 'no such file or folder'}"
                            f"{': ' + ', '.join(map(repr, missing)) if missing else ''} (data paths: {listed})")
  if kind == "array_record":
    return records.ArrayRecordSource(paths)
  if kind == "jsonl":
    return JsonlSource(paths)
  if kind == "tfds":
    from insightv_jax.data.tfds_source import TfdsRecordSource
    return TfdsRecordSource(paths if isinstance(paths, str) else paths[0], split)
  raise ValueError(f"unknown source kind {kind!r}; expected array_record, jsonl or tfds")


def describe(batch: dict[str, np.ndarray]) -> str:
  return json.dumps({k: list(v.shape) for k, v in batch.items()})
