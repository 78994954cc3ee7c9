"""`insightv-train`: SFT (either agent), DPO or iterative DPO, by config.

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
flags.DEFINE_bool("dry_run", False, "Compile the train step ahead of time on a fake mesh with abstract inputs "
                  "and print per-device memory and FLOPs; allocates nothing (see insightv_jax/train/dry_run.py).")
flags.DEFINE_integer("dry_run_devices", 8, "Fake devices for --dry_run.")


def main(argv):
  del argv
  if FLAGS.dry_run:  # before anything imports jax: the fake devices are set through XLA_FLAGS
    from insightv_jax.train.dry_run import dry_run
    dry_run(FLAGS.config, FLAGS.dry_run_devices)
    return
  if FLAGS.config.get("task") == "dpo_iterative":
    from pipelines.iterative_dpo import run_iterative
    logging.info("done: %s", run_iterative(FLAGS.config, FLAGS.workdir))
    return
  from insightv_jax.train.loop import train
  logging.info("done: %s", train(FLAGS.config, FLAGS.workdir))


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run()
