"""Params-only Orbax checkpoints: the hand-off format between stages (SFT -> DPO -> eval -> export).

Layout of a params folder:
    DIR/config.json     the llava-hf model config (same dict `save_llava_next` writes)
    DIR/params/         an Orbax StandardCheckpointer tree of the model's `nnx.Param` state

Restoring builds the abstract model from config.json, gives every leaf its target sharding on the
mesh, and lets Orbax read each shard straight to its device (no host copy of the whole model).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from insightv_jax import sharding
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext


def save_params(model: LlavaNext, path: str) -> None:
  """Writes config.json + params/ (all processes call this; Orbax coordinates multi-host writes)."""
  path = os.path.abspath(path)
  params = nnx.state(model, nnx.Param)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, "params"), nnx.to_pure_dict(params), force=True)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(path, "config.json"), "w") as f:
      json.dump(model.cfg.to_hf(), f, indent=2)


def load_config(path: str, **runtime) -> LlavaConfig:
  cfg_file = os.path.join(path, "config.json")
  if not os.path.exists(cfg_file):
    raise FileNotFoundError(f"{path}: no config.json; not a params folder written by save_params")
  with open(cfg_file) as f:
    return LlavaConfig.from_hf(json.load(f), **runtime)


def load_params(path: str, dtype: str = "float32", *, param_dtype: str | None = None,
                mesh: jax.sharding.Mesh | None = None, scan_layers: bool = False, remat: str = "none") -> LlavaNext:
  """Restores a model saved by `save_params`, sharded on `mesh` (default: the first device)."""
  path = os.path.abspath(path)
  cfg = load_config(path, dtype=dtype, param_dtype=param_dtype or dtype, scan_layers=scan_layers, remat=remat)
  mesh = mesh or sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  abstract = nnx.eval_shape(lambda: LlavaNext(cfg, rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  shardings = sharding.state_shardings(params, mesh)
  target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, jnp.dtype(cfg.param_dtype), sharding=s),
                        nnx.to_pure_dict(params), nnx.to_pure_dict(shardings))
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(os.path.join(path, "params"), target)
  nnx.replace_by_pure_dict(params, restored)
  return nnx.merge(graphdef, params, rest)


def load_model(spec: str, dtype: str = "float32", **kw) -> LlavaNext:
  """'hf:<llava-hf folder>' or 'params:<our params folder>' (a bare folder is sniffed) -> sharded model."""
  from insightv_jax.hf import load_llava_next
  if spec.startswith("hf:"):
    return load_llava_next(spec[3:], dtype=dtype, **kw)
  if spec.startswith("params:"):
    return load_params(spec[7:], dtype=dtype, **kw)
  if os.path.isdir(os.path.join(spec, "params")):
    return load_params(spec, dtype=dtype, **kw)
  if os.path.exists(os.path.join(spec, "config.json")):
    return load_llava_next(spec, dtype=dtype, **kw)
  raise FileNotFoundError(f"{spec}: not an 'hf:' or 'params:' model folder")
