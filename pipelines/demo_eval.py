"""The demo's evaluation of one seed, as two jobs that run side by side:
  eval_job    (after every other job of the seed) every system on the held-out questions
              -> workdir/seed_<s>/eval/{<system>.jsonl, report.md, results.json}
  chains_job  (after DPO and GRPO) the reasoning agent's sampled chain accuracy after SFT, after each DPO round and
              at each GRPO point, and each round's pair counts -> workdir/seed_<s>/chains/results.json
`read_results` merges the two for the report.

Systems (`systems(cfg)`: key -> label): the baselines (direct answer; chain and answer from one model), the summary
agent alone, and two agents with the reasoning agent after SFT / the last DPO round / the last GRPO point and the
summary agent after SFT or after its J-GRPO stage. Two systems with the same reasoning agent read the same
(greedy) chains: they are written once per reasoning agent.
"""

from __future__ import annotations

import hashlib
import json
import os

from data_gen import progressive
from data_gen.synthetic.world import PERCEPTION_KINDS
from insightv_jax import infer
from insightv_jax.checkpoints import load_model
from insightv_jax.data import prompts
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.eval import readers, runner
from insightv_jax.scoring import extract
from insightv_jax.utils.files import is_done, mark_done, write_json
from pipelines import demo_rl


def systems(cfg) -> dict[str, str]:
  """Evaluated systems: key (file names, results.json) -> label (report)."""
  r, k = cfg.dpo_iterative.rounds, cfg.grpo_points
  out = {"direct": "direct answer (baseline)",
         "cot": "chain-of-thought, one model (baseline)",
         "summary_alone": "summary agent alone (no chain)",
         "two_agents": "two agents (SFT)",
         "summary_rl": "two agents, summary agent after J-GRPO"}
  if r:
    out["dpo"] = f"two agents, reasoner after DPO round {r}"
  if k:
    out["grpo"] = f"two agents, reasoner after GRPO ({demo_rl.budget_at(cfg, k)} chains)"
    out["grpo_summary_rl"] = "two agents, GRPO reasoner + J-GRPO summary agent"
  return out


def reasoners(cfg, wd: str, seed: int) -> dict[str, str]:
  """The reasoning agent's stages whose chain accuracy is measured: name -> model spec ("sft", "dpo_<k>",
  "grpo_<k>")."""
  from pipelines.demo_seed import Paths, round_model
  out = {"sft": "params:" + Paths(wd).seed(seed, "reasoning", "export")}
  out.update({f"dpo_{k}": round_model(wd, seed, k) for k in range(1, cfg.dpo_iterative.rounds + 1)})
  out.update({f"grpo_{k}": demo_rl.grpo_model(wd, seed, k) for k in range(1, cfg.grpo_points + 1)})
  return out


def eval_job(cfg, wd: str, seed: int) -> None:
  from pipelines.demo_seed import Paths
  p = Paths(wd)
  out = p.seed(seed, "eval")
  if is_done(out):
    return
  tokenizer = load_tokenizer(p.tok)
  questions = readers.read_benchmark(p.test)
  rounds, points = cfg.dpo_iterative.rounds, cfg.grpo_points
  agent = lambda spec, job, max_new_tokens, **kw: _agent(cfg, tokenizer, seed, spec, job, max_new_tokens, **kw)

  export = lambda job: "params:" + p.seed(seed, job, "export")
  summary = agent(export("summary"), "summary", cfg.answer_max_new_tokens)
  summary_rl = agent(demo_rl.summary_rl_model(wd, seed), "summary", cfg.answer_max_new_tokens)
  direct = agent(export("direct"), "direct", cfg.answer_max_new_tokens)
  cot = agent(export("cot"), "cot", cfg.reasoning_max_new_tokens + 10, stop_tokens=infer.agents.COT_STOP_TOKENS)
  specs = reasoners(cfg, wd, seed)
  greedy = {name: _SameChains(agent(specs[name], "reasoning", cfg.reasoning_max_new_tokens))
            for name in ("sft", f"dpo_{rounds}", f"grpo_{points}") if name in specs}
  fns = {"direct": lambda ex: infer.direct(direct, ex),
         "cot": lambda ex: infer.chain_of_thought(cot, ex),
         "summary_alone": lambda ex: infer.two_agents(_Silent(summary.prompts), summary, ex),
         "two_agents": lambda ex: infer.two_agents(greedy["sft"], summary, ex),
         "summary_rl": lambda ex: infer.two_agents(greedy["sft"], summary_rl, ex),
         "dpo": lambda ex: infer.two_agents(greedy[f"dpo_{rounds}"], summary, ex),
         "grpo": lambda ex: infer.two_agents(greedy[f"grpo_{points}"], summary, ex),
         "grpo_summary_rl": lambda ex: infer.two_agents(greedy[f"grpo_{points}"], summary_rl, ex)}
  labels = systems(cfg)
  results = {key: runner.evaluate(key, fns[key], questions, out, image_root=p.data,
                                  batch_size=cfg.eval_batch_size * 4) for key in labels}
  runner.write_report(out, {labels[k]: rows for k, rows in results.items()},
                      title=f"Held-out synthetic questions, seed {seed}")

  write_json(os.path.join(out, "results.json"), {
      "seed": seed,
      "systems": {k: [{"id": r["id"], "category": r["category"], "correct": bool(r["correct"])} for r in rows]
                  for k, rows in results.items()},
      "grpo": _rl_metrics(p.seed(seed, "grpo", "metrics.jsonl")),
      "summary_rl": _rl_metrics(p.seed(seed, "summary_rl", "metrics.jsonl"))})
  mark_done(out)


def chains_job(cfg, wd: str, seed: int) -> None:
  """The reasoning agent's sampled chain accuracy on the held-out reasoning questions at every stage (`reasoners`),
  and each DPO round's pairs."""
  from pipelines.demo_seed import Paths
  p = Paths(wd)
  out = p.seed(seed, "chains")
  if is_done(out):
    return
  tokenizer = load_tokenizer(p.tok)
  questions = [q for q in readers.read_benchmark(p.test) if q.meta.get("task") not in PERCEPTION_KINDS]
  chains = {name: chain_accuracy(_agent(cfg, tokenizer, seed, spec, "reasoning", cfg.reasoning_max_new_tokens),
                                 questions, cfg)
            for name, spec in reasoners(cfg, wd, seed).items()}
  dpo = []
  for r in range(1, cfg.dpo_iterative.rounds + 1):
    with open(p.seed(seed, "dpo", f"round_{r}", "sample", "report", "counts.json")) as f:
      counts = json.load(f)
    dpo.append({"round": r, "pairs": counts["datasets"]["dpo"], "sampled": counts["paths"],
                "sampled_correct": counts["answer_correct"]})
  os.makedirs(out, exist_ok=True)
  write_json(os.path.join(out, "results.json"), {"seed": seed, "chains": chains, "dpo": dpo})
  mark_done(out)


def _agent(cfg, tokenizer, seed: int, spec: str, job: str, max_new_tokens: int, **kw) -> infer.Agent:
  """The model `spec` as an agent prompted with the preset its SFT job (`job`) trained it with; greedy, the
  evaluation's batch size."""
  gen = infer.GenerationConfig(max_new_tokens=max_new_tokens, batch_size=cfg.eval_batch_size, seed=seed)
  return infer.Agent(load_model(spec), tokenizer, cfg.reasoning.data.template, gen, preset=cfg[job].data.prompts,
                     **kw)


def read_results(wd: str, seed: int) -> dict:
  """One seed's results for the report: eval_job's ("systems", "grpo", "summary_rl") and chains_job's ("chains",
  "dpo")."""
  from pipelines.demo_seed import Paths
  p = Paths(wd)
  out = {}
  for job in ("eval", "chains"):
    with open(p.seed(seed, job, "results.json")) as f:
      out.update(json.load(f))
  return out


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


def _rl_metrics(path: str) -> list[dict]:
  """A GRPO run's per-rollout training accuracy (answer reward mean over the rollout's sampled replies)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  return [{"step": r["step"], "accuracy": r["accuracy"]} for r in rows if "accuracy" in r]


class _SameChains:
  """A reasoning agent whose greedy replies are kept: two systems with the same reasoning agent read the same
  chains, written once (keyed by conversation and image pixels)."""

  def __init__(self, agent: infer.Agent):
    self.agent, self.prompts, self.cache = agent, agent.prompts, {}

  @staticmethod
  def _key(conv, image) -> str:
    h = hashlib.sha1(json.dumps(conv, sort_keys=True).encode())
    if image is not None:
      h.update(image.tobytes())
    return h.hexdigest()

  def complete(self, conversations, images, **kw):
    keys = [self._key(c, i) for c, i in zip(conversations, images)]
    todo = [j for j, k in enumerate(keys) if k not in self.cache]
    if todo:
      replies = self.agent.complete([conversations[j] for j in todo], [images[j] for j in todo], **kw)
      self.cache.update({keys[j]: r for j, r in zip(todo, replies)})
    return [self.cache[k] for k in keys]


class _Silent:
  """A 'reasoning agent' that writes an empty chain: the summary agent must answer on its own."""

  def __init__(self, preset: prompts.PromptPreset):
    self.prompts = preset  # unwraps the empty reply as the summary agent's preset would

  def complete(self, conversations, images, **kw):
    return ["" for _ in conversations]
