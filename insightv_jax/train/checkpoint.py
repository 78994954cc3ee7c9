"""Orbax checkpoints of the whole run: train state (params, optimizer, step) + Grain iterator state.

    ckpt = Checkpointer(workdir, keep=3)
    step, state = ckpt.restore_or(abstract_state, iterator)  # resumes the latest committed step, if any
    ckpt.save(step, state, iterator)                          # async (the loop calls it every N steps)
    ckpt.save(step, state, iterator, force=True)              # at the end, on SIGTERM
    ckpt.close()                                              # waits for pending saves

The data iterator is saved per process (`grain.checkpoint.CheckpointHandler` writes one file per
process), so a multi-host run resumes each host's shard exactly. Only committed steps are restored; a
run killed mid-save falls back to the previous one.
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "iter": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_or(self, abstract_state, iterator):
    """(step, state) from the latest checkpoint, restoring `iterator` in place; (0, None) if none."""
    step = self.manager.latest_step()
    if step is None:
      return 0, None
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), iter=grain.checkpoint.CheckpointRestore(iterator)))
    logging.info("restored step %d from %s", step, self.directory)
    return step, restored["state"]

  def save(self, step: int, state, iterator, *, force: bool = False) -> bool:
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), iter=grain.checkpoint.CheckpointSave(iterator)), force=force)
    if saved:
      logging.info("checkpoint %d %s", step, "saving (async)" if not force else "saved")
    return saved

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def is_primary() -> bool:
  return jax.process_index() == 0
