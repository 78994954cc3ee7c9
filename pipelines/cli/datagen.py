"""`insightv-datagen`: progressive synthesis -> assessment -> assembly (data_gen/pipeline.py, configs/datagen.py).

    insightv-datagen --config=configs/datagen.py --workdir=/data/gen --config.backend.kind=openai ...
"""

from pipelines.cli import _inputs
from pipelines.cli._app import define_job_flags, run_job

define_job_flags("Data-generation config (configs/datagen.py).", "Run folder (journal, datasets, report); reuse it "
                 "to resume.")


def inputs(config) -> dict:
  """The config fields that name inputs, by kind (pipelines/cli/_inputs.py)."""
  table = {"questions": _inputs.questions, "image_root": _inputs.optional_dir}
  if config.backend.kind == "openai":
    table.update({"backend.base_url": _inputs.url, "backend.model": _inputs.nonempty})
  elif config.backend.kind == "local":
    table.update({"backend.template": _inputs.template, "backend.model": _inputs.model,
                  "backend.tokenizer": _inputs.tokenizer,
                  ("backend.tokenizer", "backend.template", "backend.model"): _inputs.chat_tokenizer})
  table = {**{f: _inputs.prompts for f in _inputs.present(config, "prompts")}, **table}
  return table


def job(config, workdir: str):
  from data_gen.pipeline import run as run_datagen  # here: a bad flag is named before jax is imported
  return run_datagen(config, workdir)


def run():
  run_job(job, inputs)


if __name__ == "__main__":
  run()
