"""Evaluation: benchmark readers, resumable runs of a system over questions, official scores, reports.

    from insightv_jax.eval import read_benchmark, evaluate, write_report
    rows = evaluate("two_agents", lambda ex: two_agents(reasoner, summarizer, ex), read_benchmark(path), out_dir)
    write_report(out_dir, {"two_agents": rows})               # report.md + report.json with official aggregates

    from insightv_jax.eval import prediction_files           # re-score official prediction files
    prediction_files.score_mmmu(outputs, answers)
    prediction_files.score_mathvista(problems, outputs, extraction="rules")

Modules, one job each: `readers` (benchmark files -> questions), `official` (each row's official scorer),
`loop` (the resumable run of a system), `report` (report.md / report.json), `runner` (`run_eval`, what
`insightv-eval` runs), `prediction_files` (official prediction files re-scored; `eval.scoring` is its old name,
deprecated).
"""

from insightv_jax.eval import prediction_files
from insightv_jax.eval.loop import evaluate, to_example
from insightv_jax.eval.official import official_scores, score_one
from insightv_jax.eval.readers import read_benchmark
from insightv_jax.eval.report import summarise, write_report
from insightv_jax.eval.runner import run_eval

__all__ = ["evaluate", "official_scores", "prediction_files", "read_benchmark", "run_eval", "score_one", "summarise",
           "to_example", "write_report"]
