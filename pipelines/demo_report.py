"""The demo's report over seeds: report.md + report.json, and PNG plots (accuracy per system and question type,
chain accuracy per DPO round, training curves). Statistics: pipelines/demo_stats.py."""

from __future__ import annotations

import json
import os
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from data_gen.synthetic.world import PERCEPTION_KINDS
from pipelines import demo_stats
from pipelines.demo_seed import Paths, systems
from pipelines.demo_stats import Cell, pct

DPI = 100  # `size` arguments are in pixels at this resolution
SPLITS = ("reasoning", "perception", "all")


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


def rounds_png(per_round: list[Cell], path: str, size=(700, 400)):
  """Chain accuracy per DPO round: one thin line per seed, the mean in bold with the Wilson 95% band."""
  fig = _figure(size)
  ax = fig.subplots()
  ax.set_title("Reasoning agent: chains reaching the right answer (sampled at the DPO temperature)")
  ax.set_xlabel("DPO round (0 = after SFT)")
  ax.set_ylabel("chain accuracy")
  xs = list(range(len(per_round)))
  for s in range(min((c.seeds for c in per_round), default=0)):
    ax.plot(xs, [100 * c.per_seed[s] for c in per_round], color="0.6", linewidth=1, marker=".")
  ax.fill_between(xs, [100 * c.wilson[0] for c in per_round], [100 * c.wilson[1] for c in per_round], color="C0",
                  alpha=0.2, label="Wilson 95% (pooled)")
  ax.plot(xs, [100 * c.mean for c in per_round], color="C0", linewidth=2.5, marker="o", label="mean over seeds")
  ax.set_xticks(xs)
  ax.yaxis.set_major_formatter(PercentFormatter(100))
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
  fig.savefig(path)


# ---------------------------------------------------------------------------------------------------- report

def _split(category: str) -> str:
  return "perception" if category in PERCEPTION_KINDS else "reasoning"


def tables(results: list[dict], rounds: int):
  """Per-seed results.json contents -> ({system: {split: Cell}}, [Cell per round 0..K])."""
  table = {}
  for key in systems(rounds):
    table[key] = {split: demo_stats.summarise({
        r["seed"]: [row["correct"] for row in r["systems"][key] if split == "all" or _split(row["category"]) == split]
        for r in results}) for split in SPLITS}
  chains = [demo_stats.summarise({r["seed"]: r["chains"][str(k)] for r in results}) for k in range(rounds + 1)]
  return table, chains


def _row(label: str, c: Cell) -> str:
  lo, hi = c.wilson
  return (f"| {label} | {pct(c.mean)} ± {pct(c.std)} | {pct(c.lo)}-{pct(c.hi)} | {c.seeds} | {c.k}/{c.n} | "
          f"{pct(lo)}-{pct(hi)} |")


HEADER = ["| {first} | mean ± std (%) | min-max (%) | seeds | pooled correct | Wilson 95% (%) |",
          "|---|---|---|---|---|---|"]


def claims(table: dict[str, dict[str, Cell]], chains: list[Cell], rounds: int) -> list[str]:
  """The issue's claims, each checked against the table ("holds": intervals apart; "overlaps"; "fails")."""
  final = f"dpo_{rounds}" if rounds else "two_agents"
  lab = systems(rounds)
  out = []
  steps = [("direct", "cot"), ("cot", "two_agents"), ("two_agents", final)]
  for a, b in steps:
    if a != b:
      ca, cb = table[a]["reasoning"], table[b]["reasoning"]
      out.append(f"- reasoning: {lab[a]} < {lab[b]}: **{demo_stats.compare(ca, cb)}** ({pct(ca.mean)} vs "
                 f"{pct(cb.mean)})")
  for b in ("two_agents", final, "cot"):
    out.append(f"- perception: {lab[b]} not worse than {lab['direct']}: "
               f"**{demo_stats.not_worse(table['direct']['perception'], table[b]['perception'])}** "
               f"({pct(table[b]['perception'].mean)} vs {pct(table['direct']['perception'].mean)})")
  for k in range(1, len(chains)):
    out.append(f"- chain accuracy, round {k - 1} < round {k}: **{demo_stats.compare(chains[k - 1], chains[k])}** "
               f"({pct(chains[k - 1].mean)} vs {pct(chains[k].mean)})")
  return out


def write_report(wd: str, cfg, *, seeds: list[int], task: str, timings: dict[str, float]) -> dict:
  p = Paths(wd)
  rounds = cfg.dpo_iterative.rounds
  results = []
  for s in seeds:
    with open(p.seed(s, "eval", "results.json")) as f:
      results.append(json.load(f))
  table, chains = tables(results, rounds)
  labels = systems(rounds)
  accuracy_png(table, labels, os.path.join(wd, "accuracy.png"))
  rounds_png(chains, os.path.join(wd, "dpo_rounds.png"))
  curves = {name: _read_curve(p.seed(seeds[0], name, "metrics.jsonl")) for name in ("reasoning", "summary", "direct",
                                                                                        "cot")}
  curves.update({f"dpo round {k}": _read_curve(p.seed(seeds[0], "dpo", f"round_{k}", "train", "metrics.jsonl"))
                 for k in range(1, rounds + 1)})
  curves_png(curves, os.path.join(wd, "training_curves.png"))
  with open(os.path.join(p.gen, "report", "counts.json")) as f:
    counts = json.load(f)

  n_q = {split: table["direct"][split].n // max(len(seeds), 1) for split in SPLITS}
  lines = ["# Insight-V demo report", "", f"Synthetic world: {task}.",
           f"Seeds {seeds} (model init and data order; the generated data is shared). Every number below was "
           "measured in this run. Spread over seeds: mean ± sample std and min-max of the per-seed accuracies. "
           "Test-set sampling: the Wilson 95% interval of all seeds' answers pooled (the same questions for "
           "every seed).", ""]
  for split in SPLITS:
    lines += [f"## Accuracy on held-out {split} questions ({n_q[split]} questions per seed)", "",
              *(h.format(first="system") for h in HEADER)]
    lines += [_row(labels[k], table[k][split]) for k in table]
    lines.append("")
  lines += ["![accuracy](accuracy.png)", "", "## What the table shows", "",
            "holds: the second interval lies above the first (not worse: no interval below); overlaps: the mean "
            "moves the right way but the intervals overlap; fails: it does not.", ""]
  lines += claims(table, chains, rounds)
  lines += ["", "## Reasoning agent per DPO round", "",
            f"Chains sampled at temperature {cfg.dpo_iterative.sample_temperature} (top-p "
            f"{cfg.dpo_iterative.datagen.progressive.top_p}) on the held-out reasoning questions, "
            f"{cfg.chain_samples} per question, scored for reaching the right total; round 0 is the SFT agent.", "",
            *(h.format(first="round") for h in HEADER)]
  lines += [_row(str(k), c) for k, c in enumerate(chains)]
  lines += ["", "| round | DPO pairs (per seed) | sampled chains correct on the round's DPO questions (per seed) |",
            "|---|---|---|"]
  for k in range(1, rounds + 1):
    d = [next(x for x in r["dpo"] if x["round"] == k) for r in results]
    correct = [pct(x["sampled_correct"] / max(x["sampled"], 1)) + "%" for x in d]
    lines.append(f"| {k} | {', '.join(str(x['pairs']) for x in d)} | {', '.join(correct)} |")
  lines += ["", "![dpo rounds](dpo_rounds.png)", "", f"## Training (seed {seeds[0]})", "",
            "![curves](training_curves.png)", "",
            "## Data generation", "", f"questions {counts['questions']}, paths {counts['paths']}, dropped "
            f"{counts['paths_dropped']}, bands {counts['bands']}, datasets {counts['datasets']} "
            "(details: datagen/report/report.md)", "",
            "## Time", "", "| stage | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
  with open(os.path.join(wd, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  summary = {"systems": {labels[k]: {s: c.to_json() for s, c in v.items()} for k, v in table.items()},
             "chain_accuracy": [c.to_json() for c in chains], "timings": timings, "seeds": seeds}
  with open(os.path.join(wd, "report.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
