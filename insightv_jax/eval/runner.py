"""Evaluation runs: a system over benchmark questions, resumable, scored, reported; `run_eval` (insightv-eval).

    results = evaluate("two_agent", system_fn, questions, out_dir, image_root=root, batch_size=16)
    write_report(out_dir, {"two_agent": results, "direct": ...})   # report.md + report.json

A system is `fn(list[infer.Example]) -> list[dict(reply, chain, judgement)]`. Results are appended to
out_dir/<system>.jsonl after every batch; a rerun skips the ids already there, so an interrupted run
loses at most one batch of work and never recomputes finished examples.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Callable, Sequence

from absl import logging

from insightv_jax import infer
from insightv_jax.checkpoints import load_model
from insightv_jax.data import prompts, records
from insightv_jax.data.images import decode
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.eval import readers
from insightv_jax.scoring import extract
from insightv_jax.utils.files import append_jsonl, atomic_write, read_jsonl_log, write_json


def to_example(q: records.Question, image_root: str | None) -> infer.Example:
  image = decode(q.images[0].read(image_root), q.id) if q.images else None
  return infer.Example(q.id, prompts.format_question(q.question, q.choices), image)


def evaluate(system: str, fn: Callable[[list[infer.Example]], list[dict]], questions: Sequence[records.Question],
             out_dir: str, *, image_root: str | None = None, batch_size: int = 16) -> list[dict]:
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
             "correct": extract.is_correct(o["reply"], q.answer, choices=q.choices)} for q, o in zip(chunk, outs)]
    append_jsonl(path, rows)
    done.update((row["id"], row) for row in rows)
    n = start + len(chunk)
    rate = n / max(time.time() - t0, 1e-9)
    logging.info("%s: %d/%d examples, %.2f ex/s, ETA %.0fs", system, n, len(todo), rate, (len(todo) - n) / rate)
  return [done[q.id] for q in questions]


def summarise(results: Sequence[dict]) -> dict:
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
  }


def write_report(out_dir: str, systems: dict[str, Sequence[dict]], *, failures: int = 3, title: str = "Evaluation"):
  """report.json (all numbers) and report.md (tables + a few failure examples per system)."""
  summary = {name: summarise(rows) for name, rows in systems.items()}
  write_json(os.path.join(out_dir, "report.json"), summary)
  lines = [f"# {title}", "", "| system | overall | n |", "|---|---|---|"]
  lines += [f"| {name} | {s['overall']:.1%} | {s['n']} |" for name, s in summary.items()]
  cats = sorted({c for s in summary.values() for c in s["categories"]})
  if cats:
    lines += ["", "| category | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
    for c in cats:
      cells = [f"{summary[n]['categories'].get(c, {}).get('accuracy', float('nan')):.1%}" for n in summary]
      lines.append(f"| {c} | " + " | ".join(cells) + " |")
  for name, rows in systems.items():
    bad = [r for r in rows if not r["correct"]][:failures]
    if bad:
      lines += ["", f"## {name}: failure examples", ""]
      for r in bad:
        chain = (r.get("chain") or "").replace("\n", " ")[:300]
        lines += [f"- **{r['id']}** — {r['question']} (gold: {r['answer']})",
                  f"  - reply: `{r['reply'][:200]}`" + (f"\n  - chain: {chain}" if chain else "")]
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return summary


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
      cache[spec] = load_model(spec, dtype=config.dtype)
    return cache[spec]

  gen = lambda n: infer.GenerationConfig(max_new_tokens=n, batch_size=config.batch_size)
  summary_spec = config.summary_model or config.reasoning_model
  baseline_spec = config.baseline_model or summary_spec
  questions = []
  for path in [p for p in config.benchmarks.split(",") if p]:
    qs = readers.read_benchmark(path)
    questions.extend(qs[:config.limit] if config.limit else qs)
  results = {}
  for system in systems:
    if system == "two_agent":
      r = infer.Agent(model(config.reasoning_model), tok, config.template, gen(config.reasoning_max_new_tokens))
      s = infer.Agent(model(summary_spec), tok, config.template, gen(config.answer_max_new_tokens))
      fn = lambda ex, r=r, s=s: infer.two_agent(r, s, ex)
    elif system == "direct":
      a = infer.Agent(model(baseline_spec), tok, config.template, gen(config.answer_max_new_tokens))
      fn = lambda ex, a=a: infer.direct(a, ex)
    else:
      a = infer.Agent(model(baseline_spec), tok, config.template, gen(config.cot_max_new_tokens))
      fn = lambda ex, a=a: infer.chain_of_thought(a, ex)
    results[system] = evaluate(system, fn, questions, workdir, image_root=config.image_root or None,
                               batch_size=config.batch_size)
  summary = write_report(workdir, results)
  for name, s in summary.items():
    logging.info("%s: %.1f%% over %d", name, 100 * s["overall"], s["n"])
  return summary
