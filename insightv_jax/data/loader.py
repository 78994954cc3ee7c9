"""Grain input pipelines for SFT and DPO.

    source (ArrayRecord | TFDS | JSON / JSONL / YAML mixture in memory: `sources.open_source`)
      -> this process's slice (index % process_count == process_index)   disjoint, complete coverage
      -> shuffle (seed, reshuffled every epoch) -> repeat(num_epochs)
      -> Encoder: parse + validate record, decode image, AnyRes tiles, the agent's prompt + tokenize, truncate
      -> Batcher: pad to max_len, or pack several examples per row with segment ids; fixed-size batches
      -> mp_prefetch over `worker_count` worker processes
Iterator state (`get_state` / `set_state`, or Orbax via `grain.checkpoint`) resumes exactly.

The stages live in modules of their own, one job each; this module assembles them and re-exports their names:
  loader_config.py  `LoaderConfig` (the job config's `data` section), `FORMATS`, `TARGETS`
  encoding.py       `Encoder`: record -> example (the agent's conversation from the preset `prompts` names, or
                    LLaVA JSON as given; tokenized by `prompts.encode`, as `infer.Agent` prompts that agent), and
                    the truncation policy
  packing.py        `Batcher` (padding, or first-fit packing with segment ids) and `layout`
  bad_data.py       the bad-data policy: `BadRecord`, `BadData`, `Skipped`, `Health`
`make_dataset` applies the bad-data rule (`Health`) to this process's first records, read until one is usable
(one read on good data; the whole data when it is shorter than max_bad_prefix): data with none fails at once, not
after the train step has compiled.

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

import grain

from insightv_jax.data import prompts
from insightv_jax.data.bad_data import BadData, BadRecord, Health, Skipped, Stop
from insightv_jax.data.batches import DpoBatch, Geometry, SftBatch, SharedDpoBatch
from insightv_jax.data.encoding import Encoder
from insightv_jax.data.images import ImageProcessorConfig
from insightv_jax.data.loader_config import FORMATS, TARGETS, LoaderConfig
from insightv_jax.data.packing import Batcher, layout
from insightv_jax.model.config import LlavaConfig
from insightv_jax.utils.inputs import InputError

__all__ = ["FORMATS", "TARGETS", "BadData", "BadRecord", "Batcher", "Encoder", "LoaderConfig", "Skipped",
           "abstract_batch", "geometry", "layout", "make_dataset"]


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
  health = Health(cfg)
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
    raise InputError(f"--config.data.format={cfg.format!r}; expected one of {FORMATS}")
  if cfg.target not in TARGETS:
    raise InputError(f"--config.data.target={cfg.target!r}; expected one of {TARGETS}")
  if cfg.read_threads < 0:
    raise InputError(f"--config.data.read_threads={cfg.read_threads}; expected 0 (read in the iterating thread) or "
                     "a positive number of reader threads")
  if cfg.prompts not in prompts.PROMPT_PRESETS:
    raise InputError(f"--config.data.prompts={cfg.prompts!r}; expected one of {sorted(prompts.PROMPT_PRESETS)}")
  ds = grain.MapDataset.source(source)
  if len(ds) < process_count:
    raise ValueError(f"source has {len(ds)} records for {process_count} processes")
  ds = ds[process_index::process_count]
  ds = ds.shuffle(seed=cfg.seed).repeat(cfg.num_epochs)
  stop = Stop()
  encoder = Encoder(cfg, model_cfg, tokenizer, dpo=dpo, shared=shared, stop=stop)
  _probe(ds, encoder, cfg)
  ds = ds.map(encoder)
  g = geometry(cfg, model_cfg, process_count)
  # the reader threads keep prefetch_buffer_size batches' worth of examples ahead (at least one per thread), not
  # Grain's default 500: its iterator walks the whole buffer at every element (configs/train_base.py)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                            prefetch_buffer_size=max(cfg.prefetch_buffer_size * g.rows,
                                                                     cfg.read_threads)))
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  it = Batcher(it, cfg, geometry=g, pad_id=pad_id, batch_type=batch_type, stop=stop)
  if cfg.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                     per_worker_buffer_size=cfg.prefetch_buffer_size))
  return it
