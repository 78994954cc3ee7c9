"""`insightv-demo` / `make demo`: the whole Insight-V pipeline in miniature, on CPU, over seeds (configs/demo.py).

Shared by every seed (the generated data stays fixed):
  1. data generation on the synthetic world: progressive path synthesis (scripted generator with injected
     mistakes), assessment, assembly of reasoning-SFT, summary-SFT and DPO sets       -> datagen/
     plus the baselines' sets, the summary agent's slipped chains and the held-out questions -> data/
  2. a BPE tokenizer trained on the demo's own text                                     -> tokenizer/
Per seed (pipelines/demo_seed.py; jobs run side by side in `workers` processes):
  3-4. SFT: the reasoning agent, the summary agent, and two single-model baselines (direct answer; chain-of-thought
     in one model, which starts from the reasoning agent)          -> seed_<s>/{reasoning,summary,direct,cot}/
  5. iterative DPO of the reasoning agent (sample -> assess -> pairs -> DPO, K rounds)  -> seed_<s>/dpo/round_k/
  6. GRPO of the SFT reasoning agent on the same questions, at the DPO rounds' sampling budgets, and J-GRPO of the
     summary agent on the reasoning agent's own chains (pipelines/demo_rl.py)   -> seed_<s>/{grpo,summary_rl}/
  7. evaluation on held-out questions -> seed_<s>/eval/, and the reasoning agent's chain accuracy per stage (a
     job of its own, after DPO and GRPO)                                         -> seed_<s>/chains/
Then report.md: mean ± std over seeds, min-max, the Wilson interval of the pooled answers, reasoning vs
perception questions, chain accuracy against the sampling budget (DPO rounds, GRPO points), the claims judged,
and PNG plots (pipelines/demo_report.py).
Every stage is resumable: rerunning with the same --workdir skips what is finished.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging as py_logging
import multiprocessing
import os
import time
from typing import Callable

from absl import logging

from data_gen import pipeline
from data_gen.synthetic.tasks import MISTAKES
from data_gen.synthetic.world import PERCEPTION_KINDS, World
from insightv_jax.data import prompts, records
from insightv_jax.data.tokenizer import train_bpe
from insightv_jax.scoring import extract
from insightv_jax.utils.files import is_done, mark_done
from pipelines import demo_eval, demo_rl, demo_seed
from pipelines.demo_report import write_report
from pipelines.demo_seed import Paths

# relative cost of each job, for the schedule (longest remaining path first): per-seed job seconds of the default
# config on 2 cores, 2 pinned workers (2026-12-07 run of c13f024, scaled to today's batches and steps: reasoning
# 160-196 s, summary ~200 at batch 16, dpo ~100 with a compile per round (~40 s less now), grpo 73-120, cot ~70,
# eval 44-67, direct 38-52, chains 27-32, summary_rl 19-42)
COST = {"reasoning": 2.6, "summary": 3.0, "direct": 0.7, "cot": 1.1, "dpo": 1.0, "grpo": 1.4, "summary_rl": 0.5,
        "eval": 0.9, "chains": 0.5}


def run_demo(cfg, wd: str) -> dict:
  bases = demo_seed.start_from(cfg)  # a bad --config.start_from fails here, before any work
  os.makedirs(wd, exist_ok=True)
  with open(os.path.join(wd, "config.json"), "w") as f:
    f.write(cfg.to_json_best_effort(indent=2))
  p = Paths(wd)
  timings = {}
  t_start = time.time()

  # -------------------------------------------------------------------------------- 1. data generation
  t = time.time()
  gen = cfg.datagen
  with gen.unlocked():
    gen.questions = f"synthetic:{cfg.n_train}"
  if not is_done(p.gen):
    pipeline.run(gen, p.gen)
    mark_done(p.gen)
  world = pipeline.make_world(gen)
  if not is_done(p.data):
    _write_data(cfg, p, world)
    mark_done(p.data)
  timings["data generation"] = time.time() - t

  # -------------------------------------------------------------------------------------- 2. tokenizer
  if not is_done(p.tok):
    texts = [r.reasoning for r in records.read_jsonl(p.dataset("reasoning_sft").replace(".arrayrecord", ".jsonl"))]
    texts += [prompts.format_question(q.question, q.choices) + " " + q.answer
              for q in (world.question(i) for i in range(200))]
    texts += [prompts.REASONING_INSTRUCTION, prompts.SUMMARY_INSTRUCTION, prompts.DIRECT_INSTRUCTION,
              prompts.COT_INSTRUCTION, "Judgement: the reasoning is sound. flawed."] * 20
    train_bpe(texts, cfg.tokenizer_vocab, cfg.reasoning.data.template).save_pretrained(p.tok)
    mark_done(p.tok)

  # ------------------------------------------------------------------------- 3-6. per-seed jobs, side by side
  seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
  jobs = {}
  for s in seeds:
    for name in sorted(demo_seed.SFT_JOBS, key=lambda n: n in bases):  # jobs from random init first
      jobs[f"seed {s} {name}"] = _Job(demo_seed.train_job, (cfg, wd, s, name),
                                      (f"seed {s} {bases[name]}",) if name in bases else (), name)
    jobs[f"seed {s} dpo"] = _Job(demo_seed.dpo_job, (cfg, wd, s), (f"seed {s} reasoning",), "dpo")
    jobs[f"seed {s} grpo"] = _Job(demo_rl.grpo_job, (cfg, wd, s), (f"seed {s} reasoning",), "grpo")
    # its chains: the SFT reasoning agent's samples of DPO round 1
    jobs[f"seed {s} summary_rl"] = _Job(demo_rl.summary_rl_job, (cfg, wd, s), (f"seed {s} summary", f"seed {s} dpo"),
                                        "summary_rl")
    jobs[f"seed {s} chains"] = _Job(demo_eval.chains_job, (cfg, wd, s), (f"seed {s} dpo", f"seed {s} grpo"), "chains")
    jobs[f"seed {s} eval"] = _Job(demo_eval.eval_job, (cfg, wd, s), tuple(
        f"seed {s} {n}" for n in (*demo_seed.SFT_JOBS, "dpo", "grpo", "summary_rl")), "eval")
  t = time.time()
  job_seconds = _run_jobs(jobs, cfg.workers, log_dir=os.path.join(wd, "logs"), cache=os.path.join(wd, "jax_cache"),
                          pin=cfg.pin_workers)
  timings[f"{len(seeds)} seeds ({cfg.workers} workers side by side)"] = time.time() - t
  for kind in COST:
    timings[f"  {kind} (job time, summed over seeds)"] = sum(v for k, v in job_seconds.items() if jobs[k].kind == kind)

  # ---------------------------------------------------------------------------------------------- report
  timings["total"] = time.time() - t_start
  g = cfg.datagen.world
  task = (f"{g.grid} x {g.grid} grids of four equally likely cell states and {g.shape_grid} x {g.shape_grid} "
          f"lattices of {g.shapes} shapes, {g.image_size} px; question kinds (weight) {g.kinds}")
  return write_report(wd, cfg, seeds=seeds, task=task, timings=timings)


def _write_data(cfg, p: Paths, world: World) -> None:
  """The baselines' sets, the summary agent's slipped chains, the held-out questions and GRPO's questions."""
  os.makedirs(p.data, exist_ok=True)
  train_questions = [world.question(i, "train") for i in range(cfg.n_train)]
  records.write_array_record(os.path.join(p.data, "direct.arrayrecord"), train_questions)
  records.write_array_record(os.path.join(p.data, "cot.arrayrecord"),
                             _cot_records(train_questions, p.dataset("reasoning_sft")))
  records.write_jsonl(p.test, (world.question(i, "test") for i in range(cfg.n_test)))
  dpo_world = pipeline.make_world(cfg.dpo_iterative.datagen)  # the DPO rounds' questions, for GRPO
  records.write_jsonl(p.rl_questions, (dpo_world.question(i, cfg.dpo_iterative.datagen.world.split)
                                       for i in range(demo_rl.dpo_questions(cfg))))
  records.write_array_record(p.summary_slips, _slip_records(cfg, world, train_questions))
  records.write_array_record(p.reasoning_slips, _reasoning_slip_records(cfg, world, train_questions))


def _per_question(ratio: float, i: int) -> range:
  """Ratio r spread over questions: question i gets int((i + 1) r) - int(i r) items (r per question on average)."""
  return range(int((i + 1) * ratio) - int(i * ratio))


def _slip_records(cfg, world: World, questions) -> list:
  """Summary-agent examples whose chain reads every cell right but lets the running count slip once (the
  teacher's `wrong_arithmetic`, the reasoning agent's commonest error), with the correct answer: the summary agent
  learns to recount from the chain's own readings instead of copying its total. `cfg.summary_slips` per
  reasoning question (0.5: every other one)."""
  out = []
  format_chain = prompts.get_preset(cfg.summary.data.prompts).format_chain
  reasoning = [q for q in questions if q.meta["task"] not in PERCEPTION_KINDS]
  for i, q in enumerate(reasoning):
    for k in _per_question(cfg.summary_slips, i):
      path = world.teacher_path(q, mistake="wrong_arithmetic", sample=100 + k)
      wrong = not extract.is_correct(path.final_answer, q.answer, choices=q.choices)
      out.append(records.SummarySFT(id=f"{path.id}/s", images=q.images,
                                    question=prompts.format_question(q.question, q.choices),
                                    reasoning=format_chain(path.steps), answer=q.answer,
                                    chain_quality="wrong" if wrong else "low", source=q.source))
  return out


def _reasoning_slip_records(cfg, world: World, questions) -> list:
  """Reasoning-SFT examples with one of the teacher's mistakes (MISTAKES, in turn: a skipped row, a cell read
  wrong, a running count that slips), `cfg.reasoning_slips` per reasoning question: the SFT agent learns to slip
  now and then, so sampled chains leave room for what DPO and GRPO must unlearn (headroom by construction)."""
  out = []
  format_chain = prompts.get_preset(cfg.reasoning.data.prompts).format_chain
  reasoning = [q for q in questions if q.meta["task"] not in PERCEPTION_KINDS]
  for i, q in enumerate(reasoning):
    for k in _per_question(cfg.reasoning_slips, i):
      path = world.teacher_path(q, mistake=MISTAKES[(i + k) % len(MISTAKES)], sample=200 + k)
      out.append(records.ReasoningSFT(id=f"{path.id}/r", images=q.images,
                                      question=prompts.format_question(q.question, q.choices),
                                      reasoning=format_chain(path.steps), source=q.source))
  return out


def _cot_records(questions, reasoning_sft_path: str):
  """The single-model chain-of-thought baseline's data: the reasoning agent's own SFT chains (same chains,
  same count), each followed by its question's ground-truth answer (chain + answer in one reply).

  A reasoning record's id is "<question id>/p<k>/r" (data_gen.assemble), which finds its question.
  """
  answers = {q.id: q.answer for q in questions}
  out = []
  for r in records.read_jsonl(reasoning_sft_path.replace(".arrayrecord", ".jsonl")):
    qid = r.id.split("/")[0]
    if qid not in answers:
      raise ValueError(f"{reasoning_sft_path}: record {r.id!r} names no training question ({qid!r})")
    out.append(records.SummarySFT(id=f"{r.id}/cot", images=r.images, question=r.question, reasoning=r.reasoning,
                                  answer=answers[qid], chain_quality="high", source=r.source))
  return out


# ------------------------------------------------------------------------------------------------ scheduling

@dataclasses.dataclass(frozen=True)
class _Job:
  fn: Callable
  args: tuple
  deps: tuple[str, ...]
  kind: str


def _run_jobs(jobs: dict[str, _Job], workers: int, log_dir: str, cache: str, pin: bool = False
              ) -> dict[str, float]:
  """Runs every job after its dependencies, `workers` at a time (1: in this process, in order); returns the
  seconds each took. Among ready jobs the one with the longest remaining path (by COST) starts first, except that
  a job whose kind is running and has not finished once yet waits while another job can start.

  pin: each worker process keeps to its own share of this process's CPUs (`worker_cpus`), so that two jobs' XLA
  threads do not take turns on every core.

  Compiled programs go to a persistent cache in `cache`: the seeds' jobs have the same shapes, so only the first
  job of each kind compiles (hence the exception: two of a kind started together would both compile).
  """
  os.makedirs(log_dir, exist_ok=True)
  rank: dict[str, float] = {}
  for name in reversed(list(jobs)):  # jobs are listed after their dependencies
    after = [rank[n] for n, j in jobs.items() if name in j.deps]
    rank[name] = COST[jobs[name].kind] + max(after, default=0.0)
  seconds = {}
  if workers <= 1:
    for name, job in jobs.items():
      seconds[name] = _timed(job.fn, job.args, os.path.join(log_dir, name.replace(" ", "_") + ".log"), cache)
      logging.info("%s: %.0fs", name, seconds[name])
    return seconds
  pending, running = dict(jobs), {}
  ctx = multiprocessing.get_context("spawn")  # JAX does not survive fork
  counter = ctx.Value("i", 0)  # the next worker's index (each worker takes one at start)
  cpus = sorted(os.sched_getaffinity(0)) if pin else []
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                              initargs=(counter, cpus, workers)) as pool:
    while pending or running:
      while len(running) < workers:
        warm = {jobs[n].kind for n in seconds}
        compiling = {jobs[n].kind for n in running.values()} - warm
        ready = sorted((n for n, j in pending.items() if all(d in seconds for d in j.deps)),
                       key=lambda n: (jobs[n].kind in compiling, -rank[n]))
        if not ready:
          break
        name = ready[0]
        job = pending.pop(name)
        log = os.path.join(log_dir, name.replace(" ", "_") + ".log")
        running[pool.submit(_timed, job.fn, job.args, log, cache, quiet=True)] = name
        logging.info("started %s (log: %s)", name, log)
      if not running:
        raise ValueError(f"jobs {sorted(pending)} wait on jobs that do not exist")
      finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for f in finished:
        name = running.pop(f)
        seconds[name] = f.result()  # a failed job raises here, naming its log
        logging.info("%s: %.0fs", name, seconds[name])
  return seconds


def worker_cpus(cpus: list[int], workers: int, index: int) -> list[int]:
  """Worker `index`'s share of `cpus`: an equal, disjoint slice (the last takes the remainder), or all of them
  when there are fewer CPUs than workers (no pinning)."""
  share = len(cpus) // workers
  if not share:
    return list(cpus)
  return list(cpus[index * share:] if index == workers - 1 else cpus[index * share:(index + 1) * share])


def _init_worker(counter, cpus: list[int], workers: int):
  if cpus:  # before the first job: XLA's threads start with the backend, on the CPUs allowed then
    with counter.get_lock():
      index = counter.value
      counter.value += 1
    os.sched_setaffinity(0, worker_cpus(cpus, workers, index % workers))
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain reads absl flags; the worker never parses a command line
  logging.set_verbosity(logging.INFO)  # into each job's log file (`_timed`); the worker has no console handler


@contextlib.contextmanager
def _compile_cache(path: str):
  """JAX's persistent compilation cache in `path` for the duration (restored after: tests share the process)."""
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {k: getattr(jax.config, k) for k in keys}
  compilation_cache.reset_cache()  # the cache is set up once per process: start it again with this folder
  jax.config.update(keys[0], path)
  jax.config.update(keys[1], 0.0)
  try:
    yield
  finally:
    for k, v in old.items():
      jax.config.update(k, v)
    compilation_cache.reset_cache()


def _timed(fn, args, log_path: str, cache: str, quiet: bool = False) -> float:
  """fn(*args) with its log lines (INFO and up) in log_path (only there when `quiet`: a worker's jobs would
  interleave on the console) and compiled programs cached in `cache`; returns the seconds it took."""
  handler = py_logging.FileHandler(log_path)
  handler.setFormatter(py_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root = py_logging.getLogger()
  level, others = root.level, list(root.handlers) if quiet else []
  for h in others:
    root.removeHandler(h)
  root.addHandler(handler)
  root.setLevel(py_logging.INFO)
  t = time.time()
  try:
    with _compile_cache(cache):
      fn(*args)
  except Exception as e:
    raise RuntimeError(f"{fn.__name__}{args[2:]} failed: {e!r}; log: {log_path}") from e
  finally:
    root.removeHandler(handler)
    for h in others:
      root.addHandler(h)
    root.setLevel(level)
    handler.close()
  return time.time() - t
