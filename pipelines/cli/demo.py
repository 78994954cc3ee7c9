"""`insightv-demo` / `make demo`: the whole Insight-V pipeline in miniature on CPU (pipelines/demo.py)."""

import os

from pipelines.cli._app import define_job_flags, run_job
from pipelines.demo import run_demo

define_job_flags("Demo config (configs/demo.py).", "Where the demo writes everything (reuse it to resume).",
                 config_default=os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo.py"),
                 workdir_default="demo_out", lock_config=False)


def run():
  run_job(run_demo)


if __name__ == "__main__":
  run()
