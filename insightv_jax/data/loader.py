"""Grain input pipelines for SFT and DPO.

    source (ArrayRecord | TFDS | JSON / JSONL / YAML mixture in memory: `sources.open_source`)
      -> this process's slice (index % process_count == process_index)   disjoint, complete coverage
      -> shuffle (seed, reshuffled every epoch) -> repeat(num_epochs)
      -> Encoder: parse + validate record, decode image, AnyRes tiles, chat template + tokenize, truncate
      -> Batcher: pad to max_len, or pack several examples per row with segment ids; fixed-size batches
      -> mp_prefetch over `worker_count` worker processes
Iterator state (`get_state` / `set_state`, or Orbax via `grain.checkpoint`) resumes exactly.

Record formats (`format`): our records (`records.py`; "auto"), or LLaVA-NeXT / Insight-V JSON ("llava":
conversations for SFT, prompt/chosen/rejected pairs for DPO; `llava_format.py`). Our records are trained as their
agent's conversation (`target`: "auto" by record kind, or "cot": the one-model chain-of-thought baseline), written
by the preset `prompts` names and tokenized by `prompts.encode`, as `infer.Agent` prompts that agent.

Bad records (unparseable, failed validation, missing or corrupt image, over-long) are skipped with a log
line naming the record (file[index] and id) and counted in the element's `BatchStats.skipped`; with
`strict=True` the first one raises instead. Data that is mostly bad stops the run (`BadData`, raised by the
Batcher, which sees every skip, in whichever process runs it): no usable record among the first
`max_bad_prefix` records read, or more than `max_skip_fraction` of the records read skipped once at least
`max_bad_prefix` were read. The error names the file, the first bad record and its reason, and what to change
when that record looks like another known format. `make_dataset` applies the same rule (`_Health`) to this
process's first records, read until one is usable (one read on good data; the whole data when it is shorter
than max_bad_prefix): data with none fails at once, not after the train step has compiled.

Truncation policy: an example longer than max_len keeps its whole prompt (image tokens are never cut) and
loses the end of its reply, provided at least `min_target_tokens` reply tokens remain; otherwise it is
skipped as over-long.

Elements: `batches.Loaded(batch, stats)`, local to this process (B = batch_size // process_count rows,
T = max_len, I = B * images_per_row image slots; shapes and dtypes in insightv_jax/data/batches.py):
  SFT  `SftBatch`: tokens [B, T] (padded, or packed with segment ids), pixel_values [I, n, 3, tile, tile],
       image_sizes [I, 2]
  DPO  `DpoBatch`: chosen and rejected tokens [B, T] (no packing), images shared, once; ref_logps [B, 2] when
       the records carry reference log-probs
       `SharedDpoBatch`: each pair as one `[prompt | chosen | rejected]` example (`shared_pairs.share_prompt`:
       both sides tokenized and truncated as for `DpoBatch`, then cut further when the row cannot hold them),
       up to pairs_per_row pairs per row with pack=True; ref_logps [B, K, 2]
  stats `BatchStats`: records skipped while filling this batch (outside the batch: the step never sees it)
`abstract_batch` gives the global batch the train step takes, as `jax.ShapeDtypeStruct`s with shardings.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from typing import Any

import grain
import numpy as np

from insightv_jax.data import llava_format, prompts, records, shared_pairs, templates
from insightv_jax.data.batches import BatchStats, DpoBatch, Geometry, Loaded, SftBatch, SharedDpoBatch, TokenRows
from insightv_jax.data.images import (
  ImageDecodeError,
  ImageProcessorConfig,
  check_image_tokens,
  decode,
  preprocess,
  stack_batch,
)
from insightv_jax.model.config import LlavaConfig
from insightv_jax.utils.inputs import InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  """max_len: tokens per row (T). batch_size: global rows per step (divided across processes).
  pack: pack several examples per row (SFT only). images_per_row: image slots per row (1 without packing).
  template: chat template name (templates.TEMPLATES). seed / num_epochs (None = forever): shuffling.
  worker_count: Grain worker processes (0 = in-process). strict: raise on the first bad record.
  min_target_tokens: reply tokens that must survive truncation. image_root: root of relative image paths.
  format: the record format: "auto" (our records, `records.py`) or "llava" (LLaVA-NeXT JSON records:
  conversations trained as given, or DPO pairs; `llava_format`). "cot" is the deprecated spelling of
  format="auto", target="cot" (accepted, with a warning, for one release).
  target: what our records train: "auto" (by record kind: reasoning_sft -> reasoning agent, summary_sft ->
  summary agent, question -> direct answer, dpo_pair -> reasoning agent pair) or "cot" (summary_sft records as
  ONE reply holding the chain and the answer: the single-model chain-of-thought baseline).
  prompts: the prompt preset ("ours" | "insightv", `prompts.PROMPT_PRESETS`) our records are written with; the
  agents must be prompted with the same one at inference.
  max_bad_prefix: stop when none of the first N records read is usable; also the records read before
  max_skip_fraction applies (0 = neither check). max_skip_fraction: stop when more than this fraction of
  the records read were skipped (1.0 = never). pairs_per_row: shared-prompt DPO pairs a row may hold (K;
  > 1 needs pack=True).
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
  max_bad_prefix: int = 100
  max_skip_fraction: float = 0.5
  pairs_per_row: int = 1
  target: str = "auto"
  prompts: str = "ours"

  def __post_init__(self):
    if self.format == "cot":  # the old spelling: "cot" is a training target, not a record format
      msg = ("data.format='cot' is deprecated and will be removed in the next release: use data.target='cot' "
             "(data.format names the record format: auto | llava)")
      warnings.warn(msg, DeprecationWarning, stacklevel=3)
      log.warning(msg)
      object.__setattr__(self, "format", "auto")
      object.__setattr__(self, "target", "cot")

  @classmethod
  def from_config(cls, data_cfg) -> LoaderConfig:
    """From a job config's `data` section (configs/train_base.py); `source` and `paths` pick the source."""
    return cls(**{k: v for k, v in data_cfg.items() if k not in ("source", "paths")})


FORMATS = ("auto", "llava")
TARGETS = ("auto", "cot")


class BadRecord(Exception):
  """A record the loader cannot use; str() names the record and the reason."""


class BadData(BadRecord, InputError):
  """The data as a whole is unusable (too many bad records); str() is one line naming the file, the first bad
  record and its reason, and a format hint when there is one."""

  def add_note(self, note):
    """Dropped: Grain notes that it hid its frames from the traceback, which would print after the message; the
    message must stay the last line a user sees."""


@dataclasses.dataclass
class Skipped:
  """A record the Encoder could not use. hint: what to change when it looks like another known format."""

  where: str
  reason: str
  hint: str | None = None


@dataclasses.dataclass
class _Stop:
  """Shared by one pipeline's Encoder and Batcher (in each process that runs them): set when the Batcher raises
  `BadData`, so that encoder threads still prefetching stop working and logging after the error."""

  stopped: bool = False


_RECORD_ERRORS = (records.RecordError, ImageDecodeError, BadRecord, OSError, ValueError)


# --------------------------------------------------------------------------------------------- encoder

class Encoder:
  """(where, record bytes) -> example dict of numpy arrays, or `Skipped` (raises `BadRecord` if strict).

  dpo: whether examples are preference pairs ("chosen" / "rejected") rather than SFT examples ("sft").
  shared: pairs also as one shared-prompt example ("shared": ids, mask, positions, branches).
  """

  def __init__(self, cfg: LoaderConfig, model_cfg: LlavaConfig, tokenizer, *, dpo: bool = False,
               shared: bool = False, stop: _Stop | None = None):
    self.cfg = cfg
    self.dpo = dpo
    self.shared = shared
    self.stop = stop or _Stop()
    self.tokenizer = tokenizer
    self.template = templates.TEMPLATES[cfg.template]
    self.prompts = prompts.get_preset(cfg.prompts)
    self.proc = ImageProcessorConfig.for_model(model_cfg)
    self.image_token_id = model_cfg.image_token_index

  def __call__(self, element: tuple[str, bytes]):
    where, raw = element
    if self.stop.stopped:
      return Skipped(where, "not read: the data was stopped")
    try:
      return self.encode(where, raw)
    except _RECORD_ERRORS as e:
      skipped = self._skipped(element, e)
      if self.cfg.strict:
        raise BadRecord(skipped.reason) from e
      if not self.stop.stopped:
        log.warning("skipping record %s", skipped.reason)
      return skipped

  def try_encode(self, element: tuple[str, bytes]):
    """The example or `Skipped`, without logging or raising (the start-up probe in `make_dataset`)."""
    try:
      return self.encode(*element)
    except _RECORD_ERRORS as e:
      return self._skipped(element, e)

  def _skipped(self, element: tuple[str, bytes], e: Exception) -> Skipped:
    where, raw = element
    reason = str(e) if where in str(e) else f"{where}: {e}"
    return Skipped(where, reason, llava_format.format_hint(raw, self.cfg.format))

  def encode(self, where: str, raw: bytes) -> dict[str, Any]:
    llava = self.cfg.format == "llava"
    rec = llava_format.loads(raw, where) if llava else records.loads(raw, where)
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
      counts.append(self.proc.num_image_tokens(h, w))
    out: dict[str, Any] = {"tiles": tiles, "sizes": sizes}
    pair = isinstance(rec, (records.DPOPair, llava_format.Preference))
    if pair != self.dpo:
      raise BadRecord(f"{where} (id={rec.id!r}): " + (
          "a preference pair is not an SFT example (train pairs with configs/dpo.py)" if pair else
          "not a preference pair: DPO trains on dpo_pair records, or LLaVA DPO JSON (prompt, chosen, rejected)"))
    if pair:
      for side in ("chosen", "rejected"):
        msgs = rec.messages_for(side) if llava else self.prompts.messages("reasoning", rec.prompt, getattr(rec, side))
        out[side] = self._tokenize(msgs, counts, where, rec.id)
      if self.shared:
        try:
          out["shared"] = shared_pairs.share_prompt(out["chosen"], out["rejected"], max_len=self.cfg.max_len,
                                                    min_target_tokens=self.cfg.min_target_tokens,
                                                    image_token_id=self.image_token_id)
        except ValueError as e:
          raise BadRecord(f"{where} (id={rec.id!r}): {e}") from e
      if getattr(rec, "ref_chosen_logp", None) is not None:
        out["ref_logps"] = np.asarray([rec.ref_chosen_logp, rec.ref_rejected_logp], np.float32)
      return out
    msgs = list(rec.messages) if llava else self._messages(rec, where)
    out["sft"] = self._tokenize(msgs, counts, where, rec.id)
    return out

  def _messages(self, rec: records.Record, where: str) -> list[dict]:
    p = self.prompts
    if self.cfg.target == "cot":
      if not isinstance(rec, records.SummarySFT) or not rec.reasoning:
        raise BadRecord(f"{where} (id={rec.id!r}): target='cot' needs summary_sft records with a chain")
      return p.messages("cot", rec.question, rec.reasoning, answer=rec.answer)
    if isinstance(rec, records.ReasoningSFT):
      return p.messages("reasoning", rec.question, rec.reasoning)
    if isinstance(rec, records.SummarySFT):
      judgement = None if rec.chain_quality == "none" else ("flawed" if rec.chain_quality == "wrong" else "sound")
      return p.messages("summary", rec.question, rec.reasoning, answer=rec.answer, judgement=judgement)
    if isinstance(rec, records.Question):
      return p.messages("direct", prompts.format_question(rec.question, rec.choices), answer=rec.answer)
    raise BadRecord(f"{where} (id={rec.id!r}): a {rec.KIND!r} record is not a training example")

  def _tokenize(self, msgs, counts, where, rid) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = prompts.encode(self.tokenizer, self.template, msgs, image_token_id=self.image_token_id,
                               image_token_counts=counts)
    limit = self.cfg.max_len
    if len(ids) > limit:
      first_target = int(np.argmax(mask)) if mask.any() else len(ids)
      if first_target + self.cfg.min_target_tokens > limit:
        raise BadRecord(f"{where} (id={rid!r}): over-long: {len(ids)} tokens, prompt alone {first_target}, "
                        f"max_len={limit}")
      ids, mask = ids[:limit], mask[:limit]
    check_image_tokens(ids, counts, self.image_token_id, f"{where} (id={rid!r})")
    if not mask.any():
      raise BadRecord(f"{where} (id={rid!r}): no trainable tokens")
    return ids, mask


# --------------------------------------------------------------------------------------------- batcher

class Batcher(grain.IterDataset):
  """Examples -> `Loaded(batch, stats)` of fixed shapes (padding, or first-fit packing for SFT and shared-prompt
  DPO)."""

  def __init__(self, parent: grain.IterDataset, cfg: LoaderConfig, *, geometry: Geometry, pad_id: int,
               batch_type: type[SftBatch] | type[DpoBatch] | type[SharedDpoBatch], stop: _Stop | None = None):
    super().__init__(parent)
    self.cfg, self.geometry, self.pad_id, self.batch_type = cfg, geometry, pad_id, batch_type
    self.stop = stop or _Stop()

  def __iter__(self):
    return _BatchIterator(self._parent.__iter__(), self)


class _BatchIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, ds: Batcher):
    super().__init__(parent)
    self.ds = ds
    self._held = None  # an example fetched but not yet placed (it opens the next batch)
    self._state_before_held = None
    self._health = _Health(ds.cfg, ds.stop)  # records read and skipped by this iterator (not in its state: a
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


class _Health:
  """Counts the records a Batcher reads; raises `BadData` when the data is mostly bad (see the module doc)."""

  def __init__(self, cfg: LoaderConfig, stop: _Stop | None = None):
    self.cfg, self.stop = cfg, stop or _Stop()
    self.read, self.skipped = 0, 0
    self.first_bad: Skipped | None = None

  def count(self, ex):
    self.read += 1
    if not isinstance(ex, Skipped):
      return
    self.skipped += 1
    self.first_bad = self.first_bad or ex
    n = self.cfg.max_bad_prefix
    if n and self.skipped == self.read >= n:
      self._fail(f"none of the first {self.read} records read is usable (data.max_bad_prefix={n})")
    if n and self.read >= n and self.skipped > self.cfg.max_skip_fraction * self.read:
      self._fail(f"{self.skipped} of the first {self.read} records read were skipped, more than "
                 f"data.max_skip_fraction={self.cfg.max_skip_fraction}")

  def at_end(self):
    """The data ended (the probe read all of a finite pipeline's records): none usable is an error."""
    if self.read and self.skipped == self.read and self.cfg.max_bad_prefix:
      self._fail(f"none of the {self.read} records read is usable")

  def _fail(self, what: str):
    bad = self.first_bad
    file = re.sub(r"(\[\d+\]|:\d+)$", "", bad.where)
    msg = f"{file}: {what}. First bad record: {bad.reason}" + (f". Hint: {bad.hint}" if bad.hint else "")
    self.stop.stopped = True
    raise BadData(" ".join(msg.split()))


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


# --------------------------------------------------------------------------------------------- pipeline

def geometry(cfg: LoaderConfig, model_cfg: LlavaConfig, process_count: int = 1) -> Geometry:
  """The shapes of this process's batches (rows = batch_size // process_count); process_count=1: global."""
  proc = ImageProcessorConfig.for_model(model_cfg)
  return Geometry(rows=cfg.batch_size // process_count, max_len=cfg.max_len, images_per_row=cfg.images_per_row,
                  num_tiles=proc.num_tiles, tile=proc.tile, pairs_per_row=cfg.pairs_per_row)


def abstract_batch(cfg: LoaderConfig, model_cfg: LlavaConfig, mesh=None, *,
                   batch_type: type[SftBatch] | type[DpoBatch] | type[SharedDpoBatch] = SftBatch,
                   ref_logps: bool = False):
  """The GLOBAL batch the train step takes, as `jax.ShapeDtypeStruct`s sharded over the mesh's batch axes.

  E.g. the tiny SFT config (batch_size 4, max_len 384, one 56-px image on a 2x2 grid of 28-px tiles):
  tokens.input_ids (4, 384) int32, pixel_values (4, 5, 3, 28, 28) float32, image_sizes (4, 2) int32.
  ref_logps (DPO only): whether the pairs carry precomputed reference log-probs.
  """
  g = geometry(cfg, model_cfg)
  if batch_type in (DpoBatch, SharedDpoBatch):
    return batch_type.abstract(g, mesh, ref_logps=ref_logps)
  return SftBatch.abstract(g, mesh)


def _probe(ds: grain.MapDataset, encoder: Encoder, cfg: LoaderConfig):
  """Reads this process's first records, in the pipeline's order, until one is usable: `BadData` now (before a
  long compile) rather than at the first batch when none of the first max_bad_prefix is. Reads one record when
  the data is good; records are read by index, so the pipeline is unchanged."""
  if not cfg.max_bad_prefix:
    return
  health = _Health(cfg)
  for i in range(min(len(ds), cfg.max_bad_prefix)):  # len(ds) is huge when repeating forever
    ex = encoder.try_encode(ds[i])
    health.count(ex)
    if not isinstance(ex, Skipped):
      return
  health.at_end()


def make_dataset(source, cfg: LoaderConfig, model_cfg: LlavaConfig, tokenizer, *,
                 batch_type: type[SftBatch] | type[DpoBatch] | type[SharedDpoBatch] = SftBatch,
                 process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The full pipeline for this process: elements are `Loaded(batch, stats)` with `batch_type` batches.

  Iterate it, or `iter(...)` for a checkpointable iterator (`get_state` / `set_state`).
  """
  dpo, shared = batch_type in (DpoBatch, SharedDpoBatch), batch_type is SharedDpoBatch
  if cfg.batch_size % process_count:
    raise ValueError(f"batch_size={cfg.batch_size} is not divisible by process_count={process_count}")
  if batch_type is DpoBatch and cfg.pack:
    raise ValueError("unshared DPO pairs are padded, one per row (set pack=False, or dpo.shared_prompt=True to "
                     "pack several [prompt | chosen | rejected] pairs per row)")
  if cfg.pairs_per_row != 1 and not (shared and cfg.pack):
    raise ValueError(f"pairs_per_row={cfg.pairs_per_row} needs shared-prompt DPO with pack=True")
  if not cfg.pack and cfg.images_per_row != 1:
    raise ValueError("images_per_row > 1 needs pack=True")
  if cfg.format not in FORMATS:
    raise ValueError(f"data.format={cfg.format!r}; expected one of {FORMATS}")
  if cfg.target not in TARGETS:
    raise ValueError(f"data.target={cfg.target!r}; expected one of {TARGETS}")
  if cfg.prompts not in prompts.PROMPT_PRESETS:
    raise ValueError(f"data.prompts={cfg.prompts!r}; expected one of {sorted(prompts.PROMPT_PRESETS)}")
  ds = grain.MapDataset.source(source)
  if len(ds) < process_count:
    raise ValueError(f"source has {len(ds)} records for {process_count} processes")
  ds = ds[process_index::process_count]
  ds = ds.shuffle(seed=cfg.seed).repeat(cfg.num_epochs)
  stop = _Stop()
  encoder = Encoder(cfg, model_cfg, tokenizer, dpo=dpo, shared=shared, stop=stop)
  _probe(ds, encoder, cfg)
  ds = ds.map(encoder)
  it = ds.to_iter_dataset()
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  it = Batcher(it, cfg, geometry=geometry(cfg, model_cfg, process_count), pad_id=pad_id, batch_type=batch_type,
               stop=stop)
  if cfg.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                     per_worker_buffer_size=cfg.prefetch_buffer_size))
  return it
