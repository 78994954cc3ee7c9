"""The data-generation report: counts per stage, drop reasons, a score histogram (PNG) and example chains
rendered with their images (HTML)."""

from __future__ import annotations

import base64
import collections
import html
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from insightv_jax.data import prompts


def histogram_png(values, path: str, bins: int = 10, size=(640, 360), title: str = "reasoning scores"):
  """A histogram of `values` (scores in [0, 100], e.g. reasoning-level scores of correct paths) in `bins`
  equal bins, the count above each bar. `size` is in pixels; drawn on an Agg canvas (no display, no pyplot)."""
  values = np.clip(np.asarray(values, dtype=float), 0, 100)
  fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  edges = np.linspace(0, 100, bins + 1)
  counts, _, bars = ax.hist(values, bins=edges, color="C0", edgecolor="white")
  ax.bar_label(bars, labels=[str(int(c)) if c else "" for c in counts], padding=2, fontsize="small")
  ax.set_title(f"{title} (n={len(values)})")
  ax.set_xlabel("score (0-100, higher = more correct and detailed steps)")
  ax.set_ylabel("paths (correct final answer)")
  ax.set_xlim(0, 100)
  ax.set_xticks(edges if bins <= 20 else np.linspace(0, 100, 11))
  ax.set_ylim(0, max(counts.max(initial=0) * 1.12, 1))
  ax.yaxis.get_major_locator().set_params(integer=True)
  ax.grid(True, axis="y", alpha=0.3)
  ax.set_axisbelow(True)
  fig.savefig(path)


def write(out_dir: str, *, questions, paths, drops, datasets, band, image_root, examples: int = 6) -> dict:
  os.makedirs(out_dir, exist_ok=True)
  bands = collections.Counter(band(p) for p in paths)
  counts = {
      "questions": len(questions),
      "paths": len(paths),
      "paths_dropped": dict(drops),
      "answer_correct": sum(1 for p in paths if p.scores.get("answer_correct")),
      "bands": dict(bands),
      "datasets": {k: len(v) for k, v in datasets.items()},
  }
  scores = [p.scores["reasoning"] for p in paths if "reasoning" in p.scores]
  histogram_png(scores, os.path.join(out_dir, "scores.png"))
  qmap = {q.id: q for q in questions}
  lines = ["# Data generation report", "", "| stage | count |", "|---|---|",
           f"| questions | {counts['questions']} |", f"| paths kept | {counts['paths']} |",
           f"| paths dropped | {sum(drops.values())} {dict(drops) or ''} |",
           f"| correct final answer | {counts['answer_correct']} |"]
  lines += [f"| band {b} | {n} |" for b, n in sorted(bands.items())]
  lines += [f"| dataset {k} | {n} |" for k, n in counts["datasets"].items()]
  lines += ["", "![scores](scores.png)", "", "Example chains: examples.html"]
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  parts = ["<html><body><h1>Example reasoning paths</h1>"]
  for p in sorted(paths, key=lambda p: p.id)[:examples]:
    q = qmap.get(p.question_id)
    img = ""
    if q is not None and q.images:
      data = q.images[0].read(image_root)
      img = f'<img width="160" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
    parts.append(f"<h3>{html.escape(p.id)} [{band(p)}; scores {html.escape(str(p.scores))}]</h3>{img}"
                 f"<p><b>{html.escape(q.question if q else '')}</b> (gold {html.escape(q.answer if q else '')},"
                 f" final {html.escape(p.final_answer)})</p><pre>{html.escape(prompts.format_chain(p.steps))}</pre>")
  parts.append("</body></html>")
  with open(os.path.join(out_dir, "examples.html"), "w") as f:
    f.write("\n".join(parts))
  return counts
