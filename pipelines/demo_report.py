"""The demo's report: report.md with accuracy per stage, and PNG plots (training curves, accuracy bars)."""

from __future__ import annotations

import json
import os
import textwrap

from PIL import Image, ImageDraw

COLOURS = [(40, 90, 200), (220, 60, 40), (40, 160, 70), (150, 60, 170), (230, 150, 20), (20, 160, 170),
           (120, 120, 120)]


def _read_curve(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f)]


def curves_png(curves: dict[str, list], path: str, size=(640, 360)):
  w, h = size
  img = Image.new("RGB", size, "white")
  d = ImageDraw.Draw(img)
  m = 40
  pts = [p for c in curves.values() for p in c]
  if not pts:
    img.save(path)
    return
  max_step = max(s for s, _ in pts) or 1
  lo, hi = min(v for _, v in pts), max(v for _, v in pts)
  hi = hi if hi > lo else lo + 1
  d.rectangle((m, m, w - m, h - m), outline="black")
  for i, (name, c) in enumerate(curves.items()):
    col = COLOURS[i % len(COLOURS)]
    xy = [(m + (w - 2 * m) * s / max_step, h - m - (h - 2 * m) * (v - lo) / (hi - lo)) for s, v in c]
    if len(xy) > 1:
      d.line(xy, fill=col, width=2)
    d.text((w - m - 150, m + 4 + 12 * i), name, fill=col)
  d.text((m, 8), f"training loss (y: {lo:.2f} .. {hi:.2f}; x: steps, up to {max_step})", fill="black")
  img.save(path)


def bars_png(values: dict[str, float], path: str, size=(640, 300)):
  w, h = size
  img = Image.new("RGB", size, "white")
  d = ImageDraw.Draw(img)
  m, n = 30, max(len(values), 1)
  bw = (w - 2 * m) / n
  for i, (name, v) in enumerate(values.items()):
    x0 = m + i * bw + 6
    y0 = h - 60 - (h - 100) * v
    d.rectangle((x0, y0, x0 + bw - 12, h - 60), fill=COLOURS[i % len(COLOURS)])
    d.text((x0, y0 - 14), f"{v:.1%}", fill="black")
    for k, line in enumerate(textwrap.wrap(name, max(int((bw - 8) // 6), 8))[:4]):  # ~6 px per character
      d.text((x0, h - 56 + 12 * k), line, fill="black")
  d.text((m, 6), "accuracy on held-out questions", fill="black")
  img.save(path)


def write_report(wd: str, *, task: str, accuracy: dict[str, float], timings: dict[str, float], dpo_rounds,
                 curves) -> dict:
  curves_png({k: _read_curve(v) for k, v in curves.items()}, os.path.join(wd, "training_curves.png"))
  bars_png(accuracy, os.path.join(wd, "accuracy.png"))
  with open(os.path.join(wd, "datagen", "report", "counts.json")) as f:
    counts = json.load(f)
  lines = ["# Insight-V demo report", "",
           f"Synthetic task: {task}.",
           "All numbers below were measured in this run.", "", "## Accuracy on held-out questions", "",
           "| system | accuracy |", "|---|---|"]
  lines += [f"| {k} | {v:.1%} |" for k, v in accuracy.items()]
  lines += ["", "![accuracy](accuracy.png)", "", "## Training", "", "![curves](training_curves.png)", "",
            "## Data generation", "", f"questions {counts['questions']}, paths {counts['paths']}, dropped "
            f"{counts['paths_dropped']}, bands {counts['bands']}, datasets {counts['datasets']} "
            "(details: datagen/report/report.md)", ""]
  for r in dpo_rounds:
    lines.append(f"- DPO round {r['round']}: {r['pairs']} preference pairs from the reasoning agent's own samples")
  lines += ["", "## Time", "", "| stage | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
  with open(os.path.join(wd, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return {"accuracy": accuracy, "timings": timings}
