"""The training tasks in one table: what the train loop and the dry run need to know about SFT and DPO.

    task = tasks.get(config.task)                     # TASKS["sft"] or TASKS["dpo"]; ValueError otherwise
    task.batch_type(config)                           # SftBatch | DpoBatch | SharedDpoBatch: what the loader yields
    loss_fn = task.loss(config)                       # (graphdef, params, batch, ref_params) -> (sum, aux)
    task.reference_model(config)                      # does the state carry a frozen "ref_params" copy?
    task.abstract_batch(config, model_cfg, mesh)      # the global batch, ShapeDtypeStructs with shardings
    task.fit_batch(batch, config)                     # a loader batch as the compiled step takes it
    task.trained_tokens(batch)                        # what tokens/s counts (SFT: targets; DPO: chosen targets)
    task.step_flops(config, model_cfg)                # analytic FLOPs of one step, for MFU
    task.check_data(config, source, tokenizer, params)  # before training: DPO precomputed refs match the run

Adding a task is one `Task(...)` row in TASKS; nothing in loop.py or dry_run.py branches on the task name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from insightv_jax.data import loader, shared_pairs
from insightv_jax.data.batches import Batch, DpoBatch, SftBatch, SharedDpoBatch
from insightv_jax.train import flops, steps

# loss_fn(graphdef, params, batch, ref_params) -> (summed loss, aux with aux["count"]); see steps.make_train_step
LossFn = Callable[..., tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Task:
  """One training objective.

  batch_type: config -> the loader's batch type for it. loss: config -> loss_fn. reference: config -> "none" (no
  reference), "model" (a frozen copy of the starting params in the train state) or "precomputed" (the
  batches carry ref_logps). trained_tokens: batch -> trained tokens in it (host-side, for tokens/s).
  flops_rows: sequences of max_len the model runs per batch row (unshared DPO: chosen and rejected).
  check_data: (config, source, tokenizer, params) -> None, run before the first step on the starting params: raises
  an InputError naming the record when the data cannot be trained on (DPO with precomputed references: every
  record's ref_hash must be this run's, train/reference.py).
  """

  name: str
  batch_type: Callable[[object], type[Batch]]
  loss: Callable[[object], LossFn]
  reference: Callable[[object], str]
  trained_tokens: Callable[[Batch], int]
  flops_rows: Callable[[object], int]
  check_data: Callable[..., None] = lambda config, source, tokenizer, params: None

  def reference_model(self, config) -> bool:
    return self.reference(config) == "model"

  def abstract_batch(self, config, model_cfg, mesh):
    """The global batch the compiled step takes (from config.data and the model's image geometry)."""
    batch_type = self.batch_type(config)
    extra = {"ref_logps": self.reference(config) == "precomputed"} if batch_type is not SftBatch else {}
    return loader.abstract_batch(loader.LoaderConfig.from_config(config.data), model_cfg, mesh,
                                 batch_type=batch_type, **extra)

  def fit_batch(self, batch: Batch, config) -> Batch:
    """The loader's batch with exactly the fields `abstract_batch` has: DPO pairs keep ref_logps only when
    config.dpo.reference is "precomputed" (and must have them then)."""
    if isinstance(batch, SftBatch):
      return batch
    if self.reference(config) != "precomputed":
      return batch.replace(ref_logps=None) if batch.ref_logps is not None else batch
    if batch.ref_logps is None:
      raise ValueError("config.dpo.reference='precomputed' but the DPO records carry no ref_chosen_logp / "
                       "ref_rejected_logp (check_data checks every record before the first step)")
    return batch

  def step_flops(self, config, model_cfg) -> float:
    """Forward + backward model FLOPs of one optimizer step over the global batch (vision tower included)."""
    loader_cfg = loader.LoaderConfig.from_config(config.data)
    tiles = loader.geometry(loader_cfg, model_cfg).num_tiles * loader_cfg.images_per_row
    return flops.train_flops(model_cfg, config.data.max_len, config.data.batch_size * self.flops_rows(config),
                             tiles)


def _sft_loss(config) -> LossFn:
  def loss_fn(graphdef, params, batch, ref_params):
    del ref_params
    return steps.sft_loss(graphdef, params, batch, chunk=config.loss_chunk)
  return loss_fn


def _dpo_loss(config) -> LossFn:
  d = config.dpo

  def loss_fn(graphdef, params, batch, ref_params):
    return steps.dpo_loss(graphdef, params, batch, beta=d.beta, loss_type=d.loss_type,
                          label_smoothing=d.label_smoothing, sft_weight=d.sft_weight, chunk=config.loss_chunk,
                          ref_params=ref_params)
  return loss_fn


def _dpo_batches(config) -> type[DpoBatch] | type[SharedDpoBatch]:
  return SharedDpoBatch if config.dpo.shared_prompt else DpoBatch


def _chosen_targets(batch: DpoBatch | SharedDpoBatch) -> int:
  if isinstance(batch, SharedDpoBatch):
    return int((batch.tokens.loss_mask * (batch.branches == shared_pairs.CHOSEN)).sum())
  return int(batch.chosen.loss_mask.sum())


def _dpo_reference(config) -> str:
  if config.dpo.reference not in ("model", "precomputed"):
    raise ValueError(f"config.dpo.reference={config.dpo.reference!r}; expected 'model' or 'precomputed'")
  return config.dpo.reference


def _dpo_check_data(config, source, tokenizer, params) -> None:
  """dpo.reference="precomputed": every record's ref_hash is the one this run's reference (its starting params),
  tokenizer and encoding give (`reference.RefLogpsError` otherwise)."""
  if _dpo_reference(config) != "precomputed":
    return
  from insightv_jax.train import reference  # reference.py builds on this table
  reference.check_records(config, source, reference.ref_hash(reference.ref_identity(config, tokenizer, params)))


TASKS: dict[str, Task] = {
    "sft": Task("sft", lambda config: SftBatch, loss=_sft_loss, reference=lambda config: "none",
                trained_tokens=lambda batch: int(batch.tokens.loss_mask.sum()), flops_rows=lambda config: 1),
    "dpo": Task("dpo", _dpo_batches, loss=_dpo_loss, reference=_dpo_reference, trained_tokens=_chosen_targets,
                flops_rows=lambda config: 1 if config.dpo.shared_prompt else 2, check_data=_dpo_check_data),
}


def get(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f"config.task={name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name]
