"""The demo pipeline (pipelines/demo.py) end to end on a tiny config: shared data, one seed of every job (SFT, one
DPO round, one GRPO point, J-GRPO of the summary agent), the evaluation and the report; the report over several
seeds from written results. The demo's own config is only shrunk, never rewritten, so this guards the code path
`make demo` takes."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from conftest import ROOT


def tiny_demo_config():
  spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.seeds, c.workers = 1, 1  # the report over several seeds: test_the_report_over_seeds (no models)
  c.summary_slips = 1.0  # the slipped-chain records too
  c.n_train, c.n_test, c.chain_samples = 16, 12, 1
  c.datagen.chunk_questions = 16
  c.datagen.progressive.paths_per_question = 2
  for job in ("reasoning", "summary", "direct", "cot"):  # one shape and schedule: one compiled step
    c[job].optim.total_steps, c[job].optim.lr = 2, 1e-3
    c[job].data.batch_size, c[job].data.max_len, c[job].loss_chunk = 4, 192, 192
  c.eval_batch_size = 8
  c.reasoning_max_new_tokens = 16
  i = c.dpo_iterative
  i.rounds = 1
  i.sampler = "scripted"  # the teacher's chains (with mistakes): pairs exist whatever the tiny policy writes
  i.datagen.questions = "synthetic:4"  # 4 x 2 = 8 chains per round = 2 GRPO rollouts of 2 questions x 2 replies
  i.datagen.progressive.paths_per_question = 2
  i.epochs, i.train.optim.total_steps = 0.0, 2
  i.train.data.batch_size = 2
  c.grpo_points = 1
  for rl in (c.grpo, c.summary_rl):  # one shape: one compiled GRPO step and sampler
    rl.grpo.questions_per_step, rl.grpo.num_generations, rl.grpo.max_new_tokens = 2, 2, 16
    rl.data.max_len = rl.loss_chunk = 256  # prompt (a summary prompt holds a chain) + 2 x 17 reply slots
  c.summary_rl.optim.total_steps = 2
  return c


def test_demo_runs_every_stage(tmp_path):
  from pipelines.demo import run_demo

  wd = str(tmp_path / "demo")
  out = run_demo(tiny_demo_config(), wd)
  report = open(os.path.join(wd, "report.md")).read()
  for split in ("reasoning", "perception", "all"):
    assert f"## Accuracy on held-out {split} questions" in report
  for label in ("two agents, reasoner after DPO round 1", "two agents, summary agent after J-GRPO",
                "two agents, reasoner after GRPO (8 chains)", "two agents, GRPO reasoner + J-GRPO summary agent"):
    assert f"| {label} |" in report
  assert "| SFT (0) |" in report and "| iterative DPO (8) |" in report and "| GRPO (8) |" in report
  for png in ("accuracy.png", "budget.png", "rl_training.png", "training_curves.png"):
    assert os.path.getsize(os.path.join(wd, png)) > 1000
  with open(os.path.join(wd, "report.json")) as f:
    saved = json.load(f)
  assert saved["seeds"] == [0] and out["chain_accuracy"] == saved["chain_accuracy"]
  two = saved["systems"]["two agents (SFT)"]
  assert two["all"]["n"] == 12 and two["reasoning"]["n"] + two["perception"]["n"] == 12
  assert [p["chains_sampled"] for p in saved["chain_accuracy"]["GRPO"]] == [0, 8]
  assert os.path.isdir(os.path.join(wd, "seed_0", "grpo", "point_1"))  # GRPO's model after 2 rollouts
  with open(os.path.join(wd, "seed_0", "summary_rl", "metrics.jsonl")) as f:  # the J-GRPO run: 2 rollouts
    assert [json.loads(line)["step"] for line in f] == [1, 2]


def _answers(n: int, right: int) -> list[bool]:
  return [i < right for i in range(n)]


def test_the_report_over_seeds(tmp_path):
  """write_report over 3 seeds' eval and chains results.json (written here, no models): mean ± std, Wilson, the
  budget table and the claims judged from the intervals."""
  from pipelines.demo_eval import systems
  from pipelines.demo_report import write_report
  from pipelines.demo_seed import Paths

  cfg = tiny_demo_config()
  cfg.seeds = 3
  wd = str(tmp_path)
  p = Paths(wd)
  os.makedirs(os.path.join(p.gen, "report"))
  with open(os.path.join(p.gen, "report", "counts.json"), "w") as f:
    json.dump({"questions": 16, "paths": 32, "paths_dropped": {}, "bands": {}, "datasets": {}}, f)
  # right answers out of 100 reasoning / 50 perception questions per system (seed s adds s)
  right = {"direct": (20, 30), "cot": (60, 35), "summary_alone": (20, 30), "two_agents": (90, 35),
           "summary_rl": (95, 36), "dpo": (90, 35), "grpo": (97, 36), "grpo_summary_rl": (98, 36)}
  chains = {"sft": 50, "dpo_1": 55, "grpo_1": 80}
  for s in range(3):
    rows = {k: [{"id": f"q{i}", "category": "count", "correct": c} for i, c in enumerate(_answers(100, r + s))] +
            [{"id": f"p{i}", "category": "cell_colour", "correct": c} for i, c in enumerate(_answers(50, q))]
            for k, (r, q) in right.items()}
    assert set(rows) == set(systems(cfg))
    os.makedirs(p.seed(s, "eval"))
    os.makedirs(p.seed(s, "chains"))
    with open(p.seed(s, "eval", "results.json"), "w") as f:
      json.dump({"seed": s, "systems": rows, "grpo": [{"step": 1, "accuracy": 0.5}, {"step": 2, "accuracy": 0.75}],
                 "summary_rl": [{"step": 1, "accuracy": 0.25}]}, f)
    with open(p.seed(s, "chains", "results.json"), "w") as f:
      json.dump({"seed": s, "chains": {k: _answers(100, v + s) for k, v in chains.items()},
                 "dpo": [{"round": 1, "pairs": 40 + s, "sampled": 8, "sampled_correct": 4}]}, f)
  out = write_report(wd, cfg, seeds=[0, 1, 2], task="tiny", timings={"total": 1.0})
  report = open(os.path.join(wd, "report.md")).read()
  assert "| two agents (SFT) | 91.0 ± 1.0 | 90.0-92.0 | 3 | 273/300 |" in report
  assert "- direct answer (baseline) < chain-of-thought, one model (baseline): **holds** (21.0 vs 61.0)" in report
  assert "- DPO: sft < dpo_1: **overlaps** (51.0 vs 56.0)" in report
  assert "- GRPO: sft < grpo_1: **holds** (51.0 vs 81.0)" in report
  assert "- dpo_1 < grpo_1: **holds** (56.0 vs 81.0)" in report and "- further per seed: GRPO, GRPO, GRPO" in report
  assert "- grpo_1 < dpo_1: **fails**" in report
  assert "| 1 | 40, 41, 42 | 50.0%, 50.0%, 50.0% |" in report  # DPO pairs per seed
  assert "| GRPO, reasoning agent | 50.0, 50.0, 50.0 | 62.5, 62.5, 62.5 |" in report
  assert "| iterative DPO (8) | 56.0 ± 1.0 |" in report and "| GRPO (8) | 81.0 ± 1.0 |" in report
  assert [p["chains_sampled"] for p in out["chain_accuracy"]["iterative DPO"]] == [0, 8]
  for png in ("accuracy.png", "budget.png", "rl_training.png"):
    assert os.path.getsize(os.path.join(wd, png)) > 1000


@pytest.mark.parametrize("value", ["cot:reasonin", "cot", "cot:cot", "cot:reasoning,reasoning:summary"])
def test_a_bad_start_from_stops_before_any_work(tmp_path, value):
  from insightv_jax.utils.inputs import InputError
  from pipelines.demo import run_demo

  cfg = tiny_demo_config()
  cfg.start_from = value
  with pytest.raises(InputError, match="--config.start_from"):
    run_demo(cfg, str(tmp_path / "demo"))
  assert not (tmp_path / "demo").exists()


def test_reasoning_slips_are_the_teachers_flawed_chains():
  """configs/demo.py reasoning_slips: per reasoning question, a teacher chain with one mistake (each of MISTAKES
  in turn), written as the reasoning agent's preset writes chains; none equals the question's sound chain."""
  from data_gen import pipeline
  from data_gen.synthetic.tasks import MISTAKES
  from data_gen.synthetic.world import PERCEPTION_KINDS
  from insightv_jax.data import prompts
  from pipelines import demo

  cfg = tiny_demo_config()
  cfg.reasoning_slips = 0.5
  world = pipeline.make_world(cfg.datagen)
  questions = [world.question(i, "train") for i in range(40)]
  reasoning = {q.id: q for q in questions if q.meta["task"] not in PERCEPTION_KINDS}
  out = demo._reasoning_slip_records(cfg, world, questions)
  assert len(out) == len(reasoning) // 2 and len(reasoning) >= 16
  assert {m for m in MISTAKES if any(f"-{m}-" in r.id for r in out)} == set(MISTAKES)
  fmt = prompts.get_preset(cfg.reasoning.data.prompts).format_chain
  for r in out:
    q = reasoning[r.id.split("/teacher-")[0]]
    assert r.question == prompts.format_question(q.question, q.choices) and r.images == q.images
    assert r.reasoning != fmt(world.teacher_path(q).steps)


def _stamp(path: str, seconds: float) -> None:
  """A stand-in job (module level: the demo's workers are spawned): its start time into `path`, then a sleep."""
  import time
  with open(path, "w") as f:
    f.write(repr(time.time()))
  time.sleep(seconds)


def test_the_schedule_starts_a_second_job_of_a_kind_once_the_first_has_compiled(tmp_path):
  """Two workers: the longest path starts first; a second job of a kind still compiling (none finished) waits while
  another kind can start, and starts once nothing else can (it never leaves a worker idle)."""
  from pipelines.demo import _Job, _run_jobs

  stamp = lambda name: str(tmp_path / name)
  jobs = {"s0 reasoning": _Job(_stamp, (stamp("r0"), 4.0), (), "reasoning"),
          "s1 reasoning": _Job(_stamp, (stamp("r1"), 0.1), (), "reasoning"),
          "s0 summary": _Job(_stamp, (stamp("s0"), 0.5), (), "summary")}
  seconds = _run_jobs(jobs, 2, log_dir=str(tmp_path / "logs"), cache=str(tmp_path / "cache"))
  assert set(seconds) == set(jobs)
  start = {n: float(open(stamp(n)).read()) for n in ("r0", "r1", "s0")}
  assert start["s0"] < start["r1"] < start["r0"] + 4.0


def test_each_worker_keeps_to_its_own_cpus():
  """configs/demo.py pin_workers: disjoint, equal shares that cover every CPU (the last takes the remainder); with
  fewer CPUs than workers nobody is pinned."""
  from pipelines.demo import worker_cpus

  assert [worker_cpus([0, 1], 2, i) for i in range(2)] == [[0], [1]]
  assert [worker_cpus([0, 1, 2, 3, 4], 2, i) for i in range(2)] == [[0, 1], [2, 3, 4]]
  assert [worker_cpus([3], 2, i) for i in range(2)] == [[3], [3]]


def _affinity(path: str) -> None:
  """A stand-in job: the CPUs its worker may run on, into `path` (held a moment, so both workers take a job)."""
  import time
  with open(path, "w") as f:
    json.dump(sorted(os.sched_getaffinity(0)), f)
  time.sleep(1.0)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 CPUs")
def test_pinned_workers_run_on_disjoint_cpus(tmp_path):
  from pipelines.demo import _Job, _run_jobs

  jobs = {f"j{i}": _Job(_affinity, (str(tmp_path / f"j{i}"),), (), "eval") for i in range(2)}
  _run_jobs(jobs, 2, log_dir=str(tmp_path / "logs"), cache=str(tmp_path / "cache"), pin=True)
  a, b = (set(json.load(open(tmp_path / f"j{i}"))) for i in range(2))
  assert a and b and not a & b and a | b == os.sched_getaffinity(0)
