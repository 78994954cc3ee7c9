"""The loader's settings: `LoaderConfig`, read from a job config's `data` section (configs/train_base.py, where
each field is documented), and the values its choice fields take (`FORMATS`, `TARGETS`)."""

from __future__ import annotations

import dataclasses
import logging
import warnings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  """max_len: tokens per row (T). batch_size: global rows per step (divided across processes).
  pack: pack several examples per row (SFT only). images_per_row: image slots per row (1 without packing).
  template: chat template name (templates.TEMPLATES). seed / num_epochs (None = forever): shuffling.
  worker_count: Grain worker processes (0 = in-process). read_threads: threads that read and encode records in
  each process (Grain's ReadOptions.num_threads; 0 = in the thread that iterates). prefetch_buffer_size: batches
  buffered per worker process, and the reader threads' buffer (that many batches' worth of examples). strict:
  raise on the first bad record.
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

  No defaults here: the values live in configs/train_base.py (`data_section()`, each documented there):
  `LoaderConfig.from_config(config.data)`.
  """

  max_len: int
  batch_size: int
  pack: bool
  images_per_row: int
  template: str
  seed: int
  num_epochs: int | None
  worker_count: int
  read_threads: int
  strict: bool
  min_target_tokens: int
  image_root: str | None
  prefetch_buffer_size: int
  format: str
  max_bad_prefix: int
  max_skip_fraction: float
  pairs_per_row: int
  target: str
  prompts: str

  def __post_init__(self):
    if self.format == "cot":  # the old spelling: "cot" is a training target, not a record format
      msg = ("data.format='cot' is deprecated and will be removed in the next release: use data.target='cot' "
             "(data.format names the record format: auto | llava)")
      warnings.warn(msg, DeprecationWarning, stacklevel=3)
      log.warning(msg)
      object.__setattr__(self, "format", "auto")
      object.__setattr__(self, "target", "cot")

  @classmethod
  def from_config(cls, data_cfg, **overrides) -> LoaderConfig:
    """From a job config's `data` section (configs/train_base.py), with `overrides` (field=value); `source` and
    `paths` pick the source, not the loader."""
    fields = {k: v for k, v in data_cfg.items() if k not in ("source", "paths")}
    return cls(**{**fields, **overrides})


FORMATS = ("auto", "llava")
TARGETS = ("auto", "cot")
