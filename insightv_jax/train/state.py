"""Building the train state born sharded: model (random, HF or our params), optimizer state, shardings.

    setup = build_train_state(config, model_cfg, mesh, reference_model=task.reference_model(config))
    setup.state       # {"step": int32 [], "params": ..., "opt_state": ...[, "ref_params": trained part]}, on the mesh
    setup.shardings   # the same keys: NamedShardings
    setup.graphdef, setup.tx, setup.trainable

The train loop builds it for real; the dry run builds it with `abstract=True` (`jax.ShapeDtypeStruct`
leaves carrying their shardings, nothing allocated), so both compile the same step over the same state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from insightv_jax import checkpoints, sharding
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext, abstract_model
from insightv_jax.model.resize import fit_vocab
from insightv_jax.train import optim


@dataclasses.dataclass
class TrainSetup:
  """graphdef: the model's structure; state / shardings: the train state and its shardings (same keys);
  tx: the optimizer; trainable: a pytree of bools like params (False = frozen)."""

  graphdef: Any
  state: dict
  shardings: dict
  tx: optax.GradientTransformation
  trainable: Any

  def param_counts(self) -> tuple[int, int]:
    """(parameters, trained parameters) of the policy (a reference copy is not counted)."""
    leaves = jax.tree.leaves(self.state["params"])
    n = sum(int(np.prod(x.shape)) for x in leaves)
    trained = sum(int(np.prod(x.shape)) for x, t in zip(leaves, jax.tree.leaves(self.trainable)) if t)
    return n, trained


def build_train_state(config, model_cfg: LlavaConfig, mesh, *, reference_model: bool = False,
                      abstract: bool = False) -> TrainSetup:
  """The train state of `config` (model, optim) on `mesh`, born sharded.

  reference_model: add "ref_params", a frozen copy of the starting params' trained part (DPO against the
  round's starting policy; checkpointed with the run): the frozen parameters (config.optim.freeze, e.g. the
  vision tower) never change, so the reference takes them from "params" (`reference_params`).
  abstract: ShapeDtypeStructs only (the dry run); the model is not loaded from config.model.init then, only
  shaped by `model_cfg`.
  """
  if abstract:
    graphdef, abs_state = nnx.split(abstract_model(model_cfg))
    param_shardings = sharding.pure_dict_shardings(abs_state, mesh)
    params = abstract_like(nnx.to_pure_dict(abs_state), param_shardings)
  else:
    with sharding.use_mesh(mesh):
      model = init_model(config.model, model_cfg, mesh, seed=config.seed)
    graphdef, params = params_of(model)
    del model
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
  trainable = optim.trainable_mask(params, list(config.optim.freeze))
  tx = optim.make_optimizer(config.optim, trainable)
  opt_shardings = opt_state_shardings(tx, params, param_shardings, mesh)
  repl = sharding.replicated(mesh)
  if abstract:
    opt_state = abstract_like(jax.eval_shape(tx.init, params), opt_shardings)
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=repl)
  else:
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    step = zeros_step(mesh)
  state = {"step": step, "params": params, "opt_state": opt_state}
  shardings = {"step": repl, "params": param_shardings, "opt_state": opt_shardings}
  if reference_model:  # only what is trained: the frozen rest is identical in "params" (`reference_params`)
    ref = trained_part(params, trainable)
    state["ref_params"] = ref if abstract else jax.tree.map(lambda x: x.copy(), ref)
    shardings["ref_params"] = trained_part(param_shardings, trainable)
  return TrainSetup(graphdef=graphdef, state=state, shardings=shardings, tx=tx, trainable=trainable)


def trained_part(params, trainable):
  """The leaves of a nested-dict pytree (params, or anything shaped like them) whose `trainable` flag is True;
  frozen leaves and the subtrees they empty are dropped. E.g. with the vision tower frozen: every key of
  params but "vision_tower"."""
  def keep(p, t):
    if not isinstance(p, dict):
      return p if t else None
    kept = {k: keep(v, t[k]) for k, v in p.items()}
    return {k: v for k, v in kept.items() if v is not None} or None
  return keep(params, trainable) or {}


def reference_params(ref_params, params):
  """The full reference model: `ref_params` (a `trained_part`) with every leaf it lacks taken, gradient
  stopped, from `params` (frozen, so identical in both)."""
  if not isinstance(params, dict):
    return ref_params
  frozen = lambda tree: jax.tree.map(jax.lax.stop_gradient, tree)
  return {k: reference_params(ref_params[k], v) if k in ref_params else frozen(v) for k, v in params.items()}


def shares_tower(ref_params) -> bool:
  """Whether a reference built by `trained_part` takes the whole vision tower from the policy (it is frozen),
  so the tower's output for a batch is the same for both and runs once."""
  return "vision_tower" not in ref_params


def model_config(cfg, tokenizer=None) -> LlavaConfig:
  """The LlavaConfig of config.model: from the init checkpoint when there is one, else the preset dict."""
  runtime = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, remat=cfg.remat, scan_layers=cfg.scan_layers,
                 attention=cfg.get("attention", "auto"))
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
    runtime = dict(dtype=mc.dtype, param_dtype=mc.param_dtype, remat=mc.remat, scan_layers=mc.scan_layers,
                   attention=mc.attention)  # the checkpoint's own config (its vocabulary) with mc's runtime
    model = checkpoints.load_model(init, config=checkpoints.read_config(init, **runtime), mesh=mesh)
  else:
    graphdef, abs_state = nnx.split(abstract_model(mc, seed))
    out = sharding.pure_dict_shardings(abs_state, mesh)
    params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(LlavaNext(mc, rngs=nnx.Rngs(seed)))), out_shardings=out)()
    return nnx.merge(graphdef, params)
  return fit_vocab(model, vocab_size=mc.text.vocab_size, image_token_index=mc.image_token_index)


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
