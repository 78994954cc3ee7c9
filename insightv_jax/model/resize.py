"""Fitting a model to its tokenizer: growing the vocabulary (new rows start at the mean of the existing rows, as
Insight-V and LLaVA initialise new tokens) and moving the image placeholder id."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from insightv_jax.model.llava import LlavaNext, abstract_model


def grow_vocab(model: LlavaNext, new_size: int) -> LlavaNext:
  """A copy of `model` whose embedding (and untied LM head) have `new_size` rows.

  Existing rows are kept bit for bit; rows [old, new) are the mean of rows [0, old). Shardings are kept.
  """
  cfg = model.cfg
  old = cfg.text.vocab_size
  if new_size < old:
    raise ValueError(f"grow_vocab: new size {new_size} is smaller than the current vocabulary {old}")
  if new_size == old:
    return model
  new_cfg = cfg.replace(text=dataclasses.replace(cfg.text, vocab_size=new_size))

  def grow(table: jax.Array, axis: int) -> jax.Array:
    mean = jnp.mean(table.astype(jnp.float32), axis=axis, keepdims=True).astype(table.dtype)
    reps = [1] * table.ndim
    reps[axis] = new_size - old
    return jnp.concatenate([table, jnp.tile(mean, reps)], axis=axis)

  graphdef, state = nnx.split(model)
  new_model = abstract_model(new_cfg)
  new_graphdef, new_state = nnx.split(new_model)
  flat = dict(nnx.to_flat_state(state))
  for path, var in nnx.to_flat_state(new_state):
    value = flat[path].get_value()
    if path == ("language_model", "embed_tokens", "embedding"):
      value = grow(value, 0)
    elif path == ("language_model", "lm_head", "kernel"):
      value = grow(value, 1)
    var.set_value(value)
  del graphdef
  return nnx.merge(new_graphdef, new_state)


def fit_vocab(model: LlavaNext, *, vocab_size: int | None = None, image_token_index: int | None = None) -> LlavaNext:
  """`model` with at least `vocab_size` token rows (`grow_vocab`) and `image_token_index` as its placeholder id.

  A model whose tokenizer gained tokens (the agents' tags, `<image>` for an original LLaVA-NeXT release) goes
  through here; every other parameter is kept bit for bit.
  """
  if vocab_size is not None and vocab_size > model.cfg.text.vocab_size:
    model = grow_vocab(model, vocab_size)
  if image_token_index is not None and image_token_index != model.cfg.image_token_index:
    cfg = model.cfg.replace(image_token_index=image_token_index)
    model = nnx.merge(nnx.split(abstract_model(cfg))[0], nnx.state(model))
  return model
