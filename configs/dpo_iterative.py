"""Iterative DPO of the reasoning agent: K rounds of sample -> assess -> pairs -> DPO (Insight-V: 3 rounds).

    insightv-train --config=configs/dpo_iterative.py:tiny --workdir=/runs/idpo \
        --config.start_model=params:/runs/sft_reasoning/export --config.train.tokenizer=/data/tok
"""

import ml_collections

from configs import datagen, dpo


def get_config(variant: str = "tiny"):
  c = ml_collections.ConfigDict()
  c.task = "dpo_iterative"
  c.rounds = 3  # K
  c.start_model = ""  # 'params:<dir>': the SFT reasoning agent that round 1 starts from
  c.sample_temperature = 0.7  # sampling temperature of the round's chains
  c.sampler = "local"  # "local": chains from the current policy; "scripted": the synthetic teacher (tests only)
  c.debug_kill_at = ""  # tests only: SIGKILL after a stage, e.g. "round_1/train" (insightv_jax/utils/faults.py)
  # the reasoning agent's prompt preset (insightv_jax/data/prompts.py PROMPT_PRESETS): "ours" | "insightv"; the one
  # field for the whole loop: run_iterative writes it into datagen.prompts (the sampler's prompt, the chain layout)
  # and train.data.prompts (the DPO round's prompt), so the chains are sampled with the prompt they are trained on.
  # "" (default): the preset the start model's folder records (its insightv.json), else "ours".
  c.prompts = ""
  # how chains are sampled and assessed (backend.kind from `sampler`, backend.model the round's starting policy,
  # prompts from `prompts`: set per round by run_iterative). backend.template and train.data.template are one
  # template for sampling and training: train.data.template, or backend.template when that is "" (both given and
  # different: an error; pipelines/iterative_dpo.py round_template); both "" (the default): the template the start
  # model's folder records, else templates.DEFAULT_TEMPLATE
  c.datagen = datagen.get_config()
  c.datagen.backend.template = ""
  c.datagen.synthesis = "chains"  # the reasoning agent writes whole chains
  c.datagen.progressive.paths_per_question = 4  # chains per question
  c.datagen.assembly.pairs_per_question = 1
  c.train = dpo.get_config(variant)  # one DPO round (model.init and data.paths are set per round)
  # > 0: each round makes this many passes over its own pairs (train.optim.total_steps = ceil(epochs * pairs /
  # batch_size); Insight-V: 1); 0: every round takes train.optim.total_steps whatever its number of pairs
  c.epochs = 0.0
  return c
