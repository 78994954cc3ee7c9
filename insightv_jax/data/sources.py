"""Where training records come from: random-access sources of (where, record JSON bytes) for Grain.

    source = open_source("array_record", ["train-0.ar", "train-1.ar"])
    len(source)        # 2000
    source[7]          # ("train-0.ar,train-1.ar[7]", b'{"kind": "reasoning_sft", ...}')

Every source yields `where` (a name for the record: file and index or line) next to the bytes, so that a bad
record can be named downstream. Kinds:
  array_record  ArrayRecord files written by `records.write_array_record` (training; fast random access)
  jsonl         JSONL files, read into memory (small sets, hand-written tests)
  tfds          a prepared TFDS builder folder (`tfds_source.prepare_tfds`); the builder lives in its own
                module so that Grain worker processes can import it
"""

from __future__ import annotations

import os
from typing import Sequence


class JsonlSource:
  """In-memory random-access source over JSONL files; elements are ("file:line", line bytes)."""

  def __init__(self, paths: str | Sequence[str]):
    paths = [paths] if isinstance(paths, str) else list(paths)
    self._items: list[tuple[str, bytes]] = []
    for p in paths:
      with open(p, "rb") as f:
        for lineno, line in enumerate(f, 1):
          if line.strip():
            self._items.append((f"{p}:{lineno}", line))

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, i: int) -> tuple[str, bytes]:
    return self._items[i]


class ArrayRecordSource:
  """Random-access source over ArrayRecord files (a Grain `RandomAccessDataSource`).

  Elements are ("names[index]", bytes), e.g. ("sft.ar[12]", b'{...}'), the index running over all files.
  """

  def __init__(self, paths: str | Sequence[str]):
    import grain
    self.paths = [paths] if isinstance(paths, str) else list(paths)
    self._src = grain.sources.ArrayRecordDataSource(self.paths)
    self._names = ",".join(os.path.basename(p) for p in self.paths)

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i: int) -> tuple[str, bytes]:
    return f"{self._names}[{i}]", self._src[i]

  def __repr__(self):
    return f"ArrayRecordSource({self.paths})"


def open_source(kind: str, paths: str | Sequence[str], split: str = "train"):
  """kind: 'array_record' (paths: files), 'jsonl' (paths: files), 'tfds' (paths: a prepared builder dir).

  A missing path is a FileNotFoundError naming the kind and every missing path.
  """
  listed = [paths] if isinstance(paths, str) else list(paths)
  missing = [p for p in listed if not os.path.exists(p)]
  if missing or not listed:
    raise FileNotFoundError(f"{kind} data source: {'no paths given' if not listed else 'no such file or folder'}"
                            f"{': ' + ', '.join(map(repr, missing)) if missing else ''} (data paths: {listed})")
  if kind == "array_record":
    return ArrayRecordSource(paths)
  if kind == "jsonl":
    return JsonlSource(paths)
  if kind == "tfds":
    from insightv_jax.data.tfds_source import TfdsRecordSource  # TensorFlow Datasets is imported only when used
    return TfdsRecordSource(listed[0], split)
  raise ValueError(f"unknown source kind {kind!r}; expected array_record, jsonl or tfds")
