"""Evaluation runs: a system over benchmark questions, resumable, scored, reported.

    results = evaluate("two_agent", system_fn, questions, out_dir, image_root=root, batch_size=16)
    write_report(out_dir, {"two_agent": results, "direct": ...})   # report.md + report.json

A system is `fn(list[Example]) -> list[dict(reply, chain, judgement)]`. Results are appended to
out_dir/<system>.jsonl after every batch; a rerun skips the ids already there, so an interrupted run
loses at most one batch of work and never recomputes finished examples.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Callable, Sequence

from absl import logging

from insightv_jax.data import records, templates
from insightv_jax.data.images import decode
from insightv_jax.eval import extract
from insightv_jax.infer.agents import Example


def to_example(q: records.Question, image_root: str | None) -> Example:
  image = decode(q.images[0].read(image_root), q.id) if q.images else None
  return Example(q.id, templates.format_question(q.question, q.choices), image)


def evaluate(system: str, fn: Callable[[list[Example]], list[dict]], questions: Sequence[records.Question],
             out_dir: str, *, image_root: str | None = None, batch_size: int = 16) -> list[dict]:
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{system}.jsonl")
  done: dict[str, dict] = {}
  if os.path.exists(path):
    with open(path) as f:
      lines = f.read().split("\n")
    for line in lines:
      try:
        row = json.loads(line)
        done[row["id"]] = row
      except (json.JSONDecodeError, KeyError, TypeError):  # a line cut by a kill mid-write: redo that example
        continue
    tmp = path + ".tmp"
    with open(tmp, "w") as f:  # keep only complete rows, so appends never glue onto a partial line
      f.writelines(json.dumps(r) + "\n" for r in done.values())
    os.replace(tmp, path)
  todo = [q for q in questions if q.id not in done]
  logging.info("%s: %d done, %d to go", system, len(done), len(todo))
  t0 = time.time()
  for start in range(0, len(todo), batch_size):
    chunk = todo[start:start + batch_size]
    outs = fn([to_example(q, image_root) for q in chunk])
    with open(path, "a") as f:
      for q, o in zip(chunk, outs):
        row = {"id": q.id, "benchmark": q.meta.get("benchmark", q.source or "synthetic"),
               "category": q.meta.get("category", q.meta.get("task", "all")), "question": q.question,
               "answer": q.answer, "choices": list(q.choices) if q.choices else None, **o,
               "correct": extract.is_correct(o["reply"], q.answer, choices=q.choices)}
        f.write(json.dumps(row) + "\n")
        done[q.id] = row
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
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(summary, f, indent=2)
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
