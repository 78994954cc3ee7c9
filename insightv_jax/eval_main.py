"""`insightv-eval`: evaluate the two-agent system and the baselines; resumable; Markdown + JSON report."""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Output folder: per-system results (resumable) and report.md/json.")

SYSTEMS = ("two_agent", "direct", "cot")


def run_eval(config, workdir: str) -> dict:
  from insightv_jax import params_io
  from insightv_jax.data.tokenizer import load_tokenizer
  from insightv_jax.eval import readers, runner
  from insightv_jax.infer import agents

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  systems = [s for s in config.systems.split(",") if s]
  unknown = set(systems) - set(SYSTEMS)
  if unknown:
    raise ValueError(f"config.systems: unknown {sorted(unknown)}; choose from {SYSTEMS}")
  if not config.reasoning_model:
    raise ValueError("config.reasoning_model is required ('params:<dir>' or 'hf:<dir>')")
  tok = load_tokenizer(config.tokenizer)
  cache = {}

  def model(spec):
    if spec not in cache:
      cache[spec] = params_io.load_model(spec, dtype=config.dtype)
    return cache[spec]

  gen = lambda n: agents.GenerationConfig(max_new_tokens=n, batch_size=config.batch_size)
  summary_spec = config.summary_model or config.reasoning_model
  baseline_spec = config.baseline_model or summary_spec
  questions = []
  for path in [p for p in config.benchmarks.split(",") if p]:
    qs = readers.read_benchmark(path)
    questions.extend(qs[:config.limit] if config.limit else qs)
  results = {}
  for system in systems:
    if system == "two_agent":
      r = agents.Agent(model(config.reasoning_model), tok, config.template, gen(config.reasoning_max_new_tokens))
      s = agents.Agent(model(summary_spec), tok, config.template, gen(config.answer_max_new_tokens))
      fn = lambda ex, r=r, s=s: agents.two_agent(r, s, ex)
    elif system == "direct":
      a = agents.Agent(model(baseline_spec), tok, config.template, gen(config.answer_max_new_tokens))
      fn = lambda ex, a=a: agents.direct(a, ex)
    else:
      a = agents.Agent(model(baseline_spec), tok, config.template, gen(config.cot_max_new_tokens))
      fn = lambda ex, a=a: agents.chain_of_thought(a, ex)
    results[system] = runner.evaluate(system, fn, questions, workdir, image_root=config.image_root or None,
                                      batch_size=config.batch_size)
  summary = runner.write_report(workdir, results)
  for name, s in summary.items():
    logging.info("%s: %.1f%% over %d", name, 100 * s["overall"], s["n"])
  return summary


def main(argv):
  del argv
  run_eval(FLAGS.config, FLAGS.workdir)


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run()
