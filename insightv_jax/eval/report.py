"""The evaluation report: per-system accuracy, official scores and failures, as report.md and report.json.

    summary = write_report(out_dir, {"two_agents": rows, "direct": ...})   # rows from `loop.evaluate`

`summarise` adds `official`: per benchmark, VLMEvalKit's aggregate (circular accuracy per l2-category and
category, MME's perception / reasoning scores, ChartQA's relaxed accuracy per split) and the leaderboard's headline
number, so that a report row compares with a leaderboard row.
"""

from __future__ import annotations

import collections
import os
from typing import Sequence

from insightv_jax.eval.official import PERCENT_SCALED, official_scores
from insightv_jax.scoring import vlmeval_compat as vc
from insightv_jax.utils.files import write_json


def summarise(results: Sequence[dict], *, rules: str = "current") -> dict:
  """overall / benchmarks / categories: the share of rows marked correct (per row, as `evaluate` decided);
  official: per benchmark, the official scorer's aggregate (`vlmeval_compat.Scorecard.to_json`); failed: the
  questions that could not be asked ({id, file, line, error}; counted wrong above)."""
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
      "failed": [{k: r.get(k) for k in ("id", "file", "line", "error")} for r in results if r.get("error")],
  }


def write_report(out_dir: str, systems: dict[str, Sequence[dict]], *, failures: int = 3, title: str = "Evaluation",
                 rules: str = "current"):
  """report.json (all numbers) and report.md (tables + the official scores + the questions that could not be
  asked + a few failure examples per system)."""
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
  failed = {f["id"]: f for s in summary.values() for f in s["failed"]}
  if failed:
    lines += ["", f"## Questions that could not be asked ({len(failed)}; counted wrong)", ""]
    lines += [f"- `{f['file']}:{f['line']}` **{qid}**: {f['error']}" if f["line"] else
              f"- `{f['file']}` **{qid}**: {f['error']}" for qid, f in failed.items()]
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
    percent = first["scorer"] in PERCENT_SCALED
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
