"""The demo's report: report.md with accuracy per stage, and PNG plots (training curves, accuracy bars)."""

from __future__ import annotations

import json
import os
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

DPI = 100  # `size` arguments are in pixels at this resolution


def _figure(size) -> Figure:
  """A figure drawn by the Agg canvas: no display, no pyplot state (nothing global to close or leak)."""
  fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _read_curve(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def curves_png(curves: dict[str, list], path: str, size=(800, 450)):
  """Training loss against optimizer step, one line per run ({name: [(step, loss), ...]}).

  The loss axis is logarithmic when the losses span more than a factor of 10 (SFT losses fall from ~2 to ~0.01,
  which a linear axis flattens into the floor).
  """
  fig = _figure(size)
  ax = fig.subplots()
  ax.set_title("Training loss")
  ax.set_xlabel("training step (optimizer updates)")
  ax.set_ylabel("loss (nats; SFT: per token, DPO: per pair)")
  losses = [v for c in curves.values() for _, v in c]
  for name, c in curves.items():
    if c:
      steps, vals = zip(*c)
      ax.plot(steps, vals, label=name, linewidth=1.8, marker="o" if len(c) <= 25 else None, markersize=3)
  if losses:
    if min(losses) > 0 and max(losses) / min(losses) > 10:
      ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="run", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never on a curve
  else:
    ax.text(0.5, 0.5, "no training metrics found", ha="center", va="center", transform=ax.transAxes)
  fig.savefig(path)


def bars_png(values: dict[str, float], path: str, size=(800, None)):
  """Accuracy per system ({name: fraction correct in [0, 1]}) as horizontal bars, names wrapped on the left,
  the value at the end of each bar. The height grows with the number of systems when size[1] is None."""
  names = ["\n".join(textwrap.wrap(n, 30)) or n for n in values]
  height = size[1] or 110 + 50 * max(len(values), 1) + 12 * sum(n.count("\n") for n in names)
  fig = _figure((size[0], height))
  ax = fig.subplots()
  ax.set_title("Accuracy on held-out questions")
  ax.set_xlabel("accuracy (% of held-out questions answered correctly)")
  if values:
    colours = [f"C{i % 10}" for i in range(len(values))]
    bars = ax.barh(range(len(values)), [100 * v for v in values.values()], color=colours, height=0.7)
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in values.values()], padding=3)
    ax.set_yticks(range(len(values)), names)
    ax.invert_yaxis()  # first system on top, in the order of the report's table
  else:
    ax.set_yticks([])
    ax.text(0.5, 0.5, "no systems evaluated", ha="center", va="center", transform=ax.transAxes)
  ax.set_xlim(0, 113)  # room for a "100.0%" label
  ax.set_xticks(range(0, 101, 20))
  ax.xaxis.set_major_formatter(PercentFormatter(100))
  ax.grid(True, axis="x", alpha=0.3)
  ax.set_axisbelow(True)
  fig.savefig(path)


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
