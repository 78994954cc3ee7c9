"""The demo's report over seeds: report.md + report.json (tables, the claims judged) and the PNG plots
(pipelines/demo_plots.py). Statistics: pipelines/demo_stats.py.

Reads each seed's results (pipelines/demo_eval.py `read_results`: eval/results.json and chains/results.json):
{"systems": {key: [{id, category, correct}]}, "chains": {stage: [bool per sampled chain]} (stage: sft, dpo_<k>,
grpo_<k>), "dpo": [per-round pair counts], "grpo" / "summary_rl": [{step, accuracy}] per rollout}.
"""

from __future__ import annotations

import json
import os

from data_gen.synthetic.world import PERCEPTION_KINDS
from pipelines import demo_plots, demo_rl, demo_stats
from pipelines.demo_eval import read_results, systems
from pipelines.demo_plots import SPLITS
from pipelines.demo_seed import Paths
from pipelines.demo_stats import Cell, pct


def _split(category: str) -> str:
  return "perception" if category in PERCEPTION_KINDS else "reasoning"


def tables(results: list[dict], cfg):
  """Per-seed results.json contents -> ({system: {split: Cell}}, {stage: Cell}) (stages: sft, dpo_<k>, grpo_<k>)."""
  table = {}
  for key in systems(cfg):
    table[key] = {split: demo_stats.summarise({
        r["seed"]: [row["correct"] for row in r["systems"][key] if split == "all" or _split(row["category"]) == split]
        for r in results}) for split in SPLITS}
  chains = {stage: demo_stats.summarise({r["seed"]: r["chains"][stage] for r in results})
            for stage in results[0]["chains"]}
  return table, chains


def stages(cfg, chains: dict[str, Cell]) -> dict[str, list[tuple[int, Cell]]]:
  """{method: [(chains sampled, Cell), ...]} from the SFT agent (budget 0) on: "iterative DPO", "GRPO"."""
  out = {"iterative DPO": [(0, chains["sft"])], "GRPO": [(0, chains["sft"])]}
  for k in range(1, cfg.dpo_iterative.rounds + 1):
    out["iterative DPO"].append((demo_rl.budget_at(cfg, k), chains[f"dpo_{k}"]))
  for k in range(1, cfg.grpo_points + 1):
    out["GRPO"].append((demo_rl.budget_at(cfg, k), chains[f"grpo_{k}"]))
  return out


def _row(label: str, c: Cell) -> str:
  lo, hi = c.wilson
  return (f"| {label} | {pct(c.mean)} ± {pct(c.std)} | {pct(c.lo)}-{pct(c.hi)} | {c.seeds} | {c.k}/{c.n} | "
          f"{pct(lo)}-{pct(hi)} |")


HEADER = ["| {first} | mean ± std (%) | min-max (%) | seeds | pooled correct | Wilson 95% (%) |",
          "|---|---|---|---|---|---|"]


def _claim(text: str, verdict: str, a: Cell, b: Cell) -> str:
  return f"- {text}: **{verdict}** ({pct(a.mean)} vs {pct(b.mean)})"


def claims(table: dict[str, dict[str, Cell]], chains: dict[str, Cell], cfg) -> list[str]:
  """The paper's claims and GRPO vs DPO, each judged from the intervals ("holds": the second Wilson interval lies
  above the first; "overlaps"; "fails"; perception: "not worse")."""
  lab = systems(cfg)
  r, k = cfg.dpo_iterative.rounds, cfg.grpo_points
  out = ["**Steps beat a direct answer** (reasoning questions)"]
  for a, b in (("direct", "cot"), ("direct", "two_agents")):
    ca, cb = table[a]["reasoning"], table[b]["reasoning"]
    out.append(_claim(f"{lab[a]} < {lab[b]}", demo_stats.compare(ca, cb), ca, cb))
  out.append("\n**Two agents beat one model writing chain and answer** (reasoning questions)")
  for b in [x for x in ("two_agents", "summary_rl", "grpo_summary_rl") if x in lab]:
    ca, cb = table["cot"]["reasoning"], table[b]["reasoning"]
    out.append(_claim(f"{lab['cot']} < {lab[b]}", demo_stats.compare(ca, cb), ca, cb))
  ca, cb = table["two_agents"]["reasoning"], table["summary_rl"]["reasoning"]
  out.append(_claim(f"the summary agent's J-GRPO stage: {lab['two_agents']} < {lab['summary_rl']}",
                    demo_stats.compare(ca, cb), ca, cb))
  out.append("\n**Training past SFT improves the reasoning agent** (sampled chain accuracy, held-out questions)")
  order = ["sft"] + [f"dpo_{i}" for i in range(1, r + 1)]
  for a, b in zip(order, order[1:]):
    out.append(_claim(f"DPO: {a} < {b}", demo_stats.compare(chains[a], chains[b]), chains[a], chains[b]))
  if r > 1:
    out.append(_claim(f"DPO: sft < dpo_{r}", demo_stats.compare(chains["sft"], chains[f"dpo_{r}"]), chains["sft"],
                      chains[f"dpo_{r}"]))
  if r:
    ca, cb = table["two_agents"]["reasoning"], table["dpo"]["reasoning"]
    out.append(_claim(f"two agents: {lab['two_agents']} < {lab['dpo']}", demo_stats.compare(ca, cb), ca, cb))
  if k:
    out.append(_claim(f"GRPO: sft < grpo_{k}", demo_stats.compare(chains["sft"], chains[f"grpo_{k}"]), chains["sft"],
                      chains[f"grpo_{k}"]))
    ca, cb = table["two_agents"]["reasoning"], table["grpo"]["reasoning"]
    out.append(_claim(f"two agents: {lab['two_agents']} < {lab['grpo']}", demo_stats.compare(ca, cb), ca, cb))
  if r and k:
    n = min(r, k)
    out.append(f"\n**GRPO vs iterative DPO at the same budget ({demo_rl.budget_at(cfg, n)} chains sampled)**")
    d, g = chains[f"dpo_{n}"], chains[f"grpo_{n}"]
    out.append(_claim(f"dpo_{n} < grpo_{n}", demo_stats.compare(d, g), d, g))
    out.append(_claim(f"grpo_{n} < dpo_{n}", demo_stats.compare(g, d), g, d))
    wins = ["GRPO" if x > y else "DPO" if y > x else "tie" for x, y in zip(g.per_seed, d.per_seed)]
    out.append(f"- further per seed: {', '.join(wins)}")
  out.append("\n**Perception holds** (perception questions: not worse than the direct answer)")
  for b in [x for x in ("two_agents", "summary_rl", "dpo", "grpo", "grpo_summary_rl", "cot") if x in lab]:
    ca, cb = table["direct"]["perception"], table[b]["perception"]
    out.append(_claim(f"{lab[b]} not worse than {lab['direct']}", demo_stats.not_worse(ca, cb), cb, ca))
  return out


def write_report(wd: str, cfg, *, seeds: list[int], task: str, timings: dict[str, float]) -> dict:
  p = Paths(wd)
  rounds = cfg.dpo_iterative.rounds
  results = [read_results(wd, s) for s in seeds]
  table, chains = tables(results, cfg)
  labels = systems(cfg)
  curve = stages(cfg, chains)
  demo_plots.accuracy_png(table, labels, os.path.join(wd, "accuracy.png"))
  demo_plots.budget_png(curve, os.path.join(wd, "budget.png"))
  rl = {"GRPO, reasoning agent": [[(x["step"], x["accuracy"]) for x in r["grpo"]] for r in results],
        "J-GRPO, summary agent": [[(x["step"], x["accuracy"]) for x in r["summary_rl"]] for r in results]}
  demo_plots.rl_png(rl, seeds, os.path.join(wd, "rl_training.png"))
  read = demo_plots.read_curve
  curves = {name: read(p.seed(seeds[0], name, "metrics.jsonl")) for name in ("reasoning", "summary", "direct", "cot")}
  curves.update({f"dpo round {k}": read(p.seed(seeds[0], "dpo", f"round_{k}", "train", "metrics.jsonl"))
                 for k in range(1, rounds + 1)})
  demo_plots.curves_png(curves, os.path.join(wd, "training_curves.png"))
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
  lines += ["![accuracy](accuracy.png)", "", "## The claims, judged", "",
            "holds: the second interval lies above the first (not worse: no interval below); overlaps: the mean "
            "moves the right way but the intervals overlap; fails: it does not.", ""]
  lines += claims(table, chains, cfg)
  t = cfg.dpo_iterative
  lines += ["", "## Reasoning agent past SFT: chain accuracy against the sampling budget", "",
            f"Chains sampled at temperature {t.sample_temperature} (top-p {t.datagen.progressive.top_p}) on the "
            f"held-out reasoning questions, {cfg.chain_samples} per question, scored for reaching the right answer. "
            f"Budget: chains sampled for training so far. A DPO round samples {demo_rl.round_budget(cfg)} chains "
            f"({demo_rl.dpo_questions(cfg)} questions x {t.datagen.progressive.paths_per_question}); GRPO (answer "
            f"reward, {cfg.grpo.grpo.questions_per_step} questions x {cfg.grpo.grpo.num_generations} replies per "
            f"rollout, lr {cfg.grpo.optim.lr:g}) samples as many every {demo_rl.grpo_steps_per_point(cfg)} rollouts, "
            "on the same questions.", "", *(h.format(first="stage (chains sampled)") for h in HEADER)]
  for name, points in curve.items():
    lines += [_row(f"{name} ({b})" if b else "SFT (0)", c) for b, c in (points if name == "iterative DPO" else
                                                                         points[1:])]
  lines += ["", "![budget](budget.png)", "",
            "| DPO round | pairs (per seed) | sampled chains right on the round's questions (per seed) |",
            "|---|---|---|"]
  for k in range(1, rounds + 1):
    d = [next(x for x in r["dpo"] if x["round"] == k) for r in results]
    correct = [pct(x["sampled_correct"] / max(x["sampled"], 1)) + "%" for x in d]
    lines.append(f"| {k} | {', '.join(str(x['pairs']) for x in d)} | {', '.join(correct)} |")
  lines += ["", "## RL training (answer reward per rollout)", "",
            "| run | first rollout (per seed) | mean of the last 5 rollouts (per seed) |", "|---|---|---|"]
  for name, per_seed in rl.items():
    first = [pct(rows[0][1]) if rows else "n/a" for rows in per_seed]
    last = [pct(sum(a for _, a in rows[-5:]) / len(rows[-5:])) if rows else "n/a" for rows in per_seed]
    lines.append(f"| {name} | {', '.join(first)} | {', '.join(last)} |")
  lines += ["", "![rl](rl_training.png)", "", f"## Training losses (seed {seeds[0]})", "",
            "![curves](training_curves.png)", "",
            "## Data generation", "", f"questions {counts['questions']}, paths {counts['paths']}, dropped "
            f"{counts['paths_dropped']}, bands {counts['bands']}, datasets {counts['datasets']} "
            "(details: datagen/report/report.md)", "",
            "## Time", "", "| stage | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
  with open(os.path.join(wd, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  summary = {"systems": {labels[k]: {s: c.to_json() for s, c in v.items()} for k, v in table.items()},
             "chain_accuracy": {name: [{"chains_sampled": b, **c.to_json()} for b, c in pts]
                                for name, pts in curve.items()},
             "timings": timings, "seeds": seeds}
  with open(os.path.join(wd, "report.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
