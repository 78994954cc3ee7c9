"""Evaluation runs: a system over benchmark questions, resumable, scored, reported; `run_eval` (insightv-eval).

    results = evaluate("two_agent", system_fn, questions, out_dir, image_root=root, batch_size=16)
    write_report(out_dir, {"two_agent": results, "direct": ...})   # report.md + report.json

A system is `fn(list[infer.Example]) -> list[dict(reply, chain, judgement)]`. Results are appended to
out_dir/<system>.jsonl after every batch; a rerun skips the ids already there, so an interrupted run
loses at most one batch of work and never recomputes finished examples.

Scoring. A question read from a benchmark file names its official scorer (meta["scorer"], see `eval.readers`):
MMBench / MMStar / other multiple choice, MME and ChartQA are scored as VLMEvalKit scores them (its exact-matching
path, `scoring.mmbench` / `mme` / `chartqa`); MathVista by the official MathVista rules (`scoring.mathvista`,
LLM-free extraction); MMMU by the official MMMU parsing and judging (`scoring.mmmu`; a VLMEvalKit MMMU row becomes
an official output record, open questions being the rows without options). The prediction is what VLMEvalKit would
see: the reply's answer text (inside <output> ... </output> when present). Each result row has `correct` (that
row's own decision: for circular MMBench, its rotation alone), `extracted` (what the rule read from the reply) and
the benchmark row.
`summarise` adds `official`: per benchmark, VLMEvalKit's aggregate (circular accuracy per l2-category and
category, MME's perception / reasoning scores, ChartQA's relaxed accuracy per split) and the leaderboard's headline
number, so that a report row compares with a leaderboard row. Our own synthetic questions fall back to
`scoring.extract.is_correct`.
"""

from __future__ import annotations

import ast
import collections
import os
import re
import time
from typing import Callable, NamedTuple, Sequence

from absl import logging

from insightv_jax import infer
from insightv_jax.checkpoints import load_model
from insightv_jax.data import prompts, records
from insightv_jax.data.images import decode
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.eval import readers
from insightv_jax.eval import scoring as eval_scoring
from insightv_jax.scoring import chartqa, extract, mathvista, mmbench, mme
from insightv_jax.scoring import compat as mv_compat
from insightv_jax.scoring import vlmeval_compat as vc
from insightv_jax.utils.files import append_jsonl, atomic_write, read_jsonl_log, write_json


def to_example(q: records.Question, image_root: str | None) -> infer.Example:
  """A file's own image folder (meta image_root: MathVista's JSON, a TSV's images/<name>/) wins over image_root."""
  image = decode(q.images[0].read(q.meta.get("image_root") or image_root), q.id) if q.images else None
  return infer.Example(q.id, prompts.format_question(q.question, q.choices), image)


# ---------------------------------------------------------------------------------------------- official scorers
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
  """A VLMEvalKit MMMU row -> the official output record `eval.scoring.score_mmmu` reads. Rows without options are
  MMMU's open questions (VLMEvalKit's MMMU_preproc recognises them by a missing option A)."""
  options = mmbench.build_choices(row)
  return {"id": str(row.get("id") or row["index"]), "question_type": "multiple-choice" if options else "open",
          "all_choices": list(options), "index2ans": {c: str(t) for c, t in options.items()}, "response": prediction,
          "answer": row["answer"]}


def _judge_mmmu(row: dict, prediction: str, rules: str) -> dict:
  """One live decision. An unparseable multiple-choice reply draws from a fresh random.Random(42) here; the
  benchmark's aggregate (`_score_mmmu`) redraws over all replies in the official order, as main_parse_and_eval.py
  does, so the per-row decision of such a reply may differ from the aggregate's."""
  del rules
  result = eval_scoring.score_mmmu([_mmmu_record(row, prediction)])
  (only,) = result.values()
  return {"extracted": only["pred"], "correct": only["correct"]}


def _score_mmmu(rows: Sequence[dict], preds: dict, dataset: str, rules: str) -> vc.Scorecard:
  del rules
  scored = [r for r in rows if r["index"] in preds]
  results = eval_scoring.score_mmmu([_mmmu_record(r, preds[r["index"]]) for r in scored])
  decisions = [{"index": r["index"], "extracted": results[str(r.get("id") or r["index"])]["pred"],
                "correct": results[str(r.get("id") or r["index"])]["correct"]} for r in scored]
  if all(re.fullmatch(r"(dev|validation|test)_.+_\d+", qid) for qid in results):  # official ids: the full table
    aggregate = {k: v["acc"] for k, v in eval_scoring.aggregate_mmmu(results, ndigits=None).items()}
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
_PERCENT_SCALED = ("mcq", "mcq_circular", "mathvista", "mmmu")  # aggregates in fractions; the report shows percent


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


def evaluate(system: str, fn: Callable[[list[infer.Example]], list[dict]], questions: Sequence[records.Question],
             out_dir: str, *, image_root: str | None = None, batch_size: int = 16,
             rules: str = "current") -> list[dict]:
  """Runs `fn` over the questions not yet in out_dir/<system>.jsonl and returns every question's result row.

  rules: VLMEvalKit's rule set for the official scorers ("current" | "legacy", see scoring.vlmeval_compat).
  """
  vc.check_rules(rules)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{system}.jsonl")
  # a line cut by a kill mid-write is dropped: that example is redone
  done: dict[str, dict] = {row["id"]: row for row in read_jsonl_log(path, keep=lambda row: "id" in row)}
  todo = [q for q in questions if q.id not in done]
  logging.info("%s: %d done, %d to go", system, len(done), len(todo))
  t0 = time.time()
  for start in range(0, len(todo), batch_size):
    chunk = todo[start:start + batch_size]
    outs = fn([to_example(q, image_root) for q in chunk])
    rows = [{"id": q.id, "benchmark": q.meta.get("benchmark", q.source or "synthetic"),
             "category": q.meta.get("category", q.meta.get("task", "all")), "question": q.question,
             "answer": q.answer, "choices": list(q.choices) if q.choices else None, **o,
             **score_one(q, o["reply"], rules=rules)} for q, o in zip(chunk, outs)]
    append_jsonl(path, rows)
    done.update((row["id"], row) for row in rows)
    n = start + len(chunk)
    rate = n / max(time.time() - t0, 1e-9)
    logging.info("%s: %d/%d examples, %.2f ex/s, ETA %.0fs", system, n, len(todo), rate, (len(todo) - n) / rate)
  return [done[q.id] for q in questions]


def summarise(results: Sequence[dict], *, rules: str = "current") -> dict:
  """overall / benchmarks / categories: the share of rows marked correct (per row, as `evaluate` decided);
  official: per benchmark, the official scorer's aggregate (`vlmeval_compat.Scorecard.to_json`)."""
  by_bench: dict = collections.defaultdict(lambda: [0, 0])
  by_cat: dict = collections.defaultdict(lambda: [0, 0])
  for r in results:
    for key, table in ((r["benchmark"], by_bench), ((r["benchmark"], r["category"]), by_cat)):
      table[key][0] += int(r["correct"])
      table[key][1] += 1
  acc = lambda c: c[0] / c[1] if c[1] else 0.0
  return {
      "overall": acc([sum(int(r["correct"]) for r in results), len(results)]),
      "n": len(results),
      "benchmarks": {b: {"accuracy": acc(c), "n": c[1]} for b, c in sorted(by_bench.items())},
      "categories": {f"{b}/{cat}": {"accuracy": acc(c), "n": c[1]} for (b, cat), c in sorted(by_cat.items())},
      "official": {b: card.to_json() for b, card in official_scores(results, rules=rules).items()},
  }


def write_report(out_dir: str, systems: dict[str, Sequence[dict]], *, failures: int = 3, title: str = "Evaluation",
                 rules: str = "current"):
  """report.json (all numbers) and report.md (tables + the official scores + a few failure examples per system)."""
  summary = {name: summarise(rows, rules=rules) for name, rows in systems.items()}
  write_json(os.path.join(out_dir, "report.json"), summary)
  lines = [f"# {title}", "", "| system | overall | n |", "|---|---|---|"]
  lines += [f"| {name} | {s['overall']:.1%} | {s['n']} |" for name, s in summary.items()]
  cats = sorted({c for s in summary.values() for c in s["categories"]})
  if cats:
    lines += ["", "| category | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
    for c in cats:
      cells = [f"{summary[n]['categories'].get(c, {}).get('accuracy', float('nan')):.1%}" for n in summary]
      lines.append(f"| {c} | " + " | ".join(cells) + " |")
  lines += _official_tables(summary)
  for name, rows in systems.items():
    bad = [r for r in rows if not r["correct"]][:failures]
    if bad:
      lines += ["", f"## {name}: failure examples", ""]
      for r in bad:
        chain = (r.get("chain") or "").replace("\n", " ")[:300]
        question = " ".join(r["question"].split())  # a hint's line break would end the list item
        lines += [f"- **{r['id']}** — {question} (gold: {r['answer']})",
                  f"  - reply: `{r['reply'][:200]}`" + (f"\n  - chain: {chain}" if chain else "")]
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return summary


def _official_tables(summary: dict) -> list[str]:
  """One table per benchmark with an official score: VLMEvalKit's columns as rows, one column per system."""
  lines = []
  for bench in sorted({b for s in summary.values() for b in s.get("official", {})}):
    cards = {name: s["official"][bench] for name, s in summary.items() if bench in s.get("official", {})}
    first = next(iter(cards.values()))
    percent = first["scorer"] in _PERCENT_SCALED
    fmt = lambda v, percent=percent: "-" if v is None else f"{100 * v:.2f}" if percent else f"{v:.2f}"
    unit = f"{first['metric']}{', %' if percent else ''}"
    lines += ["", f"## {bench}: official score ({unit}; VLMEvalKit {vc.VLMEVALKIT_COMMIT[:8]} rules, exact "
              "matching)", "", "| | " + " | ".join(cards) + " |", "|---|" + "---|" * len(cards)]
    head = first["headline"]["name"]
    lines.append(f"| **{head}** | " + " | ".join(f"**{fmt(c['headline']['value'])}**" for c in cards.values()) + " |")
    keys = list(dict.fromkeys(k for c in cards.values() for k in c["aggregate"]))
    for k in keys:
      if k != head:
        lines.append(f"| {k} | " + " | ".join(fmt(c["aggregate"].get(k)) for c in cards.values()) + " |")
    lines.append("| n | " + " | ".join(str(c["n"]) for c in cards.values()) + " |")
  return lines


SYSTEMS = ("two_agent", "direct", "cot")


def run_eval(config, workdir: str) -> dict:
  """What `insightv-eval` runs: config (configs/eval.py) names the models, systems and benchmark files."""
  os.makedirs(workdir, exist_ok=True)
  with atomic_write(os.path.join(workdir, "config.json")) as f:
    f.write(config.to_json_best_effort(indent=2))
  systems = [s for s in config.systems.split(",") if s]
  unknown = set(systems) - set(SYSTEMS)
  if unknown:
    raise ValueError(f"config.systems: unknown {sorted(unknown)}; choose from {SYSTEMS}")
  if not config.reasoning_model:
    raise ValueError("config.reasoning_model is required ('params:<dir>' or 'hf:<dir>')")
  tok = load_tokenizer(config.tokenizer)
  cache = {}

  def model(spec):
    if spec not in cache:
      cache[spec] = load_model(spec, dtype=config.dtype, attention=config.get("attention", "auto"))
    return cache[spec]

  rules = vc.check_rules(config.get("vlmeval_rules", "current"))
  gen = lambda n: infer.GenerationConfig(max_new_tokens=n, batch_size=config.batch_size)
  summary_spec = config.summary_model or config.reasoning_model
  baseline_spec = config.baseline_model or summary_spec
  questions = []
  for path in [p for p in config.benchmarks.split(",") if p]:
    qs = readers.read_benchmark(path)
    questions.extend(qs[:config.limit] if config.limit else qs)
  results = {}
  agent = lambda spec, n, **kw: infer.Agent(model(spec), tok, config.template, gen(n),
                                           preset=config.get("prompts", "ours"), **kw)
  for system in systems:
    if system == "two_agent":
      r = agent(config.reasoning_model, config.reasoning_max_new_tokens)
      s = agent(summary_spec, config.answer_max_new_tokens)
      fn = lambda ex, r=r, s=s: infer.two_agent(r, s, ex)
    elif system == "direct":
      a = agent(baseline_spec, config.answer_max_new_tokens)
      fn = lambda ex, a=a: infer.direct(a, ex)
    else:
      a = agent(baseline_spec, config.cot_max_new_tokens, stop_tokens=infer.agents.COT_STOP_TOKENS)
      fn = lambda ex, a=a: infer.chain_of_thought(a, ex)
    results[system] = evaluate(system, fn, questions, workdir, image_root=config.image_root or None,
                               batch_size=config.batch_size, rules=rules)
  summary = write_report(workdir, results, rules=rules)
  for name, s in summary.items():
    logging.info("%s: %.1f%% over %d", name, 100 * s["overall"], s["n"])
    for bench, card in s["official"].items():
      logging.info("%s on %s: %s = %.4g (%s, n=%d)", name, bench, card["headline"]["name"],
                   card["headline"]["value"], card["metric"], card["n"])
  return summary
