"""Re-scoring prediction files with the official MMMU and MathVista rules, from the official files as they are.

MMMU (outputs in the format of the official repository's `mmmu/example_outputs/<model>/<Subject>/output.json`,
answers as in `mmmu/answer_dict_val.json`):

    outputs = read_mmmu_outputs("example_outputs/llava1.5_13b")     # every subject, in the official order
    results = score_mmmu(outputs, json.load(open("answer_dict_val.json")))
    results["validation_Art_1"]        # {"pred": "C", "correct": True}
    aggregate_mmmu(results)            # {"Overall-Art and Design": {"num": 120, "acc": 0.525}, ..., "Overall": ...}

MathVista (`data/testmini.json` and a results file such as `results/bard/output_bard.json`, pid -> record):

    results = score_mathvista(problems, outputs, extraction="rules")
    results["2"]                       # {"extraction": "250", "prediction": "250", "correct": False}
    aggregate_mathvista(problems, results)   # {"average": {"accuracy", "correct", "total"}, "question_type": ...}

extraction: "given" scores each record's own `extraction` (what the official extractor wrote); "rules" is the
official rule path plus our LLM-free approximation of the extractor; "llm" is the official extraction with an
LLM behind an OpenAI-compatible server (`client`, e.g. insightv_jax.utils.openai_client.OpenAIClient).

How close this is to the official decisions (measured over every public example by scratch scripts that run
the official code; not shipped):
  MMMU       score_mmmu equals main_parse_and_eval.py --subject ALL on 900/900 questions for both models of
             example_outputs (llava1.5_13b with 2 random draws, qwen_vl with 48), predictions included, and its
             letters equal the released total_val_output.json on all 847 multiple-choice questions of each;
             aggregate_mmmu equals main_eval_only.py's table
  MathVista  "given" reproduces every stored decision (true_false) and prediction of all 24 results/ files with
             the integer rule each was scored with (legacy_integers=True for 22 files, False for output_gpt4 and
             output_llavar); aggregate_mathvista reproduces their scores files' counts. "rules" agrees with the
             official decisions on 91.4% of multiple-choice and 99.1% of free-form questions over the 20 files
             that are not code runs (in the 4 code-run files the released `execution` text is often not what
             was extracted)
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
from typing import Mapping, Sequence

from insightv_jax.scoring import compat, mathvista, mmmu

__all__ = ["EXTRACTIONS", "aggregate_mathvista", "aggregate_mmmu", "read_mmmu_outputs", "score_mathvista",
           "score_mmmu"]

# ------------------------------------------------------------------------------------------------------ MMMU


def read_mmmu_outputs(model_dir: str) -> list[dict]:
  """The records of <model_dir>/<Subject>/output.json for every subject present, in the order the official
  `main_parse_and_eval.py --subject ALL` reads them (compat.MMMU_CAT_SHORT2LONG, then file order)."""
  out = []
  for subject in compat.MMMU_CAT_SHORT2LONG.values():
    path = os.path.join(model_dir, subject, "output.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        out.extend(json.load(f))
  return out


def score_mmmu(outputs: Sequence[Mapping], answers: Mapping[str, Mapping] | None = None, *,
               seed: int = compat.MMMU_SEED) -> dict[str, dict]:
  """{id: {"pred": letter | [normalised candidates], "correct": bool}} for MMMU output records.

  outputs: records with id, question_type, response, and for multiple choice all_choices and index2ans.
  answers: {id: {"question_type", "ground_truth"}} (answer_dict_val.json); None uses each record's own
    "answer" field, as main_parse_and_eval.py does.
  Replies are parsed in the official order (subjects in compat.MMMU_CAT_SHORT2LONG order, records in their given
  order within a subject), with one random.Random(seed) for the whole run, so an unparseable multiple-choice
  reply gets the same random letter as in the official `--subject ALL` run over the same records.
  """
  by_id = {}
  for r in outputs:
    if r["id"] in by_id:
      raise ValueError(f"MMMU outputs: duplicate id {r['id']!r}")
    by_id[r["id"]] = r
  rng = random.Random(seed)
  results = {}
  for qid in mmmu.subject_order(by_id):
    record = by_id[qid]
    if answers is None:
      gold = record["answer"]
    elif qid in answers:
      gold = answers[qid]["ground_truth"]
    else:
      raise KeyError(f"MMMU answers: no ground truth for {qid!r}")
    pred = mmmu.parse(record, rng)
    results[qid] = {"pred": pred, "correct": mmmu.judge(record["question_type"], gold, pred)}
  return results


def aggregate_mmmu(results: Mapping[str, Mapping], ndigits: int | None = 3) -> dict[str, dict]:
  """Per-subject, per-domain and overall {"num", "acc"} as main_eval_only.py prints them (see mmmu.aggregate)."""
  return mmmu.aggregate({qid: r["correct"] for qid, r in results.items()}, ndigits=ndigits)


# ------------------------------------------------------------------------------------------------- MathVista

EXTRACTIONS = ("given", "rules", "llm")


def score_mathvista(problems: Mapping[str, Mapping], outputs: Mapping[str, Mapping], extraction: str = "rules",
                    client=None, *, response_key: str = "response", legacy_integers: bool = False,
                    quick: bool = False, concurrency: int = 8) -> dict[str, dict]:
  """{pid: {"extraction", "prediction", "correct"}} for every pid of `outputs`, scored against `problems`.

  problems: testmini.json (pid -> problem with question_type, answer_type, choices, precision, query, answer).
  outputs: pid -> record with `response_key` ("response"; the official code runs use "execution"), and
    "extraction" when extraction="given".
  extraction: "given" | "rules" | "llm" (module docstring). "llm" needs `client`, anything with
    chat(messages, **params) -> str | None (OpenAIClient); `concurrency` requests run at once; quick=True adds
    the official --quick_extract pattern before the LLM (the official scripts run without it).
  legacy_integers: the integer rule of the scorer that wrote most files in MathVista's results/
    (mathvista.normalize_extraction); False is calculate_score.py as published.
  """
  if extraction not in EXTRACTIONS:
    raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
  if extraction == "llm" and client is None:
    raise ValueError("extraction='llm' needs a client (e.g. insightv_jax.utils.openai_client.OpenAIClient)")
  missing = [pid for pid in outputs if pid not in problems]
  if missing:
    raise KeyError(f"MathVista: {len(missing)} output pids are not in the problems, e.g. {missing[:3]}")

  def extract(pid: str) -> str:
    record, problem = outputs[pid], problems[pid]
    if extraction == "given":
      if "extraction" not in record:
        raise KeyError(f"MathVista output {pid!r} has no 'extraction' (extraction='given')")
      return record["extraction"]
    if extraction == "rules":
      return mathvista.rule_extract(record.get(response_key), problem)
    return mathvista.llm_extract(record.get(response_key), problem, client.chat, quick=quick)

  pids = list(outputs)
  if extraction == "llm" and concurrency > 1:
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
      extracted = dict(zip(pids, pool.map(extract, pids)))
  else:
    extracted = {pid: extract(pid) for pid in pids}
  results = {}
  for pid in pids:
    problem = problems[pid]
    prediction = mathvista.normalize_extraction(extracted[pid], problem, legacy_integers=legacy_integers)
    results[pid] = {"extraction": extracted[pid], "prediction": prediction,
                    "correct": mathvista.safe_equal(prediction, problem["answer"])}
  return results


def aggregate_mathvista(problems: Mapping[str, Mapping], results: Mapping[str, Mapping]) -> dict:
  """The official scores (average and per question type, answer type, language, source, category, task,
  context, grade and skill), as calculate_score.py computes them (see mathvista.aggregate).

  The official code groups by the metadata of the records in the output file; pass those records as `problems`
  to reproduce a released scores file (older files say grade "daily life" where testmini.json now says
  "not applicable")."""
  return mathvista.aggregate(problems, {pid: r["correct"] for pid, r in results.items()})
