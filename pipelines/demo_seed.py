"""One seed of the demo: four SFT jobs, iterative DPO and the evaluation, as separate jobs that
`pipelines/demo.py` schedules over worker processes (each job is a module-level function of (config, workdir,
seed), resumable: a finished job leaves a DONE marker and is skipped when run again).

    workdir/seed_<s>/{reasoning,summary,direct,cot}   SFT from random init, or from another job's model
                                 (cfg.start_from; the one-model chain baseline starts from the reasoning agent)
    workdir/seed_<s>/dpo/round_k iterative DPO of the reasoning agent (pipelines/iterative_dpo.py)
    workdir/seed_<s>/eval        every system on the held-out questions (runner jsonl + report.md) and the
                                 reasoning agent's chain accuracy per DPO round; results.json for the report
The seed sets the model init and the data order (every job); the data itself is shared by all seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

from absl import logging

from data_gen import progressive
from data_gen.synthetic.world import PERCEPTION_KINDS
from insightv_jax import infer
from insightv_jax.checkpoints import load_model
from insightv_jax.data import prompts
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.eval import readers, runner
from insightv_jax.scoring import extract
from insightv_jax.train.loop import train
from insightv_jax.utils.files import is_done, mark_done, write_json
from insightv_jax.utils.inputs import InputError
from pipelines.iterative_dpo import run_iterative

SFT_JOBS = ("reasoning", "summary", "direct", "cot")


def init_from(cfg, name: str) -> str | None:
  """The SFT job whose model job `name` starts from (cfg.start_from), or None: random init."""
  return start_from(cfg).get(name)


def start_from(cfg) -> dict[str, str]:
  """cfg.start_from "job:base,..." -> {job: base}; a base starts from random init itself."""
  pairs = {}
  for item in (x.strip() for x in cfg.start_from.split(",") if x.strip()):
    job, _, base = (part.strip() for part in item.partition(":"))
    if job not in SFT_JOBS or base not in SFT_JOBS or job == base:
      raise InputError(f"--config.start_from={cfg.start_from!r}: {item!r} is not 'job:base' with two different "
                       f"SFT jobs of {SFT_JOBS}")
    pairs[job] = base
  chained = sorted(set(pairs) & set(pairs.values()))
  if chained:
    raise InputError(f"--config.start_from={cfg.start_from!r}: {chained} both start from and are started from "
                     "another job; a base job starts from random init")
  return pairs


def systems(rounds: int) -> dict[str, str]:
  """Evaluated systems: key (file names, results.json) -> label (report)."""
  out = {"direct": "direct answer (baseline)",
         "cot": "chain-of-thought, one model (baseline)",
         "summary_alone": "summary agent alone (no chain)",
         "two_agents": "two agents (SFT)"}
  out.update({f"dpo_{r}": f"two agents + DPO round {r}" for r in range(1, rounds + 1)})
  return out


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where the demo's shared data and each seed's jobs live."""

  wd: str

  @property
  def gen(self) -> str:
    return os.path.join(self.wd, "datagen")

  @property
  def data(self) -> str:
    return os.path.join(self.wd, "data")

  @property
  def tok(self) -> str:
    return os.path.join(self.wd, "tokenizer")

  @property
  def test(self) -> str:
    return os.path.join(self.data, "test.jsonl")

  def dataset(self, name: str) -> str:
    """An assembled data-generation set: reasoning_sft, summary_sft or dpo."""
    return os.path.join(self.gen, "datasets", f"{name}-0-of-1.arrayrecord")

  def seed(self, s: int, *parts: str) -> str:
    return os.path.join(self.wd, f"seed_{s}", *parts)

  def job_data(self, cfg, name: str) -> list[str]:
    summary = [self.dataset("summary_sft")] + ([os.path.join(self.data, "slips.arrayrecord")] if cfg.summary_slips
                                               else [])
    return {"reasoning": [self.dataset("reasoning_sft")], "summary": summary,
            "direct": [os.path.join(self.data, "direct.arrayrecord")],
            "cot": [os.path.join(self.data, "cot.arrayrecord")]}[name]


# ------------------------------------------------------------------------------------------------- training

def train_job(cfg, wd: str, seed: int, name: str) -> None:
  """SFT job `name` (reasoning | summary | direct | cot) of one seed, from random init or from the model of the
  job that `cfg.start_from` names."""
  p = Paths(wd)
  out = p.seed(seed, name)
  if is_done(out):
    return
  c = copy.deepcopy(cfg[name])
  with c.unlocked():
    c.tokenizer = p.tok
    c.data.paths = ",".join(p.job_data(cfg, name))
    c.seed = seed  # model init
    c.data.seed = seed  # data order
    base = init_from(cfg, name)
    c.model.init = "params:" + p.seed(seed, base, "export") if base else "random"
  logging.info("seed %d: SFT %s on %s", seed, name, c.data.paths)
  train(c, out)
  mark_done(out)


def dpo_job(cfg, wd: str, seed: int) -> None:
  """Iterative DPO of the seed's reasoning agent (K rounds; each round's reference is its starting policy)."""
  p = Paths(wd)
  out = p.seed(seed, "dpo")
  if is_done(out):
    return
  icfg = copy.deepcopy(cfg.dpo_iterative)
  with icfg.unlocked():
    icfg.start_model = "params:" + p.seed(seed, "reasoning", "export")
    icfg.prompts = cfg.reasoning.data.prompts  # sampled and trained with the prompts the SFT agent learned
    icfg.datagen.backend.tokenizer = icfg.train.tokenizer = p.tok
    icfg.train.seed = icfg.train.data.seed = seed
  run_iterative(icfg, out)
  mark_done(out)


def round_model(wd: str, seed: int, r: int) -> str:
  """The reasoning agent after DPO round r (r = 0: the SFT agent)."""
  p = Paths(wd)
  return "params:" + (p.seed(seed, "reasoning", "export") if r == 0 else
                      p.seed(seed, "dpo", f"round_{r}", "train", "export"))


# ----------------------------------------------------------------------------------------------- evaluation

def eval_job(cfg, wd: str, seed: int) -> None:
  """Every system on the held-out questions, and the chain accuracy of the reasoning agent after each DPO round
  (its chains sampled at the DPO temperature, scored for reaching the right answer) -> seed_<s>/eval/results.json.
  """
  p = Paths(wd)
  out = p.seed(seed, "eval")
  if is_done(out):
    return
  tokenizer = load_tokenizer(p.tok)
  questions = readers.read_benchmark(p.test)
  template = cfg.reasoning.data.template
  rounds = cfg.dpo_iterative.rounds

  def agent(spec, job, max_new_tokens, **kw):  # prompted with the preset its SFT job trained it with
    gen = infer.GenerationConfig(max_new_tokens=max_new_tokens, batch_size=cfg.eval_batch_size, seed=seed)
    return infer.Agent(load_model(spec), tokenizer, template, gen, preset=cfg[job].data.prompts, **kw)

  export = lambda job: "params:" + p.seed(seed, job, "export")
  summary = agent(export("summary"), "summary", cfg.answer_max_new_tokens)
  direct = agent(export("direct"), "direct", cfg.answer_max_new_tokens)
  cot = agent(export("cot"), "cot", cfg.reasoning_max_new_tokens + 10, stop_tokens=infer.agents.COT_STOP_TOKENS)
  reasoners = {r: agent(round_model(wd, seed, r), "reasoning", cfg.reasoning_max_new_tokens)
               for r in range(rounds + 1)}
  fns = {"direct": lambda ex: infer.direct(direct, ex),
         "cot": lambda ex: infer.chain_of_thought(cot, ex),
         "summary_alone": lambda ex: infer.two_agents(_Silent(summary.prompts), summary, ex),
         "two_agents": lambda ex: infer.two_agents(reasoners[0], summary, ex)}
  fns.update({f"dpo_{r}": (lambda ex, a=reasoners[r]: infer.two_agents(a, summary, ex)) for r in range(1, rounds + 1)})
  results = {key: runner.evaluate(key, fns[key], questions, out, image_root=p.data,
                                  batch_size=cfg.eval_batch_size * 4) for key in systems(rounds)}
  runner.write_report(out, {systems(rounds)[k]: rows for k, rows in results.items()},
                      title=f"Held-out synthetic questions, seed {seed}")

  reasoning_qs = [q for q in questions if q.meta.get("task") not in PERCEPTION_KINDS]
  chains = {r: chain_accuracy(a, reasoning_qs, cfg) for r, a in reasoners.items()}
  dpo = []
  for r in range(1, rounds + 1):
    with open(p.seed(seed, "dpo", f"round_{r}", "sample", "report", "counts.json")) as f:
      counts = json.load(f)
    dpo.append({"round": r, "pairs": counts["datasets"]["dpo"], "sampled": counts["paths"],
                "sampled_correct": counts["answer_correct"]})
  write_json(os.path.join(out, "results.json"), {
      "seed": seed,
      "systems": {k: [{"id": r["id"], "category": r["category"], "correct": bool(r["correct"])} for r in rows]
                  for k, rows in results.items()},
      "chains": {str(r): v for r, v in chains.items()},
      "dpo": dpo})
  mark_done(out)


def chain_accuracy(reasoner: infer.Agent, questions, cfg) -> list[bool]:
  """`cfg.chain_samples` chains per question sampled at the DPO temperature (and top-p): does each chain's last
  step reach the right answer (the total, for counting)?"""
  t = cfg.dpo_iterative
  sampler = reasoner.with_generation(temperature=t.sample_temperature, top_p=t.datagen.progressive.top_p)
  examples = [runner.to_example(q, None) for q in questions]
  out = []
  for s in range(cfg.chain_samples):
    for q, chain in zip(questions, infer.reason(sampler, examples, seed_offset=s * len(examples))):
      steps = progressive.parse_chain(chain, reasoner.prompts)
      out.append(bool(steps) and extract.is_correct(steps[-1].content, q.answer, choices=q.choices))
  return out


class _Silent:
  """A 'reasoning agent' that writes an empty chain: the summary agent must answer on its own."""

  def __init__(self, preset: prompts.PromptPreset):
    self.prompts = preset  # unwraps the empty reply as the summary agent's preset would

  def complete(self, conversations, images, **kw):
    return ["" for _ in conversations]
