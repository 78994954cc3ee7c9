"""`insightv-demo` / `make demo`: the whole Insight-V pipeline in miniature on CPU (pipelines/demo.py)."""

from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from pipelines.demo import run_demo

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo.py"),
                                "Demo config (configs/demo.py).", lock_config=False)
flags.DEFINE_string("workdir", "demo_out", "Where the demo writes everything (reuse it to resume).")


def main(argv):
  del argv
  print(json.dumps(run_demo(FLAGS.config, FLAGS.workdir), indent=2))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
