"""Iterative DPO for the reasoning agent (Insight-V section 3.3), resumable after a kill at any stage.

Round k = 1..K, all artefacts in workdir/round_k/:
  sample/    data_gen with the LOCAL backend on the round's starting checkpoint: N chains per question
             (temperature > 0), assessed (answer level + reasoning scores), assembled into DPO pairs
  train/     one DPO round (insightv_jax.train.loop) from the starting checkpoint, reference = that checkpoint
  train/export   the round's result, which starts round k + 1
  eval.json  accuracy of the round's reasoning agent (through the summary agent) on held-out questions
Each stage leaves a `DONE` marker (`utils.files.mark_done`); a restarted run skips finished stages and resumes an
interrupted training from its own checkpoints (the data-generation journal and the train checkpoints make every
stage resumable).
"""

from __future__ import annotations

import copy
import json
import math
import os

from absl import logging

from data_gen.pipeline import run as datagen
from insightv_jax.train.loop import train
from insightv_jax.utils.faults import kill_if
from insightv_jax.utils.files import is_done, mark_done, write_json


def run_iterative(config, workdir: str, *, evaluate=None) -> list[dict]:
  """config: configs/dpo_iterative.py. evaluate(model_spec) -> dict of metrics (optional, per round)."""
  start = config.start_model  # 'params:<dir>' of the SFT reasoning agent
  results = []
  for k in range(1, config.rounds + 1):
    rdir = os.path.join(workdir, f"round_{k}")
    sample_dir, train_dir = os.path.join(rdir, "sample"), os.path.join(rdir, "train")
    if not is_done(sample_dir):
      dg = copy.deepcopy(config.datagen)
      with dg.unlocked():
        dg.backend.kind = config.sampler  # "local": the current policy; "scripted": the synthetic teacher (tests)
        dg.backend.model = start
        dg.world.seed = config.datagen.world.seed
        dg.progressive.temperature = config.sample_temperature
      logging.info("round %d: sampling chains from %s", k, start)
      datagen(dg, sample_dir)
      mark_done(sample_dir)
    kill_if(config.debug_kill_at, f"round_{k}/sample")
    pairs = os.path.join(sample_dir, "datasets", "dpo-0-of-1.arrayrecord")
    with open(os.path.join(sample_dir, "report", "counts.json")) as f:
      n_pairs = json.load(f)["datasets"]["dpo"]
    if not is_done(train_dir):
      if n_pairs == 0:
        raise RuntimeError(f"round {k}: the sampled chains gave no DPO pairs (all scored alike); "
                           f"see {sample_dir}/report")
      tc = copy.deepcopy(config.train)
      with tc.unlocked():
        tc.model.init = start
        tc.data.paths = pairs
        if config.epochs:
          tc.optim.total_steps = max(1, math.ceil(config.epochs * n_pairs / tc.data.batch_size))
      logging.info("round %d: DPO on %d pairs (%d steps)", k, n_pairs, tc.optim.total_steps)
      train(tc, train_dir)
      mark_done(train_dir)
    kill_if(config.debug_kill_at, f"round_{k}/train")
    start = "params:" + os.path.join(train_dir, "export")
    eval_path = os.path.join(rdir, "eval.json")
    if evaluate is not None and not os.path.exists(eval_path):
      write_json(eval_path, evaluate(start))
    metrics = json.load(open(eval_path)) if os.path.exists(eval_path) else {}
    results.append({"round": k, "pairs": n_pairs, "model": start, **metrics})
  return results
