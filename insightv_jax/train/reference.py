"""Precomputed reference log-probs for DPO: score a pair file once with the reference model, then train without
the reference forward (`config.dpo.reference="precomputed"`).

    summary = score_reference(config, workdir)       # config: configs/ref_logprobs.py (a DPO config + config.ref)
    identity = ref_identity(config, tokenizer, params)   # what the numbers depend on; ref_hash(identity) names it
    check_records(config, source, ref_hash(identity))    # training: RefLogpsError at the first record that differs

Scored exactly as training scores: the records go through the loader's own `Encoder` (tokenizer, chat template,
prompts, truncation to max_len, the shared-prompt cut) and `Batcher` (padding, packing, images), and the batch
through `steps.pair_logprobs`, the function the train step runs on its reference params. So a reply the loader
truncates is scored truncated. The Batcher places pairs in pair slots (first-fit when packing); to know which
record sits in which slot, each example enters it with `ref_logps = [i + 1, i + 1]` (i: its record index; the
Batcher copies ref_logps into the slot, empty slots stay 0), and the batch's ref_logps is read back as the slot
map before the batch is scored without it.

`ref_hash` names everything the numbers depend on (`ref_identity`): the reference parameters (a fingerprint of
their values, so the same weights under another path match and another round's do not), compute dtype,
tokenizer, chat template, prompt preset, max_len, min_target_tokens, the record format and shared_prompt (the
shared row cuts replies further). pack / pairs_per_row / batch_size only move pairs between rows: not in it.
The reference is the policy the run starts from (config.model.init), as for dpo.reference="model".

Work survives a kill: each scored batch is appended to a journal in the workdir (fsynced; keyed by the input
file and the hash), a rerun scores only what the journal lacks, and the output file is written atomically at the
end, beside the input (`pairs.ar` -> `pairs.ref.ar`) or at config.ref.output. Records the loader skips (bad
image, over-long) are not written (training would skip them too); the summary counts them. Single process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import grain
import jax
import numpy as np
from absl import logging

from insightv_jax import sharding
from insightv_jax.data import loader, model_files, prompts, records, sources
from insightv_jax.data.batches import SharedDpoBatch
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.train import state as state_lib
from insightv_jax.train import steps, tasks
from insightv_jax.utils.files import append_jsonl, atomic_write, read_jsonl_log, write_json
from insightv_jax.utils.inputs import InputError

HASH_VERSION = 1
FINGERPRINT_VALUES = 1024  # evenly spaced values per parameter tensor in the model fingerprint
RESCORE = ("score the file for this run: insightv-train --config=configs/ref_logprobs.py:<variant> --workdir=<dir> "
           "with the run's --config.model.init, --config.tokenizer, --config.data.* and --config.dpo.shared_prompt, "
           "then train on its output; or train with --config.dpo.reference=model")


class RefLogpsError(InputError):
  """DPO records whose precomputed reference log-probs cannot be used by this run (missing, or scored for
  another reference / encoding); the message names the file, the record, the hashes and the flag to change."""


# ---------------------------------------------------------------------------------------------- identity

def prompt_preset(config) -> str:
  """The prompt preset the loader renders pairs with (config.data.prompts; prompts.DEFAULT_PRESET where the config has
  none)."""
  return config.data.get("prompts") or prompts.DEFAULT_PRESET


def param_fingerprint(params) -> str:
  """sha256 over every parameter's path, shape, dtype and FINGERPRINT_VALUES evenly spaced values (exact bits;
  the same under any sharding). params: a pure dict of arrays."""
  def sample(x):
    flat = x.reshape(-1)
    return flat[np.linspace(0, flat.size - 1, min(FINGERPRINT_VALUES, flat.size)).astype(np.int64)]
  from jax.experimental import multihost_utils
  values = multihost_utils.process_allgather(jax.jit(lambda p: jax.tree.map(sample, p))(params), tiled=True)
  h = hashlib.sha256()
  for (path, x), v in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(values)):
    h.update(f"{jax.tree_util.keystr(path)} {x.shape} {x.dtype}\n".encode())
    h.update(np.asarray(v).tobytes())
  return h.hexdigest()[:24]


def tokenizer_fingerprint(tokenizer) -> str:
  """sha256 of the tokenizer's full definition (a fast tokenizer's JSON: vocabulary, merges, added tokens)."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
  return hashlib.sha256(f"{type(tokenizer).__name__}\n{text}".encode()).hexdigest()[:24]


def ref_identity(config, tokenizer, params) -> dict[str, Any]:
  """What precomputed reference log-probs depend on (see the module doc); `ref_hash` hashes it."""
  d = config.data
  preset = prompt_preset(config)
  return {"version": HASH_VERSION, "model": param_fingerprint(params), "dtype": config.model.dtype,
          "tokenizer": tokenizer_fingerprint(tokenizer), "template": d.template, "prompts": preset,
          "prompt_probe": prompts.get_preset(preset).reasoning_messages("Q?", "A."), "max_len": d.max_len,
          "min_target_tokens": d.min_target_tokens, "format": d.format,
          "shared_prompt": bool(config.dpo.shared_prompt)}


def ref_hash(identity: dict) -> str:
  return f"ref{HASH_VERSION}-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def describe(config) -> str:
  """The run settings a ref_hash covers, as flags, for error messages."""
  d = config.data
  return (f"--config.model.init={config.model.init}, --config.model.dtype={config.model.dtype}, --config.tokenizer="
          f"{config.tokenizer}, --config.data.template={d.template}, --config.data.prompts={prompt_preset(config)}, "
          f"--config.data.max_len={d.max_len}, --config.data.min_target_tokens={d.min_target_tokens}, "
          f"--config.data.format={d.format}, --config.dpo.shared_prompt={bool(config.dpo.shared_prompt)}")


# ---------------------------------------------------------------------------------------------- training check

def check_records(config, source, expected: str) -> int:
  """Every record of `source` carries reference log-probs with ref_hash == `expected`; else `RefLogpsError` at the
  first that does not (before anything trains on it). Reads each record's JSON only. Returns the records read."""
  if config.data.format != "auto":
    raise RefLogpsError(f"--config.dpo.reference=precomputed needs dpo_pair records (--config.data.format=auto), "
                        f"got --config.data.format={config.data.format}: only they carry ref_chosen_logp / "
                        "ref_rejected_logp / ref_hash")
  for i in range(len(source)):
    where, raw = source[i]
    try:
      d = json.loads(raw)
    except json.JSONDecodeError:
      continue  # the loader names and skips it
    if not isinstance(d, dict) or d.get("kind") != records.DPOPair.KIND:
      continue  # not a pair: the loader names and skips it
    rid, found = d.get("id"), d.get("ref_hash")
    if d.get("ref_chosen_logp") is None or d.get("ref_rejected_logp") is None:
      raise RefLogpsError(f"{where} (id={rid!r}): no precomputed reference log-probs (ref_chosen_logp / "
                          f"ref_rejected_logp), but --config.dpo.reference=precomputed (expected ref_hash "
                          f"{expected}). {RESCORE}")
    if found != expected:
      raise RefLogpsError(f"{where} (id={rid!r}): ref_hash {found!r} does not match this run's {expected!r}: the "
                          f"reference log-probs were scored for another reference model or encoding (this run: "
                          f"{describe(config)}). {RESCORE}")
  return len(source)


# ---------------------------------------------------------------------------------------------- scoring job

class _Indexed:
  """source[i] as (i, (where, bytes)) for the records still to score (`todo`: record indices)."""

  def __init__(self, source, todo: list[int]):
    self.source, self.todo = source, todo

  def __len__(self):
    return len(self.todo)

  def __getitem__(self, j):
    i = self.todo[j]
    return i, self.source[i]


class _Tagged:
  """The loader's Encoder, its example tagged with its record index (ref_logps = [i + 1, i + 1]); skips kept."""

  def __init__(self, encoder: loader.Encoder):
    self.encoder, self.skipped = encoder, []

  def __call__(self, element):
    i, rec = element
    ex = self.encoder(rec)
    if isinstance(ex, loader.Skipped):
      self.skipped.append({"index": i, "reason": ex.reason})
      return ex
    return {**ex, "ref_logps": np.full(2, i + 1, np.float32)}


def output_paths(output: str, paths: list[str]) -> list[str]:
  """`output` (comma-separated, one per data file) or, when empty, `<name>.ref<ext>` beside each of `paths`."""
  given = [p for p in output.split(",") if p]
  if not given:
    return ["{}.ref{}".format(*os.path.splitext(p)) for p in paths]
  if len(given) != len(paths):
    raise InputError(f"--config.ref.output={output}: {len(given)} outputs for {len(paths)} data files "
                     f"(--config.data.paths={','.join(paths)}); give one per file, or none to write beside each")
  return given


def score_reference(config, workdir: str, *, output: str | None = None) -> dict:
  """Scores every pair of config.data.paths with the model of config.model.init and writes each file's records
  with ref_chosen_logp / ref_rejected_logp / ref_hash (see the module doc). config: configs/ref_logprobs.py, or
  any DPO training config (configs/dpo.py: then `output`, or the default beside each input). output: overrides
  config.ref.output. -> {"ref_hash", "files": [{"input", "output", "records", "written", "skipped", ...}]}."""
  if jax.process_count() > 1:
    raise ValueError("score_reference runs in one process (set --config.distributed.coordinator_address='')")
  if config.data.format != "auto":
    raise InputError(f"--config.data.format={config.data.format}: reference log-probs are written into dpo_pair "
                     "records (--config.data.format=auto)")
  model_files.apply_recorded_defaults(config)  # template / prompts "" -> what model.init records, as train() does
  os.makedirs(workdir, exist_ok=True)
  paths = [p for p in config.data.paths.split(",") if p]
  outputs = output_paths(output if output is not None else config.get("ref", {}).get("output", ""), paths)
  for p, out in zip(paths, outputs):
    if os.path.abspath(os.path.expanduser(out)) == os.path.abspath(os.path.expanduser(p)):
      raise InputError(f"--config.ref.output={out}: is the input file; the input is never rewritten in place")
  tokenizer = load_tokenizer(config.tokenizer)
  model_cfg = state_lib.model_config(config.model, tokenizer)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  if config.data.batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
    raise InputError(f"--config.data.batch_size={config.data.batch_size} must be divisible by mesh data x fsdp "
                     f"(mesh {dict(mesh.shape)})")
  with sharding.use_mesh(mesh):
    model = state_lib.init_model(config.model, model_cfg, mesh, seed=config.seed)
  graphdef, params = state_lib.params_of(model)
  del model
  identity = ref_identity(config, tokenizer, params)
  h = ref_hash(identity)
  write_json(os.path.join(workdir, "ref_identity.json"), {"ref_hash": h, **identity})
  logging.info("reference log-probs %s for %s", h, describe(config))
  cfg = dataclasses.replace(loader.LoaderConfig.from_config(config.data), num_epochs=1, worker_count=0)
  batch_type = tasks.get("dpo").batch_type(config)
  abstract = loader.abstract_batch(cfg, model_cfg, mesh, batch_type=batch_type)
  batch_shardings = jax.tree.map(lambda x: x.sharding, abstract)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  score = jax.jit(lambda p, b: steps.pair_logprobs(graphdef, p, b, chunk=config.loss_chunk)[0],
                  in_shardings=(param_shardings, batch_shardings))
  files = []
  for path, out in zip(paths, outputs):
    files.append(_score_file(config, cfg, path, out, h, workdir, model_cfg, tokenizer, batch_type,
                             lambda b: score(params, jax.tree.map(jax.make_array_from_process_local_data,
                                                                  batch_shardings, b))))
  return {"ref_hash": h, "files": files}


def _score_file(config, cfg, path, out, h, workdir, model_cfg, tokenizer, batch_type, score) -> dict:
  source = sources.open_source(config.data.source, [path])
  n = len(source)
  if n >= 2**24:
    raise InputError(f"{path}: {n} records; score_reference tags pairs by index in float32 (< 2**24 per file): "
                     "split the file")
  key = hashlib.sha256(f"{os.path.abspath(path)}\n{h}".encode()).hexdigest()[:16]
  journal = os.path.join(workdir, f"ref_logprobs-{key}.jsonl")
  scored = {r["index"]: r for r in read_jsonl_log(journal)}
  todo = [i for i in range(n) if i not in scored]
  logging.info("%s: %d records, %d already scored (journal %s)", path, n, n - len(todo), journal)
  tagged = _Tagged(loader.Encoder(cfg, model_cfg, tokenizer, dpo=True, shared=batch_type is SharedDpoBatch))
  if todo:
    ds = grain.MapDataset.source(_Indexed(source, todo)).map(tagged).to_iter_dataset()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = loader.Batcher(ds, cfg, geometry=loader.geometry(cfg, model_cfg), pad_id=pad_id,
                             batch_type=batch_type)
    t0, done, seen = time.time(), 0, 0
    for k, (batch, stats) in enumerate(batches, 1):
      if batch.ref_logps is None:  # only padding: every record read for it was skipped
        seen += stats.skipped
        continue
      slots = np.asarray(batch.ref_logps).reshape(-1, 2)[:, 0].astype(np.int64) - 1  # record per pair slot; -1 empty
      logp = np.asarray(jax.device_get(score(batch.replace(ref_logps=None))))
      p = len(slots)
      rows = [{"index": int(i), "chosen": float(logp[s]), "rejected": float(logp[p + s])}
              for s, i in enumerate(slots) if i >= 0]
      append_jsonl(journal, rows)
      done, seen = done + len(rows), seen + len(rows) + stats.skipped
      if k % max(config.log_every, 1) == 0 or seen >= len(todo):
        rate = done / max(time.time() - t0, 1e-9)
        eta = (len(todo) - seen) / rate if rate else float("nan")
        logging.info("%s: scored %d/%d pairs (%.1f%%), %d skipped, %.2f pairs/s, ETA %s", path, n - len(todo) + done,
                     n, 100 * (n - len(todo) + seen) / n, len(tagged.skipped), rate,
                     "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s")
    scored = {r["index"]: r for r in read_jsonl_log(journal)}
  if not scored:
    first = tagged.skipped[0]["reason"] if tagged.skipped else "none read"
    raise InputError(f"{path}: none of its {n} records is a usable DPO pair, nothing to score (--config.data.paths); "
                     f"first skipped: {first}")
  written = _write(source, out, scored, h)
  logging.info("%s -> %s: %d pairs with reference log-probs, %d skipped by the loader", path, out, written,
               n - written)
  return {"input": path, "output": out, "records": n, "written": written, "skipped": n - written,
          "scored_this_run": len(todo) - len(tagged.skipped), "skipped_this_run": tagged.skipped[:20]}


def _write(source, out: str, scored: dict, h: str) -> int:
  """The scored records (in input order) with their reference log-probs, in the input's format, atomically."""
  def scored_records():
    for i in sorted(scored):
      where, raw = source[i]
      rec = records.loads(raw, where)
      yield dataclasses.replace(rec, ref_chosen_logp=scored[i]["chosen"], ref_rejected_logp=scored[i]["rejected"],
                                ref_hash=h)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  if isinstance(source, sources.ArrayRecordSource):
    return records.write_array_record(out, scored_records())
  if source[0][0].endswith("]"):  # a JSON array (its records are named "file[i]", JSON lines "file:line")
    recs = [r.to_json() for r in scored_records()]
    with atomic_write(out) as f:
      json.dump(recs, f, ensure_ascii=False)
    return len(recs)
  return records.write_jsonl(out, scored_records())
