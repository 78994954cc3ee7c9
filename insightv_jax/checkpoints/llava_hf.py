"""The llava-hf checkpoint layout (`transformers.LlavaNextForConditionalGeneration`) <-> our `LlavaNext`.

One entry of the layout registry (`registry.py`); users call `checkpoints.load_model("hf:<dir>")`,
`insightv_jax.hf.load_llava_next(dir)` or `save_model(model, dir, layout="hf")`.

Loading streams: every safetensors file is memory-mapped and each parameter is built with
`jax.make_array_from_callback`, so every device (and every host) reads only its own shard of each
tensor, straight from the map; no whole-model copy is ever made in host memory.

`load_tensors` / `save_tensors` are that machinery, driven by a `hf_names.Naming`; the original LLaVA-NeXT
layout (`llava_original.py`) calls them with its own names and writes its own config.json.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from insightv_jax import sharding
from insightv_jax.checkpoints import hf_names, model_card
from insightv_jax.checkpoints.safetensors_io import open_checkpoint, write_checkpoint
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext, abstract_model
from insightv_jax.utils.inputs import InputError

log = logging.getLogger(__name__)


class CheckpointMismatchError(InputError):
  """The checkpoint's tensors do not match the model its config.json describes."""


def safetensors_config(path: str) -> dict | None:
  """The config.json dict of a folder that also holds *.safetensors; None when either is missing or invalid."""
  cfg = os.path.join(path, "config.json")
  if not os.path.exists(cfg) or not any(n.endswith(".safetensors") for n in os.listdir(path)):
    return None
  with open(cfg) as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError:
      return None
  return d if isinstance(d, dict) else None


def is_layout(path: str) -> bool:
  """A folder with config.json and *.safetensors whose config is a llava-hf `llava_next` one."""
  return (safetensors_config(path) or {}).get("model_type") == "llava_next"


def read_config(path: str, **runtime: Any) -> LlavaConfig:
  return LlavaConfig.from_file(path, what="a llava-hf checkpoint folder", **runtime)


def _param_entries(state: nnx.State):
  """Yields (path, variable, [(hf_name, layer_index_or_None)], transform) for every parameter."""
  for path, var in nnx.to_flat_state(state):
    template, transform = hf_names.hf_name(path)
    shape = var.get_value().shape
    if "{i}" in template:  # stacked layers: leading axis is the layer index
      targets = [(template.replace("{i}", str(i)), i) for i in range(shape[0])]
    else:
      targets = [(template, None)]
    yield path, var, targets, transform


def load(path: str, cfg: LlavaConfig, mesh: jax.sharding.Mesh, *, strict: bool = True) -> LlavaNext:
  """Loads a llava-hf checkpoint folder (config.json + *.safetensors) into a `LlavaNext` sharded on `mesh`.

  Shardings come from `sharding.RULES`. strict: unknown tensors in the checkpoint are an error (ignorable
  ones, e.g. SigLIP's unused pooling head, are skipped and logged). Missing tensors are always an error.
  """
  return load_tensors(path, cfg, mesh, naming=hf_names.HF_NAMING, strict=strict)


def load_tensors(path: str, cfg: LlavaConfig, mesh: jax.sharding.Mesh, *, naming: hf_names.Naming,
                 strict: bool = True) -> LlavaNext:
  """The streaming load shared by the safetensors layouts; `naming` says how the folder spells tensor names.

  Every file is memory-mapped; each parameter is built with `jax.make_array_from_callback`, so each device
  copies only its own shard from the map. Errors name tensors as the folder spells them.
  """
  files = open_checkpoint(path)
  by_name = {naming.to_canonical(n): (n, f) for n, f in files.items()}
  graphdef, state = nnx.split(abstract_model(cfg))
  flat = nnx.to_flat_state(state)

  used, missing, bad_shape = set(), [], []
  for path_, var, targets, transform in _param_entries(state):
    for name, _ in targets:
      if name not in by_name:
        missing.append(naming.to_disk(name))
  if missing:
    raise CheckpointMismatchError(f"{path}: missing tensors for {len(missing)} parameters: {missing[:20]}"
                                  + (" ..." if len(missing) > 20 else ""))

  for path_, var, targets, transform in _param_entries(state):
    abstract = var.get_value()
    our_shape = abstract.shape if targets[0][1] is None else abstract.shape[1:]
    views = []
    for name, _ in targets:
      orig, f = by_name[name]
      used.add(name)
      x = f.get(orig)
      want = hf_names.hf_shape(our_shape, transform, cfg)
      if tuple(x.shape) != tuple(want):
        bad_shape.append(f"{orig}: checkpoint {tuple(x.shape)}, config implies {tuple(want)}")
        continue
      views.append(hf_names.to_ours(x, transform, our_shape))
    if bad_shape:
      continue
    named = jax.sharding.NamedSharding(mesh, sharding.fit_spec(sharding.param_spec(var), mesh))
    value = _array_from_views(views, stacked=targets[0][1] is not None, shape=abstract.shape,
                              dtype=jnp.dtype(cfg.param_dtype), out_sharding=named)
    var.set_value(value)
  if bad_shape:
    raise CheckpointMismatchError(f"{path}: tensor shapes disagree with config.json: {bad_shape[:20]}")

  unused = [n for n in by_name if n not in used]
  ignorable = [n for n in unused if hf_names.IGNORABLE.search(n) or
               (cfg.text.tie_word_embeddings and n == "language_model.lm_head.weight")]
  unknown = sorted(by_name[n][0] for n in set(unused) - set(ignorable))
  if ignorable:
    log.info("%s: skipped %d tensors LLaVA-NeXT does not use (e.g. %s)", path, len(ignorable),
             by_name[ignorable[0]][0])
  if unknown and strict:
    raise CheckpointMismatchError(f"{path}: {len(unknown)} tensors match no parameter: {unknown[:20]}"
                                  + (" ..." if len(unknown) > 20 else "") + " (pass strict=False to skip them)")
  if unknown:
    log.warning("%s: ignoring %d unknown tensors: %s", path, len(unknown), unknown[:20])
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _array_from_views(views, *, stacked: bool, shape, dtype, out_sharding) -> jax.Array:
  """Builds one (possibly layer-stacked) parameter; each device copies only its shard from the views."""

  def fetch(index):
    if stacked:
      layers = range(shape[0])[index[0]]
      return np.stack([np.asarray(views[i][index[1:]], dtype=dtype) for i in layers])
    return np.asarray(views[0][index], dtype=dtype)

  return jax.make_array_from_callback(tuple(shape), out_sharding, fetch)


def save(model: LlavaNext, path: str, *, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30,
         token_ids: dict | None = None) -> None:
  """Writes config.json + safetensors shards in the llava-hf layout that `transformers` loads.

  dtype: on-disk dtype (default: the parameters' own). token_ids: bos / eos / pad ids for text_config. Every
  process must call this (parameters are gathered collectively); only process 0 writes.
  """
  cfg: LlavaConfig = model.cfg
  stored = save_tensors(model, path, naming=hf_names.HF_NAMING, dtype=dtype, max_shard_bytes=max_shard_bytes)
  if stored is None:
    return
  hf_cfg = model_card.with_token_ids(cfg.to_hf(), token_ids)
  hf_cfg["dtype"] = stored
  if cfg.vision.model_type == "siglip_vision_model":
    hf_cfg["vision_config"]["vision_use_head"] = False
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_cfg, f, indent=2)


def save_tensors(model: LlavaNext, path: str, *, naming: hf_names.Naming, dtype: str | None = None,
                 max_shard_bytes: int = 5 * 2**30) -> str | None:
  """The streaming save shared by the safetensors layouts: every parameter under its `naming` name.

  Each (possibly layer-stacked) parameter is gathered once and written tensor by tensor. Every process
  must call this; process 0 writes and gets the stored dtype's name (e.g. "bfloat16"), the others None.
  """
  cfg: LlavaConfig = model.cfg
  state = nnx.state(model, nnx.Param)
  entries, specs = {}, []
  for path_, var, targets, transform in _param_entries(state):
    shape = var.get_value().shape
    our_shape = shape if targets[0][1] is None else shape[1:]
    out_dtype = np.dtype(jnp.dtype(dtype)) if dtype else np.dtype(var.get_value().dtype)
    for name, layer in targets:
      disk_name = naming.to_disk(name)
      entries[disk_name] = (var, layer, transform, our_shape)
      specs.append((disk_name, hf_names.hf_shape(our_shape, transform, cfg), out_dtype))

  cache: dict[str, Any] = {"var": None, "value": None}

  def fetch(name: str) -> np.ndarray:
    var, layer, transform, our_shape = entries[name]
    if cache["var"] is not var:  # gather each (possibly stacked) parameter once
      value = var.get_value()
      cache["value"] = (np.asarray(multihost_utils.process_allgather(value, tiled=True))
                        if not value.is_fully_addressable else np.asarray(jax.device_get(value)))
      cache["var"] = var
    x = cache["value"] if layer is None else cache["value"][layer]
    return hf_names.to_hf(x, transform, hf_names.hf_shape(our_shape, transform, cfg))

  primary = jax.process_index() == 0
  if primary:
    os.makedirs(path, exist_ok=True)
  if jax.process_count() > 1 and not primary:
    for name, _, _ in specs:  # take part in the collective gathers; write nothing
      fetch(name)
    return None
  write_checkpoint(path, specs, fetch, max_shard_bytes=max_shard_bytes)
  return str(np.dtype(specs[0][2])) if specs else "float32"
