"""What every job CLI shares: `--config` (an ml_collections config file, `--config.a.b=value` overrides),
`--workdir`, and `absl.app.run` of one function `job(config, workdir)`.

    define_job_flags("configs/eval.py")
    def run(): run_job(run_eval)
"""

from __future__ import annotations

from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_job_flags(config_help: str, workdir_help: str = "Run folder; reuse it to resume.", *,
                     config_default: str | None = None, workdir_default: str | None = None,
                     lock_config: bool = True) -> None:
  config_flags.DEFINE_config_file("config", config_default, config_help, lock_config=lock_config)
  flags.DEFINE_string("workdir", workdir_default, workdir_help)


def run_job(job: Callable[[Any, str], Any]) -> None:
  """Parses the flags and runs `job(FLAGS.config, FLAGS.workdir)`; its result is logged."""
  required = [name for name in ("config", "workdir") if FLAGS[name].default is None]
  flags.mark_flags_as_required(required)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    logging.info("done: %s", job(FLAGS.config, FLAGS.workdir))

  app.run(main)
