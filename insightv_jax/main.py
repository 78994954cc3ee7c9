"""`insightv-train`: SFT (either agent) or DPO, by config.

    insightv-train --config=configs/sft_reasoning.py:tiny --workdir=/tmp/run \
        --config.tokenizer=/data/tok --config.data.paths=/data/sft.ar --config.data.image_root=/data

Flags override any config field (`--config.optim.lr=1e-5`); the resolved config is written to the workdir.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Job config file, e.g. configs/sft_reasoning.py:tiny.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder: config, metrics, checkpoints, export. Reused to resume.")


def main(argv):
  del argv
  from insightv_jax.train.loop import train
  result = train(FLAGS.config, FLAGS.workdir)
  logging.info("done: %s", result)


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run()
