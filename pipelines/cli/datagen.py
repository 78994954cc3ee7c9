"""`insightv-datagen`: progressive synthesis -> assessment -> assembly (data_gen/pipeline.py, configs/datagen.py).

    insightv-datagen --config=configs/datagen.py --workdir=/data/gen --config.backend.kind=openai ...
"""

from data_gen.pipeline import run as run_datagen
from pipelines.cli._app import define_job_flags, run_job

define_job_flags("Data-generation config (configs/datagen.py).", "Run folder (journal, datasets, report); reuse it "
                 "to resume.")


def run():
  run_job(run_datagen)


if __name__ == "__main__":
  run()
