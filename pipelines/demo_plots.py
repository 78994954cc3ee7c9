"""The demo's plots (PNG, drawn by the Agg canvas: no display, no pyplot state): accuracy per system and question
type, chain accuracy against the sampling budget (DPO rounds, GRPO points), GRPO training accuracy per rollout,
training losses. Called by pipelines/demo_report.py."""

from __future__ import annotations

import json
import os
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from pipelines.demo_stats import Cell, pct

DPI = 100  # `size` arguments are in pixels at this resolution
SPLITS = ("reasoning", "perception", "all")


def _figure(size) -> Figure:
  """A figure drawn by the Agg canvas: no display, no pyplot state (nothing global to close or leak)."""
  fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def read_curve(path):
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


def accuracy_png(table: dict[str, dict[str, Cell]], labels: dict[str, str], path: str, width: int = 900):
  """Accuracy per system (rows) and question type (one bar colour per split): the bar is the mean over seeds,
  the black line min-max over seeds, the grey band the Wilson 95% interval of the pooled answers."""
  splits = [s for s in SPLITS if any(table[k][s].n for k in table)]
  names = ["\n".join(textwrap.wrap(labels[k], 28)) for k in table]
  fig = _figure((width, 140 + 34 * len(table) * len(splits)))
  ax = fig.subplots()
  ax.set_title("Accuracy on held-out questions (mean over seeds; line: min-max; band: Wilson 95%)")
  ax.set_xlabel("accuracy")
  h = 0.8 / max(len(splits), 1)
  for j, split in enumerate(splits):
    ys = [i + (j - (len(splits) - 1) / 2) * h for i in range(len(table))]
    cells = [table[k][split] for k in table]
    ax.barh(ys, [100 * c.mean for c in cells], height=h * 0.9, color=f"C{j}", label=f"{split} questions")
    for y, c in zip(ys, cells):
      if c.n:
        lo, hi = c.wilson
        ax.fill_betweenx([y - h * 0.45, y + h * 0.45], 100 * lo, 100 * hi, color="0.5", alpha=0.35, linewidth=0)
        ax.plot([100 * c.lo, 100 * c.hi], [y, y], color="black", linewidth=1.5)
        ax.text(100 * c.mean + 1, y, f"{pct(c.mean)}", va="center", fontsize="small")
  ax.set_yticks(range(len(table)), names)
  ax.invert_yaxis()  # first system on top, in the order of the report's table
  ax.set_xlim(0, 108)
  ax.set_xticks(range(0, 101, 20))
  ax.xaxis.set_major_formatter(PercentFormatter(100))
  ax.grid(True, axis="x", alpha=0.3)
  ax.set_axisbelow(True)
  ax.legend(fontsize="small", loc="lower right")
  fig.savefig(path)


def budget_png(stages: dict[str, list[tuple[int, Cell]]], path: str, size=(760, 430)):
  """Chain accuracy against the sampling budget (chains sampled so far), one colour per method ({method: [(budget,
  Cell), ...]}, each starting at the SFT agent, budget 0): thin lines per seed, the mean in bold with the Wilson
  95% band of the pooled chains."""
  fig = _figure(size)
  ax = fig.subplots()
  ax.set_title("Reasoning agent past SFT: sampled chains reaching the right answer")
  ax.set_xlabel("chains sampled for training so far (questions x chains per question)")
  ax.set_ylabel("chain accuracy, held-out questions")
  for j, (name, points) in enumerate(stages.items()):
    xs = [b for b, _ in points]
    cells = [c for _, c in points]
    for s in range(min((c.seeds for c in cells), default=0)):
      ax.plot(xs, [100 * c.per_seed[s] for c in cells], color=f"C{j}", alpha=0.35, linewidth=1, marker=".")
    ax.fill_between(xs, [100 * c.wilson[0] for c in cells], [100 * c.wilson[1] for c in cells], color=f"C{j}",
                    alpha=0.15)
    ax.plot(xs, [100 * c.mean for c in cells], color=f"C{j}", linewidth=2.5, marker="o",
            label=f"{name} (mean over seeds; band: Wilson 95%)")
  ax.yaxis.set_major_formatter(PercentFormatter(100))
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
  fig.savefig(path)


def rl_png(runs: dict[str, list[list[tuple[int, float]]]], seeds: list[int], path: str, size=(760, 400)):
  """GRPO training accuracy (answer reward mean over each rollout's replies) per rollout, one panel per run
  ({run: [[(step, accuracy), ...] per seed]}, seeds in the order of `seeds`)."""
  fig = _figure(size)
  axes = fig.subplots(1, max(len(runs), 1), squeeze=False)[0]
  for ax, (name, per_seed) in zip(axes, runs.items()):
    ax.set_title(name, fontsize="medium")
    ax.set_xlabel("rollout (optimizer step)")
    ax.set_ylabel("replies rewarded right")
    for s, (seed, rows) in enumerate(zip(seeds, per_seed)):
      if rows:
        ax.plot(*zip(*rows), color=f"C{s}", linewidth=1.2, label=f"seed {seed}")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
  fig.savefig(path)


# ---------------------------------------------------------------------------------------------------- report
