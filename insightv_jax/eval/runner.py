"""`run_eval`, what `insightv-eval` runs: the models, systems and benchmark files a config names, evaluated
(`eval.loop`), scored (`eval.official`) and reported (`eval.report`).

    summary = run_eval(get_config(), "/tmp/eval")   # configs/eval.py; writes <system>.jsonl, report.md/json

Each system's agents stop where its role's reply ends (`infer.agents.REASONING_STOP_TOKENS` for the reasoning and
summary agents and the direct baseline, `COT_STOP_TOKENS` for the chain-of-thought baseline, whose answer
follows its chain).
"""

from __future__ import annotations

import os

from absl import logging

from insightv_jax import infer
from insightv_jax.checkpoints import load_model
from insightv_jax.data import model_files
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.eval import readers

# evaluate / write_report: run_eval's own steps; the other names are imported by callers that knew runner.py
# before it was split (pipelines/demo_seed.py, tests/test_train_grpo_rewards.py)
from insightv_jax.eval.loop import evaluate, to_example  # noqa: F401
from insightv_jax.eval.official import official_scores, score_one  # noqa: F401
from insightv_jax.eval.report import summarise, write_report  # noqa: F401
from insightv_jax.scoring import vlmeval_compat as vc
from insightv_jax.utils.files import atomic_write
from insightv_jax.utils.inputs import InputError

SYSTEMS = ("two_agents", "direct", "cot")
DEPRECATED_SYSTEMS = {"two_agent": "two_agents"}  # old spelling, accepted for one release


def run_eval(config, workdir: str) -> dict:
  """What `insightv-eval` runs: config (configs/eval.py) names the models, systems and benchmark files."""
  # template / prompts "" -> what the reasoning model's folder records (data/model_files.py)
  model_files.apply_recorded_defaults(config, model="reasoning_model", template="template", prompts="prompts")
  os.makedirs(workdir, exist_ok=True)
  with atomic_write(os.path.join(workdir, "config.json")) as f:
    f.write(config.to_json_best_effort(indent=2))
  systems = [s for s in config.systems.split(",") if s]
  for old, new in DEPRECATED_SYSTEMS.items():
    if old in systems:
      logging.warning("--config.systems: %r is deprecated and goes in the next release: write %r", old, new)
      systems = [new if s == old else s for s in systems]
  unknown = set(systems) - set(SYSTEMS)
  if unknown:
    raise InputError(f"--config.systems={config.systems}: unknown {sorted(unknown)}; choose from {SYSTEMS}")
  if not config.reasoning_model:
    raise InputError("--config.reasoning_model is required ('params:<dir>' or 'hf:<dir>')")
  tok = load_tokenizer(config.tokenizer)
  cache = {}

  def model(spec):
    if spec not in cache:
      cache[spec] = load_model(spec, dtype=config.dtype, attention=config.get("attention", "auto"))
    return cache[spec]

  rules = vc.check_rules(config.get("vlmeval_rules", "current"))
  gen = lambda n: infer.GenerationConfig(max_new_tokens=n, batch_size=config.batch_size)
  summary_spec = config.summary_model or config.reasoning_model
  baseline_spec = config.baseline_model or summary_spec
  questions = []
  for path in [p for p in config.benchmarks.split(",") if p]:
    qs = readers.read_benchmark(path)
    questions.extend(qs[:config.limit] if config.limit else qs)
  results = {}
  agent = lambda spec, n, **kw: infer.Agent(model(spec), tok, config.template, gen(n),
                                           preset=config.prompts, **kw)
  for system in systems:
    if system == "two_agents":
      r = agent(config.reasoning_model, config.reasoning_max_new_tokens)
      s = agent(summary_spec, config.answer_max_new_tokens)
      fn = lambda ex, r=r, s=s: infer.two_agents(r, s, ex)
    elif system == "direct":
      a = agent(baseline_spec, config.answer_max_new_tokens)
      fn = lambda ex, a=a: infer.direct(a, ex)
    else:
      a = agent(baseline_spec, config.cot_max_new_tokens, stop_tokens=infer.agents.COT_STOP_TOKENS)
      fn = lambda ex, a=a: infer.chain_of_thought(a, ex)
    results[system] = evaluate(system, fn, questions, workdir, image_root=config.image_root or None,
                               batch_size=config.batch_size, rules=rules)
  summary = write_report(workdir, results, rules=rules)
  for name, s in summary.items():
    logging.info("%s: %.1f%% over %d", name, 100 * s["overall"], s["n"])
    if s["failed"]:
      logging.warning("%s: %d questions could not be asked and count as wrong (listed in %s/report.md)", name,
                      len(s["failed"]), workdir)
    for bench, card in s["official"].items():
      logging.info("%s on %s: %s = %.4g (%s, n=%d)", name, bench, card["headline"]["name"],
                   card["headline"]["value"], card["metric"], card["n"])
  return summary
