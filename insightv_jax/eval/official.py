"""The official scorer of each benchmark row: one reply's decision (`score_one`) and a benchmark's aggregate
(`official_scores`), as VLMEvalKit / MathVista / MMMU decide them.

    decision = score_one(question, reply)     # {"correct", "extracted", "prediction", "scorer", "row"}
    cards = official_scores(result_rows)      # {benchmark: vlmeval_compat.Scorecard}

A question read from a benchmark file names its official scorer (meta["scorer"], see `eval.readers`):
MMBench / MMStar / other multiple choice, MME and ChartQA are scored as VLMEvalKit scores them (its exact-matching
path, `scoring.mmbench` / `mme` / `chartqa`); MathVista by the official MathVista rules (`scoring.mathvista`,
LLM-free extraction); MMMU by the official MMMU parsing and judging (`eval.prediction_files.score_mmmu`; a
VLMEvalKit MMMU row becomes an official output record, open questions being the rows without options). The
prediction is what VLMEvalKit would see: the reply's answer text (inside <output> ... </output> when present).
Our own synthetic questions fall back to `scoring.extract.is_correct`.
"""

from __future__ import annotations

import ast
import collections
import re
from typing import Callable, NamedTuple, Sequence

from insightv_jax.data import records
from insightv_jax.eval import prediction_files
from insightv_jax.scoring import chartqa, extract, mathvista, mmbench, mme
from insightv_jax.scoring import compat as mv_compat
from insightv_jax.scoring import vlmeval_compat as vc

# One entry per scorer family (scoring.vlmeval_compat.scorer_for): judge(row, prediction, rules) -> dict with
# "correct" and "extracted"; score(rows, predictions, dataset, rules) -> Scorecard.

class _Official(NamedTuple):
  judge: Callable[[dict, str, str], dict]
  score: Callable[[Sequence[dict], dict, str, str], vc.Scorecard]


def _score_mcq(circular: bool):
  return lambda rows, preds, dataset, rules: mmbench.score_mcq(rows, preds, dataset=dataset, circular=circular,
                                                               rules=rules)


def _mathvista_problem(row: dict) -> dict:
  """A MathVista row (our readers: VLMEvalKit's TSV shape, lists as literals) -> the official problem shape."""
  problem = {k: row.get(k) for k in mv_compat.MATHVISTA_SCORE_KEYS}
  problem.update(row)
  for key in ("choices", "skills"):
    if isinstance(problem.get(key), str) and problem[key].startswith("["):
      problem[key] = ast.literal_eval(problem[key])
  problem["skills"] = problem.get("skills") or []
  if problem.get("precision") is not None:
    problem["precision"] = float(problem["precision"])
  return problem


def _judge_mathvista(row: dict, prediction: str, rules: str) -> dict:
  """MathVista: VLMEvalKit has no LLM-free path (it asserts a working judge), so live runs use the official
  MathVista rules (scoring.mathvista: the official extraction where it needs no LLM, our rule approximation
  where the official code would ask one)."""
  del rules
  problem = _mathvista_problem(row)
  pred = mathvista.normalize_extraction(mathvista.rule_extract(prediction, problem), problem)
  return {"extracted": pred, "correct": mathvista.safe_equal(pred, problem["answer"])}


def _score_mathvista(rows: Sequence[dict], preds: dict, dataset: str, rules: str) -> vc.Scorecard:
  problems = {str(r["index"]): _mathvista_problem(r) for r in rows if r["index"] in preds}
  decisions = [{"index": r["index"], **_judge_mathvista(r, preds[r["index"]], rules)}
               for r in rows if r["index"] in preds]
  scores = mathvista.aggregate(problems, {str(d["index"]): d["correct"] for d in decisions})
  aggregate = {"average": scores["average"]["accuracy"]}
  for key in mv_compat.MATHVISTA_SCORE_KEYS:
    aggregate.update({f"{key}/{value}": s["accuracy"] for value, s in scores[key].items()})
  return vc.Scorecard(dataset, "mathvista", "accuracy (official MathVista rules, rule extraction)",
                      tuple(decisions), aggregate, ("average", aggregate["average"]))


def _mmmu_record(row: dict, prediction: str) -> dict:
  """A VLMEvalKit MMMU row -> the official output record `prediction_files.score_mmmu` reads. Rows without
  options are MMMU's open questions (VLMEvalKit's MMMU_preproc recognises them by a missing option A)."""
  options = mmbench.build_choices(row)
  return {"id": str(row.get("id") or row["index"]), "question_type": "multiple-choice" if options else "open",
          "all_choices": list(options), "index2ans": {c: str(t) for c, t in options.items()}, "response": prediction,
          "answer": row["answer"]}


def _judge_mmmu(row: dict, prediction: str, rules: str) -> dict:
  """One live decision. An unparseable multiple-choice reply draws from a fresh random.Random(42) here; the
  benchmark's aggregate (`_score_mmmu`) redraws over all replies in the official order, as main_parse_and_eval.py
  does, so the per-row decision of such a reply may differ from the aggregate's."""
  del rules
  result = prediction_files.score_mmmu([_mmmu_record(row, prediction)])
  (only,) = result.values()
  return {"extracted": only["pred"], "correct": only["correct"]}


def _score_mmmu(rows: Sequence[dict], preds: dict, dataset: str, rules: str) -> vc.Scorecard:
  del rules
  scored = [r for r in rows if r["index"] in preds]
  results = prediction_files.score_mmmu([_mmmu_record(r, preds[r["index"]]) for r in scored])
  decisions = [{"index": r["index"], "extracted": results[str(r.get("id") or r["index"])]["pred"],
                "correct": results[str(r.get("id") or r["index"])]["correct"]} for r in scored]
  if all(re.fullmatch(r"(dev|validation|test)_.+_\d+", qid) for qid in results):  # official ids: the full table
    aggregate = {k: v["acc"] for k, v in prediction_files.aggregate_mmmu(results, ndigits=None).items()}
  else:
    aggregate = {"Overall": sum(d["correct"] for d in decisions) / max(len(decisions), 1)}
  return vc.Scorecard(dataset, "mmmu", "accuracy (official MMMU parsing and judging)", tuple(decisions), aggregate,
                      ("Overall", aggregate["Overall"]))


_OFFICIAL = {
    "mcq": _Official(lambda row, pred, rules: mmbench.judge_row(row, pred, rules=rules), _score_mcq(False)),
    "mcq_circular": _Official(lambda row, pred, rules: mmbench.judge_row(row, pred, rules=rules), _score_mcq(True)),
    "mme": _Official(lambda row, pred, rules: mme.judge_row(row, pred),
                     lambda rows, preds, dataset, rules: mme.score_mme(rows, preds, dataset=dataset)),
    "chartqa": _Official(lambda row, pred, rules: chartqa.judge_row(row, pred, rules=rules),
                         lambda rows, preds, dataset, rules: chartqa.score_chartqa(rows, preds, dataset=dataset,
                                                                                   rules=rules)),
    "mathvista": _Official(_judge_mathvista, _score_mathvista),
    "mmmu": _Official(_judge_mmmu, _score_mmmu),
}
PERCENT_SCALED = ("mcq", "mcq_circular", "mathvista", "mmmu")  # aggregates in fractions; the report shows percent


def score_one(q: records.Question, reply: str, *, rules: str = "current") -> dict:
  """One reply's decision: {"correct", "extracted", "prediction", "scorer"} (+ "row" when an official scorer
  decided; our own questions: `extract.is_correct`, extracted None)."""
  family, row = q.meta.get("scorer"), q.meta.get("row")
  prediction = extract.answer_span(reply)
  if family in _OFFICIAL and row is not None:
    judged = _OFFICIAL[family].judge(row, prediction, rules)
    return {"prediction": prediction, "scorer": family, "extracted": judged["extracted"],
            "correct": bool(judged["correct"]), "row": row}
  return {"prediction": prediction, "scorer": "is_correct", "extracted": None,
          "correct": extract.is_correct(reply, q.answer, choices=q.choices)}


def official_scores(results: Sequence[dict], *, rules: str = "current") -> dict[str, vc.Scorecard]:
  """Per benchmark, the official score of the result rows an official scorer decided (rows from `evaluate`)."""
  groups: dict = collections.defaultdict(list)
  for r in results:
    if r.get("scorer") in _OFFICIAL and r.get("row") is not None:
      groups[(r["benchmark"], r["scorer"])].append(r)
  out = {}
  for (bench, family), rows in sorted(groups.items()):
    preds = {r["row"]["index"]: r["prediction"] for r in rows}
    out[bench] = _OFFICIAL[family].score([r["row"] for r in rows], preds, bench, rules)
  return out
