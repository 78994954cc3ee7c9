"""The resumable evaluation loop: a system over benchmark questions, one result row per question.

    results = evaluate("two_agents", system_fn, questions, out_dir, image_root=root, batch_size=16)

A system is `fn(list[infer.Example]) -> list[dict(reply, chain, judgement)]`. Results are appended to
out_dir/<system>.jsonl after every batch; a rerun skips the ids already there, so an interrupted run loses at most
one batch of work and never recomputes finished examples. Each result row has `correct` (that row's own decision,
`official.score_one`: for circular MMBench, its rotation alone), `extracted` (what the rule read from the reply),
`prediction` and the benchmark row.

A question whose image cannot be read (a missing file, bytes that are no image) does what a bad training record
does: the run goes on, and the question counts as failed: its row has `correct` False, an empty reply, `error`
(why) and `file` / `line` (where the benchmark file asks it), and a warning names the file, the line and the
question id. Such rows are not written to the journal, so a rerun tries the question again.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

from absl import logging

from insightv_jax import infer
from insightv_jax.data import prompts, records
from insightv_jax.data.images import decode
from insightv_jax.eval.official import score_one
from insightv_jax.scoring import vlmeval_compat as vc
from insightv_jax.utils.files import append_jsonl, read_jsonl_log
from insightv_jax.utils.inputs import InputError


def to_example(q: records.Question, image_root: str | None) -> infer.Example:
  """A file's own image folder (meta image_root: MathVista's JSON, a TSV's images/<name>/) wins over image_root."""
  image = decode(q.images[0].read(q.meta.get("image_root") or image_root), q.id) if q.images else None
  return infer.Example(q.id, prompts.format_question(q.question, q.choices), image)


def where(q: records.Question) -> str:
  """Where a benchmark file asks `q`: "<file>:<line>" (or "<file>" when the format has no lines of its own)."""
  file, line = q.meta.get("file"), q.meta.get("line")
  return f"{file}:{line}" if file and line else file or q.source or "?"


def _row(q: records.Question, output: dict, rules: str) -> dict:
  return {"id": q.id, "benchmark": q.meta.get("benchmark", q.source or "synthetic"),
          "category": q.meta.get("category", q.meta.get("task", "all")), "question": q.question, "answer": q.answer,
          "choices": list(q.choices) if q.choices else None, **output, **score_one(q, output["reply"], rules=rules)}


def _failed_row(q: records.Question, error: str, rules: str) -> dict:
  """The row of a question the system could not be asked: an empty reply, decided wrong."""
  row = _row(q, {"reply": "", "chain": "", "judgement": None}, rules)
  return {**row, "correct": False, "error": error, "file": q.meta.get("file"), "line": q.meta.get("line")}


def evaluate(system: str, fn: Callable[[list[infer.Example]], list[dict]], questions: Sequence[records.Question],
             out_dir: str, *, image_root: str | None = None, batch_size: int = 16,
             rules: str = "current") -> list[dict]:
  """Runs `fn` over the questions not yet in out_dir/<system>.jsonl and returns every question's result row.

  rules: VLMEvalKit's rule set for the official scorers ("current" | "legacy", see scoring.vlmeval_compat).
  """
  vc.check_rules(rules)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{system}.jsonl")
  # a line cut by a kill mid-write is dropped: that example is redone
  done: dict[str, dict] = {row["id"]: row for row in read_jsonl_log(path, keep=lambda row: "id" in row)}
  todo = [q for q in questions if q.id not in done]
  logging.info("%s: %d done, %d to go", system, len(done), len(todo))
  t0 = time.time()
  for start in range(0, len(todo), batch_size):
    chunk, examples = [], []
    for q in todo[start:start + batch_size]:
      try:
        examples.append(to_example(q, image_root))
        chunk.append(q)
      except (OSError, InputError) as e:  # a missing / unreadable / undecodable image: this question fails
        error = f"image cannot be read ({e})"
        logging.warning("%s: %s: question %r counts as failed: %s", system, where(q), q.id, error)
        done[q.id] = _failed_row(q, error, rules)
    if chunk:
      rows = [_row(q, o, rules) for q, o in zip(chunk, fn(examples))]
      append_jsonl(path, rows)
      done.update((row["id"], row) for row in rows)
    n = min(start + batch_size, len(todo))
    rate = n / max(time.time() - t0, 1e-9)
    logging.info("%s: %d/%d examples, %.2f ex/s, ETA %.0fs", system, n, len(todo), rate, (len(todo) - n) / rate)
  return [done[q.id] for q in questions]
