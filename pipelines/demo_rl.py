"""The demo's on-policy RL jobs (pipelines/grpo.py's loop, configs/demo.py `grpo` and `summary_rl`), one seed each:

    workdir/seed_<s>/grpo/           GRPO of the SFT reasoning agent (the ST-GRPO role, answer reward) on the
                                     questions iterative DPO samples; run in `cfg.grpo_points` segments of
                                     `grpo_steps_per_point(cfg)` rollouts, each segment resuming the last one's
                                     checkpoint (constant lr), its model kept in point_<k>/ (budget_at(cfg, k))
    workdir/seed_<s>/summary_rl/     GRPO of the SFT summary agent (the J-GRPO role, answer reward) on
                                     (question, chain) pairs whose chains are the SFT reasoning agent's own samples
                                     (DPO round 1's sampled chains, sound and flawed: its summary_sft set)

Budget: chains sampled = questions x chains per question. A DPO round samples
`dpo_questions(cfg) x paths_per_question` chains; a GRPO point is as many rollouts as make the same number of
chains, so GRPO point k and DPO round k have sampled the same number of chains.
"""

from __future__ import annotations

import copy
import os
import shutil

from absl import logging

from insightv_jax.utils.files import is_done, mark_done
from pipelines.grpo import train_grpo


def dpo_questions(cfg) -> int:
  """Questions a DPO round samples chains for (configs/demo.py dpo_iterative.datagen.questions 'synthetic:N')."""
  return int(cfg.dpo_iterative.datagen.questions.split(":", 1)[1])


def round_budget(cfg) -> int:
  """Chains one DPO round samples (questions x chains per question)."""
  return dpo_questions(cfg) * cfg.dpo_iterative.datagen.progressive.paths_per_question


def grpo_steps_per_point(cfg) -> int:
  """GRPO rollouts (= optimizer steps at num_iterations 1) that sample one DPO round's budget of chains."""
  g = cfg.grpo.grpo
  per_step = g.questions_per_step * g.num_generations
  if round_budget(cfg) % per_step:
    raise ValueError(f"configs/demo.py: a DPO round samples {round_budget(cfg)} chains, not a multiple of the "
                     f"{per_step} a GRPO rollout samples (grpo.questions_per_step x grpo.num_generations)")
  return round_budget(cfg) // per_step


def budget_at(cfg, k: int) -> int:
  """Chains sampled after DPO round k, or after GRPO point k (0: the SFT agent)."""
  return k * round_budget(cfg)


def grpo_model(wd: str, seed: int, k: int) -> str:
  """The reasoning agent after GRPO point k (k >= 1)."""
  return "params:" + os.path.join(wd, f"seed_{seed}", "grpo", f"point_{k}")


def summary_rl_model(wd: str, seed: int) -> str:
  return "params:" + os.path.join(wd, f"seed_{seed}", "summary_rl", "export")


def _rl_config(cfg, name: str, wd: str, seed: int, start: str):
  from pipelines.demo_seed import Paths  # demo_seed imports this module
  c = copy.deepcopy(cfg[name])
  with c.unlocked():
    c.tokenizer = Paths(wd).tok
    c.model.init = start
    c.seed = c.data.seed = c.grpo.seed = seed  # question order and sampling seeds
  return c


def grpo_job(cfg, wd: str, seed: int) -> None:
  """GRPO of the seed's SFT reasoning agent, `cfg.grpo_points` segments; point_<k>/ after each."""
  from pipelines.demo_seed import Paths
  p = Paths(wd)
  out = p.seed(seed, "grpo")
  if is_done(out):
    return
  c = _rl_config(cfg, "grpo", wd, seed, "params:" + p.seed(seed, "reasoning", "export"))
  with c.unlocked():
    c.data.paths = p.rl_questions
  per_point = grpo_steps_per_point(cfg)
  for k in range(1, cfg.grpo_points + 1):
    point = os.path.join(out, f"point_{k}")
    if os.path.exists(point):
      continue
    with c.unlocked():
      c.optim.total_steps = k * per_point  # resumes the last segment's checkpoint (the lr is constant)
    logging.info("seed %d: GRPO point %d (%d rollouts, %d chains sampled)", seed, k, c.optim.total_steps,
                 budget_at(cfg, k))
    export = os.path.join(out, "export")
    shutil.rmtree(export, ignore_errors=True)  # a segment killed while exporting
    train_grpo(c, out)
    os.rename(export, point)
  mark_done(out)


def summary_rl_job(cfg, wd: str, seed: int) -> None:
  """J-GRPO of the seed's SFT summary agent on the SFT reasoning agent's own sampled chains (DPO round 1)."""
  from pipelines.demo_seed import Paths
  p = Paths(wd)
  out = p.seed(seed, "summary_rl")
  if is_done(out):
    return
  c = _rl_config(cfg, "summary_rl", wd, seed, "params:" + p.seed(seed, "summary", "export"))
  chains = p.seed(seed, "dpo", "round_1", "sample", "datasets", "summary_sft-0-of-1.jsonl")
  with c.unlocked():
    c.grpo.chain_source = chains
  logging.info("seed %d: J-GRPO of the summary agent on %s", seed, chains)
  train_grpo(c, out)
  mark_done(out)
