"""`insightv-eval`: the two-agent system and the baselines on benchmark files; resumable; Markdown + JSON report.

    insightv-eval --config=configs/eval.py --workdir=/runs/eval --config.reasoning_model=params:/runs/r/export \
        --config.summary_model=params:/runs/s/export --config.tokenizer=/tok --config.benchmarks=/bench/mmstar.jsonl
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from insightv_jax.eval.runner import run_eval

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Output folder: per-system results (resumable) and report.md/json.")


def main(argv):
  del argv
  run_eval(FLAGS.config, FLAGS.workdir)


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run()
