"""One seed of the demo: four SFT jobs and iterative DPO here, the RL jobs (pipelines/demo_rl.py) and the
evaluation (pipelines/demo_eval.py), as separate jobs that `pipelines/demo.py` schedules over worker processes
(each job is a module-level function of (config, workdir, seed), resumable: a finished job leaves a DONE marker
and is skipped when run again).

    workdir/seed_<s>/{reasoning,summary,direct,cot}   SFT from random init, or from another job's model
                                 (cfg.start_from; the one-model chain baseline starts from the reasoning agent)
    workdir/seed_<s>/dpo/round_k iterative DPO of the reasoning agent (pipelines/iterative_dpo.py)
    workdir/seed_<s>/grpo, summary_rl   GRPO of the reasoning agent, J-GRPO of the summary agent (demo_rl.py)
    workdir/seed_<s>/eval        every system on the held-out questions and the reasoning agent's chain accuracy
                                 per stage (demo_eval.py); results.json for the report
The seed sets the model init and the data order (every job); the data itself is shared by all seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import os

from absl import logging

from insightv_jax.train.loop import train
from insightv_jax.utils.files import is_done, mark_done
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

  @property
  def rl_questions(self) -> str:
    """The questions the DPO rounds sample chains for, as question records: GRPO's questions."""
    return os.path.join(self.data, "rl_questions.jsonl")

  def dataset(self, name: str) -> str:
    """An assembled data-generation set: reasoning_sft, summary_sft or dpo."""
    return os.path.join(self.gen, "datasets", f"{name}-0-of-1.arrayrecord")

  def seed(self, s: int, *parts: str) -> str:
    return os.path.join(self.wd, f"seed_{s}", *parts)

  @property
  def summary_slips(self) -> str:
    """The summary agent's slipped chains (configs/demo.py summary_slips)."""
    return os.path.join(self.data, "slips.arrayrecord")

  @property
  def reasoning_slips(self) -> str:
    """The reasoning agent's slipped chains (configs/demo.py reasoning_slips)."""
    return os.path.join(self.data, "reasoning_slips.arrayrecord")

  def job_data(self, cfg, name: str) -> list[str]:
    reasoning = [self.dataset("reasoning_sft")] + ([self.reasoning_slips] if cfg.reasoning_slips else [])
    summary = [self.dataset("summary_sft")] + ([self.summary_slips] if cfg.summary_slips else [])
    return {"reasoning": reasoning, "summary": summary,
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
