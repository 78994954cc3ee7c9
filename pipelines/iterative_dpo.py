"""Iterative DPO for the reasoning agent (Insight-V section 3.3), resumable after a kill at any stage.

Round k = 1..K, all artefacts in workdir/round_k/:
  sample/    data_gen with the LOCAL backend on the round's starting checkpoint: N chains per question
             (temperature > 0), assessed (answer level + reasoning scores), assembled into DPO pairs
  train/     one DPO round (insightv_jax.train.loop) from the starting checkpoint, reference = that checkpoint
  train/export   the round's result, which starts round k + 1
The sampler prompts the policy exactly as the DPO round trains it: one prompt preset (`config.prompts`, written
into datagen.prompts and train.data.prompts) and one chat template (`round_template`: written into both);
the sampler's and the loader's prompts are both `insightv_jax.data.prompts.encode`.
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
from insightv_jax.data import model_files
from insightv_jax.train.loop import train
from insightv_jax.train.reference import score_reference
from insightv_jax.utils.faults import kill_if
from insightv_jax.utils.files import is_done, mark_done
from insightv_jax.utils.inputs import InputError


def round_template(config) -> str:
  """The chat template of every round's sampling and training: train.data.template, or when that is "" the
  sampler's datagen.backend.template; both given and different is an error naming the two flags."""
  train_tpl, sample_tpl = config.train.data.template, config.datagen.backend.template
  if train_tpl and sample_tpl and train_tpl != sample_tpl:
    raise InputError(f"--config.train.data.template={train_tpl} but --config.datagen.backend.template={sample_tpl}: "
                     "each round samples its chains with the template it trains them with; set one of them")
  return train_tpl or sample_tpl


def run_iterative(config, workdir: str) -> list[dict]:
  """config: configs/dpo_iterative.py. -> one {"round", "pairs", "model"} per round."""
  start = config.start_model  # 'params:<dir>' of the SFT reasoning agent
  with config.unlocked():  # one template for sampling and training; "" fields: what the start model records
    config.train.data.template = round_template(config)
    model_files.apply_recorded_defaults(config, model="start_model", template="train.data.template",
                                        prompts="prompts")
  template = config.train.data.template
  results = []
  for k in range(1, config.rounds + 1):
    rdir = os.path.join(workdir, f"round_{k}")
    sample_dir, train_dir = os.path.join(rdir, "sample"), os.path.join(rdir, "train")
    if not is_done(sample_dir):
      dg = copy.deepcopy(config.datagen)
      with dg.unlocked():
        dg.backend.kind = config.sampler  # "local": the current policy; "scripted": the synthetic teacher (tests)
        dg.backend.model = start
        dg.backend.template = template  # the template the policy is trained with
        dg.prompts = config.prompts  # the preset it is prompted with (and its chains written in)
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
        tc.data.prompts = config.prompts
        tc.data.template = template
        if config.epochs:
          tc.optim.total_steps = max(1, math.ceil(config.epochs * n_pairs / tc.data.batch_size))
        if tc.dpo.reference == "precomputed":  # the round's reference is fixed: its log-probs scored once
          tc.data.paths = score_reference(tc, os.path.join(rdir, "ref"),
                                          output=os.path.join(rdir, "pairs.ref.arrayrecord"))["files"][0]["output"]
      logging.info("round %d: DPO on %d pairs (%d steps)", k, n_pairs, tc.optim.total_steps)
      train(tc, train_dir)
      mark_done(train_dir)
    kill_if(config.debug_kill_at, f"round_{k}/train")
    start = "params:" + os.path.join(train_dir, "export")
    results.append({"round": k, "pairs": n_pairs, "model": start})
  return results
