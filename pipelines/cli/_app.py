"""What every CLI shares: `--config` (an ml_collections config file, `--config.a.b=value` overrides),
`--workdir`, `absl.app.run` of one function `job(config, workdir)`, and one way a failure ends.

    define_job_flags("configs/eval.py")
    def run(): run_job(run_eval, inputs=lambda config: {"tokenizer": _inputs.tokenizer, ...})

How a run fails: the inputs the CLI names are checked first (pipelines/cli/_inputs.py: each failure names the
flag); then any error ends the process with ONE last line on stderr, `error: <message>`, the message naming the
flag, file (line / record / tensor) or URL at fault. A bad input (`InputError` and the library's input errors,
a missing or unreadable file) prints only that line and exits with status 2; anything else prints its traceback
first and exits with status 1.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

from insightv_jax.utils.inputs import InputError, one_line, writable_dir
from pipelines.cli import _inputs

FLAGS = flags.FLAGS
INPUT_STATUS, BUG_STATUS = 2, 1
# bad inputs that are not InputErrors: a path the OS refuses
OS_INPUT_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def define_job_flags(config_help: str, workdir_help: str = "Run folder; reuse it to resume.", *,
                     config_default: str | None = None, workdir_default: str | None = None,
                     lock_config: bool = True) -> None:
  config_flags.DEFINE_config_file("config", config_default, config_help, lock_config=lock_config)
  flags.DEFINE_string("workdir", workdir_default, workdir_help)


def run_job(job: Callable[[Any, str], Any], inputs: Callable[[Any], dict] | None = None) -> None:
  """Parses the flags, checks the config's inputs (`inputs(config)`: a `_inputs.check` table) and the workdir,
  and runs `job(FLAGS.config, FLAGS.workdir)`; its result is logged."""
  required = [name for name in ("config", "workdir") if FLAGS[name].default is None]
  flags.mark_flags_as_required(required)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    if inputs is not None:
      _inputs.check(FLAGS.config, inputs(FLAGS.config))
    writable_dir(FLAGS.workdir, "--workdir")
    logging.info("done: %s", job(FLAGS.config, FLAGS.workdir))

  run_main(main)


def run_main(main: Callable[[list[str]], Any]) -> None:
  """`app.run(main)` where every error ends the process with one `error: ...` line (see the module doc)."""

  def reporting_main(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      raise
    except (app.UsageError, InputError) + OS_INPUT_ERRORS as e:
      _exit(INPUT_STATUS, one_line(e))
    except Exception as e:  # noqa: BLE001 - every failure ends in one named line
      logging.flush()
      traceback.print_exc()
      _exit(BUG_STATUS, one_line(f"{type(e).__name__}: {e}"))

  app.run(reporting_main, flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad flag (unknown, missing, a config file that does not load, an override of a field
  the config does not have) ending in one line that names it."""
  try:
    rest = FLAGS(argv)
    if "config" in FLAGS and FLAGS.config is not None:
      FLAGS.config.keys()  # a config file that failed to load raises here, not while parsing
    return rest
  except flags.Error as e:
    _exit(INPUT_STATUS, one_line(f"{e} (see --helpshort)"))
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a field the config lacks
    key = str(e).strip("'\"")
    named = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and key in a.split("=")[0].split(".")]
    if named:
      _exit(INPUT_STATUS, one_line(f"{named[0]}: the config has no field {key!r} (its fields are in the config file)"))
    _exit(INPUT_STATUS, one_line(f"--config: the config file failed: {type(e).__name__}: {e}"))
  except OSError as e:  # ml_collections: the --config file could not be loaded
    _exit(INPUT_STATUS, one_line(f"--config: {e}"))


def _exit(status: int, message: str) -> None:
  logging.flush()
  sys.stdout.flush()
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(status)
