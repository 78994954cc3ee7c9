"""`insightv-eval`: the two-agent system and the baselines on benchmark files; resumable; Markdown + JSON report.

    insightv-eval --config=configs/eval.py --workdir=/runs/eval --config.reasoning_model=params:/runs/r/export \
        --config.summary_model=params:/runs/s/export --config.tokenizer=/tok --config.benchmarks=/bench/mmstar.jsonl
"""

from pipelines.cli import _inputs
from pipelines.cli._app import define_job_flags, run_job

define_job_flags("Eval config file (configs/eval.py).", "Output folder: per-system results (resumable) and "
                 "report.md/json.")


def inputs(config) -> dict:
  """The config fields that name inputs, by kind (pipelines/cli/_inputs.py)."""
  return {"template": _inputs.template, "prompts": _inputs.prompts, "reasoning_model": _inputs.model,
          "summary_model": _inputs.optional_model, "baseline_model": _inputs.optional_model,
          "tokenizer": _inputs.tokenizer, "benchmarks": _inputs.benchmark_files, "image_root": _inputs.optional_dir,
          ("tokenizer", "template", "reasoning_model"): _inputs.chat_tokenizer}


def job(config, workdir: str):
  from insightv_jax.eval.runner import run_eval  # here: a bad flag is named before jax is imported
  return run_eval(config, workdir)


def run():
  run_job(job, inputs)


if __name__ == "__main__":
  run()
