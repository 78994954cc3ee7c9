"""`insightv-eval`: the two-agent system and the baselines on benchmark files; resumable; Markdown + JSON report.

    insightv-eval --config=configs/eval.py --workdir=/runs/eval --config.reasoning_model=params:/runs/r/export \
        --config.summary_model=params:/runs/s/export --config.tokenizer=/tok --config.benchmarks=/bench/mmstar.jsonl
"""

from insightv_jax.eval.runner import run_eval
from pipelines.cli._app import define_job_flags, run_job

define_job_flags("Eval config file (configs/eval.py).", "Output folder: per-system results (resumable) and "
                 "report.md/json.")


def run():
  run_job(run_eval)


if __name__ == "__main__":
  run()
