"""Building the train state born sharded: model (random, HF or our params), optimizer state, shardings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from insightv_jax import checkpoints, sharding
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext, abstract_model


def model_config(cfg, tokenizer=None) -> LlavaConfig:
  """The LlavaConfig of config.model: from the init checkpoint when there is one, else the preset dict."""
  runtime = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, remat=cfg.remat, scan_layers=cfg.scan_layers)
  init = cfg.init
  if init == "random":
    mc = LlavaConfig.from_hf(cfg.hf_config.to_dict(), **runtime)
  elif init:
    mc = checkpoints.read_config(init, **runtime)
  else:
    raise ValueError("config.model.init is empty; expected 'random' or a model spec ('hf:<folder>', "
                     "'params:<folder>' or a checkpoint folder)")
  if tokenizer is not None:
    from insightv_jax.data.tokenizer import fit_model_config
    mc = fit_model_config(mc, tokenizer)
  return mc


def init_model(cfg, mc: LlavaConfig, mesh, seed: int = 0) -> LlavaNext:
  """config.model.init: 'random' (jitted init straight into its shardings), 'hf:<dir>' or 'params:<dir>'.

  A checkpoint whose vocabulary is smaller than `mc`'s (the tokenizer gained the agents' tokens) is grown
  with mean-initialised rows.
  """
  init = cfg.init
  if init != "random":
    model = checkpoints.load_model(init, mc.dtype, param_dtype=mc.param_dtype, mesh=mesh,
                                   scan_layers=mc.scan_layers, remat=mc.remat)
  else:
    graphdef, abs_state = nnx.split(abstract_model(mc, seed))
    out = sharding.pure_dict_shardings(abs_state, mesh)
    params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(LlavaNext(mc, rngs=nnx.Rngs(seed)))), out_shardings=out)()
    return nnx.merge(graphdef, params)
  if model.cfg.text.vocab_size < mc.text.vocab_size:
    from insightv_jax.model.resize import grow_vocab
    model = grow_vocab(model, mc.text.vocab_size)
  if model.cfg.image_token_index != mc.image_token_index:
    model = nnx.merge(nnx.split(abstract_model(mc))[0],
                      nnx.to_pure_dict(nnx.state(model)))
  return model


def opt_state_shardings(tx: optax.GradientTransformation, params, param_shardings, mesh):
  """Optimizer-state shardings: moments like their parameters, counters replicated."""
  abstract = jax.eval_shape(tx.init, params)
  repl = sharding.replicated(mesh)
  masked = lambda x: isinstance(x, optax.MaskedNode)  # frozen parameters have no optimizer state
  return optax.tree_map_params(tx, lambda p, s: p if masked(p) else s, abstract, param_shardings,
                               transform_non_params=lambda _: repl, is_leaf=masked)


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def params_of(model: LlavaNext):
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


def zeros_step(mesh):
  return jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(mesh))
