"""Evaluation: benchmark readers, resumable runs of a system over questions, reports; `run_eval` is insightv-eval.

    from insightv_jax.eval import read_benchmark, evaluate, write_report
    rows = evaluate("two_agent", lambda ex: two_agent(reasoner, summarizer, ex), read_benchmark(path), out_dir)
    write_report(out_dir, {"two_agent": rows})
"""

from insightv_jax.eval.readers import read_benchmark
from insightv_jax.eval.runner import evaluate, run_eval, summarise, write_report

__all__ = ["evaluate", "read_benchmark", "run_eval", "summarise", "write_report"]
