"""The "params" checkpoint layout: params-only Orbax folders, the hand-off between stages (SFT -> DPO -> eval).

Layout of a params folder:
    DIR/config.json     the llava-hf model config (the dict the "hf" layout writes), with the tokenizer's bos / eos /
                        pad ids in text_config when the writer knows them
    DIR/insightv.json   template, prompt preset, original release config (checkpoints/model_card.py; optional)
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
from insightv_jax.checkpoints import model_card
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext, abstract_model


def is_layout(path: str) -> bool:
  return os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "params"))


def save(model: LlavaNext, path: str, *, dtype: str | None = None, token_ids: dict | None = None) -> None:
  """Writes config.json + params/ (all processes call this; Orbax coordinates multi-host writes).

  dtype: stored dtype (default: the parameters' own). token_ids: bos_token_id / eos_token_id / pad_token_id for
  config.json's text_config (they travel to the next layout).
  """
  path = os.path.abspath(path)
  params = nnx.state(model, nnx.Param)
  with ocp.StandardCheckpointer() as ckptr:
    tree = nnx.to_pure_dict(params)
    if dtype is not None:
      tree = jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)), tree)
    ckptr.save(os.path.join(path, "params"), tree, force=True)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(path, "config.json"), "w") as f:
      json.dump(model_card.with_token_ids(model.cfg.to_hf(), token_ids), f, indent=2)


def read_config(path: str, **runtime) -> LlavaConfig:
  return LlavaConfig.from_file(path, what="a params folder written by save_model(..., layout='params')", **runtime)


def load(path: str, cfg: LlavaConfig, mesh: jax.sharding.Mesh) -> LlavaNext:
  """Restores a params folder into a model sharded on `mesh`; Orbax reads each shard to its device."""
  path = os.path.abspath(path)
  graphdef, params, rest = nnx.split(abstract_model(cfg), nnx.Param, ...)
  shardings = sharding.state_shardings(params, mesh)
  target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, jnp.dtype(cfg.param_dtype), sharding=s),
                        nnx.to_pure_dict(params), nnx.to_pure_dict(shardings))
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(os.path.join(path, "params"), target)
  nnx.replace_by_pure_dict(params, restored)
  return nnx.merge(graphdef, params, rest)
