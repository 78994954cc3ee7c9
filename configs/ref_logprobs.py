"""Precomputed reference log-probs: score a DPO pair file with the reference model, exactly as configs/dpo.py's
training would (insightv_jax/train/reference.py), and write the records with ref_chosen_logp / ref_rejected_logp /
ref_hash, for training with --config.dpo.reference=precomputed (no reference forward in the step).

    insightv-train --config=configs/ref_logprobs.py:tiny --workdir=/tmp/ref --config.model.init=params:/run/export \
        --config.tokenizer=/data/tok --config.data.paths=/data/pairs.ar --config.data.image_root=/data
    # -> /data/pairs.ref.ar; then train on it:
    insightv-train --config=configs/dpo.py:tiny --workdir=/tmp/dpo --config.dpo.reference=precomputed \
        --config.model.init=params:/run/export --config.data.paths=/data/pairs.ref.ar ...

Give it the same model.init, tokenizer and data.* / dpo.shared_prompt settings as the DPO run: the ref_hash
records them, and the DPO run stops (RefLogpsError naming the record) when its own settings give another hash.
The workdir holds a journal: a killed run, started again with the same workdir, scores only what is left.
"""

import ml_collections

from configs.dpo import get_config as dpo_config


def get_config(variant: str = "tiny"):
  c = dpo_config(variant)  # the DPO job's fields: the encoding and the model must be the training run's
  c.task = "ref_logprobs"
  c.ref = ml_collections.ConfigDict()
  # comma-separated output files, one per data.paths entry ("": beside each input, pairs.ar -> pairs.ref.ar);
  # never the input itself (written atomically, in the input's format)
  c.ref.output = ""
  return c
