"""Files that survive a kill at any instant: atomic writes, append-only JSONL journals, stage markers.

    with atomic_write("/run/report.json") as f:      # readers see the old file or the whole new one
      json.dump(report, f)
    append_jsonl(journal, rows)                      # flushed and fsynced before it returns
    rows = read_jsonl_log(journal)                   # complete rows; a line cut by a kill is dropped
    if not is_done(stage_dir): ...; mark_done(stage_dir)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Iterable, Iterator

DONE = "DONE"


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields `path.tmp` to write; renames it over `path` only when the block finishes without an error."""
  tmp = path + ".tmp"
  try:
    yield tmp
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
  """`open(path, mode)` whose content appears at `path` all at once, when the block finishes."""
  with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
    yield f


def write_json(path: str, obj, indent: int | None = 2) -> None:
  """`obj` as JSON, atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=indent)


def append_jsonl(path: str, rows: Iterable[dict], *, sync: bool = True) -> None:
  """Appends one JSON object per line; `sync` flushes and fsyncs before returning (journal semantics)."""
  with open(path, "a", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
    if sync:
      f.flush()
      os.fsync(f.fileno())


def read_jsonl_log(path: str, *, keep=None) -> list[dict]:
  """The complete JSON rows of an append-only log ([] if absent), rewritten to hold only those rows.

  A line cut by a kill mid-write (or empty) is dropped, so the next append never glues onto a partial
  line. keep(row) -> bool drops more rows (e.g. rows past the step a run resumes from).
  """
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and (keep is None or keep(row)):
        rows.append(row)
  with atomic_write(path) as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return rows


def is_done(stage_dir: str) -> bool:
  """Whether `mark_done(stage_dir)` ran: the stage finished and a rerun skips it."""
  return os.path.exists(os.path.join(stage_dir, DONE))


def mark_done(stage_dir: str) -> None:
  os.makedirs(stage_dir, exist_ok=True)
  with atomic_write(os.path.join(stage_dir, DONE)) as f:
    f.write("ok\n")
