"""`insightv-datagen`: progressive synthesis -> assessment -> assembly (data_gen/pipeline.py, configs/datagen.py)."""

from absl import app, flags
from ml_collections import config_flags

from data_gen.pipeline import run as run_datagen

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/datagen.py", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder (journal, datasets, report); reuse it to resume.")


def main(argv):
  del argv
  run_datagen(FLAGS.config, FLAGS.workdir)


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run()
