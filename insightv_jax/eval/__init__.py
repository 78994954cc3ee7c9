"""Evaluation: benchmark readers, resumable runs of a system over questions, official scores, reports.

    from insightv_jax.eval import read_benchmark, evaluate, write_report
    rows = evaluate("two_agent", lambda ex: two_agent(reasoner, summarizer, ex), read_benchmark(path), out_dir)
    write_report(out_dir, {"two_agent": rows})                 # report.md + report.json with official aggregates

    from insightv_jax.eval import scoring                    # re-score official prediction files
    scoring.score_mmmu(outputs, answers); scoring.score_mathvista(problems, outputs, extraction="rules")

`run_eval` is what `insightv-eval` runs.
"""

from insightv_jax.eval import scoring
from insightv_jax.eval.readers import read_benchmark
from insightv_jax.eval.runner import evaluate, run_eval, summarise, write_report

__all__ = ["evaluate", "read_benchmark", "run_eval", "scoring", "summarise", "write_report"]
