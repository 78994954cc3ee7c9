"""`insightv-demo` / `make demo`: the whole Insight-V pipeline in miniature, on CPU (configs/demo.py).

  1. data generation on the synthetic world: progressive path synthesis (scripted generator with injected
     mistakes), assessment, assembly of reasoning-SFT, summary-SFT and DPO sets       -> datagen/
  2. a BPE tokenizer trained on the demo's own text                                     -> tokenizer/
  3. SFT of the reasoning agent, the summary agent, and two single-model baselines
     (direct answer; chain-of-thought in one model)                     -> reasoning/ summary/ direct/ cot/
  4. iterative DPO of the reasoning agent (sample -> assess -> pairs -> DPO)           -> dpo/round_k/
  5. evaluation on held-out questions: baselines vs the two agents, before / after DPO  -> eval/
  6. report.md with the accuracies per stage and PNG plots of training curves and accuracy
Every stage is resumable: rerunning with the same --workdir skips what is finished.
"""

from __future__ import annotations

import copy
import os
import time

from absl import logging

from data_gen import pipeline
from insightv_jax import infer
from insightv_jax.checkpoints import load_model
from insightv_jax.data import prompts, records
from insightv_jax.data.tokenizer import load_tokenizer, train_bpe
from insightv_jax.eval import readers, runner
from insightv_jax.train.loop import train
from insightv_jax.utils.files import is_done, mark_done
from pipelines.demo_report import write_report
from pipelines.iterative_dpo import run_iterative


def run_demo(cfg, wd: str) -> dict:
  os.makedirs(wd, exist_ok=True)
  timings = {}
  t_start = time.time()

  # -------------------------------------------------------------------------------- 1. data generation
  t = time.time()
  gen_dir = os.path.join(wd, "datagen")
  if not is_done(gen_dir):
    pipeline.run(cfg.datagen, gen_dir)
    mark_done(gen_dir)
  world = pipeline.make_world(cfg.datagen)
  data_dir = os.path.join(wd, "data")
  ds = lambda name: os.path.join(gen_dir, "datasets", f"{name}-0-of-1.arrayrecord")
  if not is_done(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    n_train = int(cfg.datagen.questions.split(":")[1])
    train_questions = [world.question(i, "train") for i in range(n_train)]
    records.write_array_record(os.path.join(data_dir, "direct.arrayrecord"), train_questions)
    records.write_array_record(os.path.join(data_dir, "cot.arrayrecord"),
                               _cot_records(train_questions, ds("reasoning_sft")))
    records.write_jsonl(os.path.join(data_dir, "test.jsonl"), (world.question(i, "test") for i in range(cfg.n_test)))
    mark_done(data_dir)
  timings["data generation"] = time.time() - t

  # -------------------------------------------------------------------------------------- 2. tokenizer
  tok_dir = os.path.join(wd, "tokenizer")
  if not is_done(tok_dir):
    texts = [r.reasoning for r in records.read_jsonl(ds("reasoning_sft").replace(".arrayrecord", ".jsonl"))]
    texts += [world.question(i).question for i in range(50)]
    texts += [prompts.REASONING_INSTRUCTION, prompts.SUMMARY_INSTRUCTION, prompts.DIRECT_INSTRUCTION,
              prompts.COT_INSTRUCTION, "Judgement: the reasoning is sound. flawed."] * 20
    train_bpe(texts, cfg.tokenizer_vocab, cfg.reasoning.data.template).save_pretrained(tok_dir)
    mark_done(tok_dir)
  tokenizer = load_tokenizer(tok_dir)

  # ------------------------------------------------------------------------------------------- 3. SFT
  jobs = {"reasoning": ds("reasoning_sft"), "summary": ds("summary_sft"),
          "direct": os.path.join(data_dir, "direct.arrayrecord"), "cot": os.path.join(data_dir, "cot.arrayrecord")}
  for name, path in jobs.items():
    t = time.time()
    out = os.path.join(wd, name)
    if not is_done(out):
      c = copy.deepcopy(cfg[name])
      c.tokenizer, c.data.paths = tok_dir, path
      logging.info("SFT %s on %s", name, path)
      train(c, out)
      mark_done(out)
    timings[f"SFT {name}"] = time.time() - t

  # ------------------------------------------------------------------------------------------- 4. DPO
  t = time.time()
  icfg = copy.deepcopy(cfg.dpo_iterative)
  with icfg.unlocked():
    icfg.start_model = "params:" + os.path.join(wd, "reasoning", "export")
    icfg.datagen.backend.tokenizer = icfg.train.tokenizer = tok_dir
  dpo_rounds = run_iterative(icfg, os.path.join(wd, "dpo"))
  timings["iterative DPO"] = time.time() - t

  # ------------------------------------------------------------------------------------------ 5. eval
  t = time.time()
  accuracy = _evaluate(cfg, wd, tokenizer, data_dir, dpo_rounds)
  timings["evaluation"] = time.time() - t
  timings["total"] = time.time() - t_start

  # ---------------------------------------------------------------------------------------- 6. report
  g = cfg.datagen.world.grid
  return write_report(wd, task=f"count the cells of one colour in a {g} x {g} grid of four equally likely cell "
                      "states (white, red, green, blue)", accuracy=accuracy, timings=timings, dpo_rounds=dpo_rounds,
                      curves={n: os.path.join(wd, n, "metrics.jsonl") for n in jobs} | {
                          f"dpo round {r['round']}": os.path.join(wd, "dpo", f"round_{r['round']}", "train",
                                                                   "metrics.jsonl") for r in dpo_rounds})


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


def _evaluate(cfg, wd, tokenizer, data_dir, dpo_rounds) -> dict:
  questions = readers.read_benchmark(os.path.join(data_dir, "test.jsonl"))
  load = lambda name: load_model("params:" + os.path.join(wd, name, "export"))
  template = cfg.reasoning.data.template
  gen = lambda n: infer.GenerationConfig(max_new_tokens=n, batch_size=cfg.eval_batch_size)
  summary = infer.Agent(load("summary"), tokenizer, template, gen(cfg.answer_max_new_tokens))
  reasoner = infer.Agent(load("reasoning"), tokenizer, template, gen(cfg.reasoning_max_new_tokens))
  direct = infer.Agent(load("direct"), tokenizer, template, gen(cfg.answer_max_new_tokens))
  cot = infer.Agent(load("cot"), tokenizer, template, gen(cfg.reasoning_max_new_tokens + 10),
                    stop_tokens=(prompts.OUTPUT_CLOSE,))
  systems = {
      "direct answer (baseline)": lambda ex: infer.direct(direct, ex),
      "chain-of-thought, one model (baseline)": lambda ex: infer.chain_of_thought(cot, ex),
      "summary agent alone (no chain)": lambda ex: infer.two_agent(_Silent(), summary, ex),
      "two agents (SFT)": lambda ex: infer.two_agent(reasoner, summary, ex),
  }
  for r in dpo_rounds:
    dpo_agent = infer.Agent(load_model(r["model"]), tokenizer, template, gen(cfg.reasoning_max_new_tokens))
    systems[f"two agents + DPO round {r['round']}"] = lambda ex, a=dpo_agent: infer.two_agent(a, summary, ex)
  out_dir = os.path.join(wd, "eval")
  results = {}
  for name, fn in systems.items():
    key = name.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "plus")
    results[name] = runner.evaluate(key, fn, questions, out_dir, image_root=data_dir,
                                    batch_size=cfg.eval_batch_size * 4)
  runner.write_report(out_dir, results, title="Held-out synthetic questions")
  return {name: runner.summarise(rows)["overall"] for name, rows in results.items()}


class _Silent:
  """A 'reasoning agent' that writes an empty chain: the summary agent must answer on its own."""

  prompts = prompts.get_preset("ours")

  def complete(self, conversations, images, **kw):
    return ["" for _ in conversations]
