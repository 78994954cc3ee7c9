"""The data-generation run: synthesis -> assessment -> assembly -> report, resumable at any point.

    run(config, workdir)     # what `insightv-datagen` calls; the config is configs/datagen.py

Work is sharded by question id (`shard` of `num_shards`, one per process or host). Every finished path (or
its drop reason) is appended to an append-only journal, workdir/journal/paths-{shard}-of-{n}.jsonl, after
each chunk of questions, and fsynced; a restarted run reads the journal and generates only the
(question, path) pairs it lacks, so a killed run loses at most one chunk of work and never duplicates a path.
A line cut by a kill is dropped on restart. Assessment and assembly are pure functions of the journal, so
a resumed run writes exactly the datasets an uninterrupted run writes.

Server failures. A generator server that fails for good (connection refused through the retries, 401 / 403 /
404, an unknown model: `openai_client.ServerError`) stops the run at once, naming the URL and the reason; the
chunk in flight is not journaled, so a rerun resumes where the journal ends. Paths dropped because their
requests failed (retries exhausted) are retried by a rerun, and a run in which more than half of the paths
failed their requests stops with an error instead of writing mostly empty datasets.

Outputs: workdir/datasets/{reasoning_sft,summary_sft,dpo}-{shard}-of-{n}.{jsonl,arrayrecord},
workdir/report/ (report.md, counts.json, scores.png, examples.html).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time

from absl import logging

from data_gen import assemble, assess, backends, progressive, report
from insightv_jax.data import llava_format, prompts, records, sources
from insightv_jax.utils import openai_client
from insightv_jax.utils.faults import kill_if
from insightv_jax.utils.files import append_jsonl, read_jsonl_log, write_json


def _shard_of(qid: str, n: int) -> int:
  return backends.stable_seed(qid, "shard") % n


def make_world(cfg):
  from data_gen.synthetic.world import World, WorldConfig
  w = cfg.world
  return World(WorldConfig(kinds=tuple(w.kinds.split(",")), grid=w.grid, image_size=w.image_size, bars=w.bars,
                           shapes=w.shapes, shape_grid=w.shape_grid), seed=w.seed)


def load_questions(cfg) -> tuple[list[records.Question], object]:
  """(questions, world or None). config.questions: a JSONL of question records, 'synthetic:N', or
  'llava:<file>': LLaVA-NeXT JSON (a JSON array, JSON lines or a YAML mixture), each record's first human turn
  the question and its first gpt turn the ground truth (`llava_format.to_question`); a repeated id gets a
  "#k" suffix (question ids must be unique).

  The synthetic world is built whenever something needs it: synthetic questions, the scripted backend, or
  the programmatic scorer (questions from a JSONL written by the same world also work).
  """
  needs_world = (cfg.questions.startswith("synthetic:") or cfg.scorer == "synthetic"
                 or cfg.backend.kind == "scripted")
  world = make_world(cfg) if needs_world else None
  if cfg.questions.startswith("synthetic:"):
    n = int(cfg.questions.split(":", 1)[1])
    return [world.question(i, cfg.world.split) for i in range(n)], world
  if cfg.questions.startswith("llava:"):
    qs, seen = [], collections.Counter()
    for where, raw in sources.open_source("json", cfg.questions[len("llava:"):]):
      q = llava_format.to_question(json.loads(raw), where)
      seen[q.id] += 1
      qs.append(q if seen[q.id] == 1 else dataclasses.replace(q, id=f"{q.id}#{seen[q.id] - 1}"))
    return qs, world
  qs = list(records.read_jsonl(cfg.questions))
  bad = [r.id for r in qs if not isinstance(r, records.Question)]
  if bad:
    raise records.RecordError(f"{cfg.questions}: records {bad[:5]} are not questions")
  return qs, world


def _key(row: dict) -> tuple[str, int]:
  return row["question_id"], row["path_index"]


def _request_failed(row: dict) -> bool:
  return row["type"] == "drop" and row["reason"] == "request_failed"


def _stop_if_most_requests_failed(rows: list[dict], backend, journal: str) -> None:
  """More than half of the paths lost to failed requests: an error naming the server, not a report of done."""
  failed = sum(map(_request_failed, rows))
  if rows and failed > len(rows) / 2:
    where = getattr(backend, "base_url", f"the {backend.name} backend")
    stats = getattr(backend, "stats", None)
    raise openai_client.ServerError(
        f"{where}: {failed} of {len(rows)} paths failed their requests after the retries"
        + (f" (client counts: {json.dumps(stats)})" if stats else "") + f"; the journal {journal} is kept and a "
        "rerun retries exactly those paths once the server answers")


def _image(q: records.Question, image_root: str | None, source: str) -> bytes | None:
  """The question's (first) image bytes; a missing or unreadable file is a RecordError naming the question."""
  if not q.images:
    return None
  try:
    return q.images[0].read(image_root)
  except OSError as e:
    raise records.RecordError(f"{source}: question {q.id!r}: image {q.images[0].path!r} cannot be read under "
                              f"--config.image_root={image_root or ''!r} ({e.strerror or e})") from e


def make_backend(cfg, world, cache_dir: str):
  kind = cfg.backend.kind
  if kind == "scripted":
    if world is None:
      raise ValueError("backend.kind='scripted' needs synthetic questions (config.questions='synthetic:N')")
    return backends.ScriptedBackend(world, mistake_rate=cfg.backend.mistake_rate,
                                    malformed_rate=cfg.backend.malformed_rate)
  if kind == "openai":
    return backends.OpenAIBackend(cfg.backend.base_url, cfg.backend.model, api_key_env=cfg.backend.api_key_env,
                                  cache_dir=cache_dir, concurrency=cfg.backend.concurrency,
                                  max_retries=cfg.backend.max_retries, timeout_s=cfg.backend.timeout_s,
                                  backoff_s=cfg.backend.backoff_s)
  if kind == "local":
    from insightv_jax.checkpoints import load_model
    from insightv_jax.data.tokenizer import load_tokenizer
    from insightv_jax.infer import Agent, GenerationConfig
    model = load_model(cfg.backend.model, dtype=cfg.backend.dtype)
    agent = Agent(model, load_tokenizer(cfg.backend.tokenizer), cfg.backend.template,
                  GenerationConfig(batch_size=cfg.backend.batch_size), preset=cfg.prompts)
    return backends.LocalBackend(agent)
  raise ValueError(f"config.backend.kind={kind!r}; expected scripted, local or openai")


def run(cfg, workdir: str) -> dict:
  shard, n_shards = cfg.shard, cfg.num_shards
  if cfg.prompts not in prompts.PROMPT_PRESETS:
    raise ValueError(f"config.prompts={cfg.prompts!r}; expected one of {sorted(prompts.PROMPT_PRESETS)}")
  for sub in ("journal", "datasets", "report", "cache"):
    os.makedirs(os.path.join(workdir, sub), exist_ok=True)
  with open(os.path.join(workdir, f"config-{shard}.json"), "w") as f:
    f.write(cfg.to_json_best_effort(indent=2))
  questions, world = load_questions(cfg)
  questions = [q for q in questions if _shard_of(q.id, n_shards) == shard]
  backend = make_backend(cfg, world, os.path.join(workdir, "cache"))
  pcfg = progressive.ProgressiveConfig(**cfg.progressive.to_dict())
  preset = prompts.get_preset(cfg.prompts)
  if cfg.synthesis not in ("progressive", "chains"):
    raise ValueError(f"config.synthesis={cfg.synthesis!r}; expected 'progressive' or 'chains'")
  image_root = cfg.image_root or None

  # ------------------------------------------------------------------------------------- synthesis
  journal = os.path.join(workdir, "journal", f"paths-{shard}-of-{n_shards}.jsonl")
  done = {_key(r) for r in read_jsonl_log(journal) if not _request_failed(r)}  # failed requests: retried
  todo = [(q, k) for q in questions for k in range(pcfg.paths_per_question) if (q.id, k) not in done]
  total = len(questions) * pcfg.paths_per_question
  logging.info("shard %d/%d: %d questions, %d/%d paths already in the journal", shard, n_shards, len(questions),
               len(done), total)
  t0, made = time.time(), 0
  chunk = cfg.chunk_questions * pcfg.paths_per_question
  for start in range(0, len(todo), chunk):
    part = todo[start:start + chunk]
    items = [(q, _image(q, image_root, cfg.questions), k) for q, k in part]
    rows = []
    synth = (progressive.synthesize(items, backend, pcfg) if cfg.synthesis == "progressive" else
             progressive.synthesize_chains(items, backend, pcfg, preset=preset))
    for out in synth:
      if isinstance(out, progressive.Dropped):
        rows.append({"type": "drop", "question_id": out.question_id, "path_index": out.path_index,
                     "reason": out.reason})
      else:
        rows.append({"type": "path", "question_id": out.question_id, "path_index": out.meta["path_index"],
                     "record": out.to_json()})
    append_jsonl(journal, rows)
    made += len(part)
    rate = made / max(time.time() - t0, 1e-9)
    logging.info("synthesis: %d/%d paths (%.1f paths/s, ETA %.0fs)", len(done) + made, total, rate,
                 (len(todo) - made) / rate)
    kill_if(cfg.debug_kill_at, f"chunk_{start // chunk + 1}")

  # ------------------------------------------------------------------------------------ assessment
  rows = list({_key(r): r for r in read_jsonl_log(journal)}.values())  # a retried path's last row wins
  _stop_if_most_requests_failed(rows, backend, journal)
  by_q: dict[str, list[records.ReasoningPath]] = collections.defaultdict(list)
  drops = collections.Counter()
  for r in rows:
    if r["type"] == "path":
      by_q[r["question_id"]].append(records.from_json(r["record"], journal))
    else:
      drops[r["reason"]] += 1
  if cfg.scorer == "synthetic":
    if world is None:
      raise ValueError("scorer='synthetic' needs the synthetic world (config.world)")
    scorer = assess.SyntheticScorer(world)
  else:
    scorer = assess.LLMPathScorer(backend)
  judge = assess.LLMAnswerJudge(backend) if cfg.answer_judge == "llm" else None
  assessed = {}
  for q in questions:
    paths = sorted(by_q.get(q.id, []), key=lambda p: p.id)
    assessed[q.id] = assess.assess_question(q, paths, scorer, judge) if paths else []

  # -------------------------------------------------------------------------------------- assembly
  acfg = assemble.AssemblyConfig(**cfg.assembly.to_dict())
  out = {"reasoning_sft": [], "summary_sft": [], "dpo": []}
  for i, q in enumerate(sorted(questions, key=lambda q: q.id)):
    r, s, d = assemble.assemble_question(q, assessed[q.id], acfg, index=i, preset=preset)
    out["reasoning_sft"] += r
    out["summary_sft"] += s
    out["dpo"] += d
  files = {}
  for name, recs in out.items():
    base = os.path.join(workdir, "datasets", f"{name}-{shard}-of-{n_shards}")
    records.write_jsonl(base + ".jsonl", recs)
    records.write_array_record(base + ".arrayrecord", recs)
    files[name] = base + ".arrayrecord"
  all_paths = [p for ps in assessed.values() for p in ps]
  counts = report.write(os.path.join(workdir, "report"), questions=questions, paths=all_paths, drops=drops,
                        datasets=out, band=lambda p: assemble.band(p, acfg), image_root=image_root)
  if isinstance(backend, backends.OpenAIBackend):
    counts["backend"] = dict(backend.stats)
  write_json(os.path.join(workdir, "report", "counts.json"), counts)
  logging.info("datagen done: %s", json.dumps(counts))
  return {"counts": counts, "files": files}
