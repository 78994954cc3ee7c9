"""DPO against a model with the vision tower frozen: the train state's "ref_params" holds only the trained part (the
tower is the policy's), the reference model it stands for equals the starting policy, and the Orbax checkpoint of
that state restores exactly."""

from __future__ import annotations

import grain
import jax
import numpy as np

from configs.dpo import get_config
from insightv_jax import sharding
from insightv_jax.train import state as state_lib
from insightv_jax.train.checkpoint import Checkpointer


def _setup():
  config = get_config("tiny")
  config.optim.freeze = ("^vision_tower/",)
  mc = state_lib.model_config(config.model)
  mesh = sharding.make_mesh(1, -1, 1, devices=jax.devices()[:2])
  return state_lib.build_train_state(config, mc, mesh, reference_model=True)


def test_ref_params_hold_the_trained_part_and_restore_from_a_checkpoint(tmp_path):
  setup = _setup()
  state, params = setup.state, setup.state["params"]
  ref = state["ref_params"]
  assert set(params) - set(ref) == {"vision_tower"} and state_lib.shares_tower(ref)
  assert set(setup.shardings["ref_params"]) == set(ref)
  n = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  assert n(ref) == sum(x.size for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(setup.trainable)) if t)
  # the full reference is the starting policy: its trained part copied, the frozen tower taken from params
  full = state_lib.reference_params(ref, params)
  assert jax.tree.structure(full) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)

  # a checkpoint of this (smaller) state restores into the abstract state the train loop builds
  state = {**state, "step": state["step"] + 3}
  it = grain.MapDataset.range(8).to_iter_dataset().__iter__()
  ckpt = Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(3, state, it, force=True)
  ckpt.close()
  step, restored = Checkpointer(str(tmp_path)).restore_or(state_lib.abstract_like(state, setup.shardings),
                                                          grain.MapDataset.range(8).to_iter_dataset().__iter__())
  assert step == 3 and jax.tree.structure(restored) == jax.tree.structure(state)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert a.sharding == b.sharding, jax.tree_util.keystr(path)
