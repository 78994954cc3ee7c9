"""Where training records come from: random-access sources of (where, record JSON bytes) for Grain.

    source = open_source("array_record", ["train-0.ar", "train-1.ar"])
    len(source)        # 2000
    source[7]          # ("train-0.ar,train-1.ar[7]", b'{"kind": "reasoning_sft", ...}')

Every source yields `where` (a name for the record: file and index or line) next to the bytes, so that a bad
record can be named downstream. Kinds:
  array_record  ArrayRecord files written by `records.write_array_record` (training; fast random access)
  json          JSON files, read into memory; per file, by its content: JSON lines ("file:line"), a JSON array
                (first character `[`: "file[index]"), or a YAML data mixture (.yaml / .yml, below). "jsonl" is
                the same reader (its older name). Our records, or LLaVA-NeXT's JSON with data.format="llava".
  tfds          a prepared TFDS builder folder (`tfds_source.prepare_tfds`); the builder lives in its own
                module so that Grain worker processes can import it

A YAML mixture is LLaVA-NeXT's (llava/train/train.py, LazySupervisedDataset):

    datasets:
      - json_path: llava_665k.json         # a JSON array or JSON lines; relative: to the YAML file's folder
        sampling_strategy: first:1000       # all (default) | first:N | end:N | random:N; N a count or P%
      - json_path: /data/sharegpt4v.jsonl
        sampling_strategy: random:10%

Each entry's records are read, sampled, and appended in the order of the entries (`sample` has the rules).
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Sequence

from insightv_jax.utils.inputs import InputError, one_line

_ARRAY_RECORD_MAGIC = b"\x83\xafp\xd1\r\x88J?"  # the first bytes of every riegeli (ArrayRecord) file
_YAML_SUFFIXES = (".yaml", ".yml")


def _head(path: str) -> bytes:
  """The first non-blank byte of a file (b"" for an empty or blank one)."""
  with open(path, "rb") as f:
    while chunk := f.read(4096):
      if chunk.strip():
        return chunk.lstrip()[:1]
  return b""


def read_json_records(path: str) -> list[tuple[str, bytes]]:
  """A JSON array ("path[i]", element JSON) or JSON lines ("path:line", line bytes), by the file's content."""
  with open(path, "rb") as f:
    if f.read(len(_ARRAY_RECORD_MAGIC)) == _ARRAY_RECORD_MAGIC:
      raise InputError(f"json data source: {path!r} is an ArrayRecord file: set --config.data.source=array_record")
  if _head(path) == b"[":
    with open(path, "rb") as f:
      try:
        items = json.load(f)
      except json.JSONDecodeError as e:
        raise InputError(f"json data source: {path!r} starts like a JSON array but is not valid JSON ({e})") from e
    return [(f"{path}[{i}]", json.dumps(x, ensure_ascii=False).encode("utf-8")) for i, x in enumerate(items)]
  out = []
  with open(path, "rb") as f:
    for lineno, line in enumerate(f, 1):
      if line.strip():
        out.append((f"{path}:{lineno}", line))
  return out


def sample(items: list, strategy: str, rng: random.Random) -> list:
  """LLaVA-NeXT's `sampling_strategy`, as train.py applies it to one mixture entry's records.

    all         every record, in file order (also train.py's default)
    first:N     items[:N]
    end:N       items[-N:] (end:0 gives none; train.py's items[-0:] would give all)
    random:N    rng.shuffle(a copy of items), then its first N (in shuffled order)
  N is a count or "P%" with an integer P: ceil(P * len(items) / 100). N past the end gives every record.
  train.py shuffles with Python's global, unseeded `random` (another subset in each run and on each rank); we
  use the seeded `rng`, so that every process reads the same mixture (processes then take disjoint slices).
  Anything else is a ValueError (train.py silently takes every record for an unknown strategy, e.g. "10%").
  """
  strategy = str(strategy).strip()
  if strategy == "all":
    return list(items)
  name, sep, number = strategy.partition(":")
  try:
    if not sep or name not in ("first", "end", "random"):
      raise ValueError
    n = math.ceil(int(number[:-1]) * len(items) / 100) if number.endswith("%") else int(number)
    if n < 0:
      raise ValueError
  except ValueError:
    raise InputError(f"sampling_strategy {strategy!r}: expected all, first:N, end:N or random:N, N a count or "
                     "an integer percentage (e.g. first:1000, random:10%)") from None
  if name == "first":
    return list(items[:n])
  if name == "end":
    return list(items[len(items) - n:]) if n else []
  shuffled = list(items)
  rng.shuffle(shuffled)
  return shuffled[:n]


def read_mixture(path: str, seed: int = 0) -> list[tuple[str, bytes]]:
  """A LLaVA-NeXT YAML mixture -> the sampled records of its entries, in order (random:N draws from one
  `random.Random(seed)`, entry after entry). Elements are named by their own file and index or line."""
  import yaml  # PyYAML: only for mixtures
  with open(path, encoding="utf-8") as f:
    try:
      spec = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise InputError(f"data mixture {path!r}: not valid YAML ({e})") from e
  entries = spec.get("datasets") if isinstance(spec, dict) else None
  if not isinstance(entries, list) or not entries:
    raise InputError(f"data mixture {path!r}: expected a 'datasets:' list of entries with json_path and "
                     "sampling_strategy (LLaVA-NeXT's YAML format)")
  rng = random.Random(seed)
  out = []
  for k, entry in enumerate(entries):
    where = f"data mixture {path!r}, datasets[{k}]"
    json_path = entry.get("json_path") if isinstance(entry, dict) else None
    if not isinstance(json_path, str) or not json_path:
      raise InputError(f"{where}: needs a json_path (a JSON array or JSON lines file), got {entry!r:.100}")
    json_path = os.path.join(os.path.dirname(path), os.path.expanduser(json_path))
    if not os.path.isfile(json_path):
      raise FileNotFoundError(f"{where}: json_path {json_path!r}: no such file")
    if json_path.endswith(_YAML_SUFFIXES):
      raise InputError(f"{where}: json_path {json_path!r} is a YAML file; mixtures do not nest")
    try:
      out += sample(read_json_records(json_path), entry.get("sampling_strategy", "all"), rng)
    except ValueError as e:
      raise InputError(f"{where}: {e}") from e
  return out


class JsonSource:
  """In-memory random-access source over JSON files (JSON lines, JSON arrays, YAML mixtures); elements are
  ("file:line" or "file[index]", one record's JSON bytes)."""

  def __init__(self, paths: str | Sequence[str], seed: int = 0):
    paths = [paths] if isinstance(paths, str) else list(paths)
    self._items: list[tuple[str, bytes]] = []
    for p in paths:
      self._items += read_mixture(p, seed) if p.endswith(_YAML_SUFFIXES) else read_json_records(p)

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, i: int) -> tuple[str, bytes]:
    return self._items[i]


class ArrayRecordSource:
  """Random-access source over ArrayRecord files (a Grain `RandomAccessDataSource`).

  Elements are ("names[index]", bytes), e.g. ("sft.ar[12]", b'{...}'), the index running over all files.
  """

  def __init__(self, paths: str | Sequence[str]):
    self.paths = [paths] if isinstance(paths, str) else list(paths)
    for p in self.paths:
      if os.path.isfile(p) and (p.endswith(_YAML_SUFFIXES) or _head(p) in (b"[", b"{")):
        raise InputError(f"array_record data source: {p!r} is JSON or YAML text, not an ArrayRecord file: set "
                         "--config.data.source=json (and --config.data.format=llava for LLaVA-NeXT data)")
    self._src = _open_array_records(self.paths)
    self._names = ",".join(os.path.basename(p) for p in self.paths)

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i: int) -> tuple[str, bytes]:
    try:
      return f"{self._names}[{i}]", self._src[i]
    except Exception as e:  # riegeli reports corruption as RuntimeError / ValueError without the file name
      raise InputError(f"array_record data source: {self._names}[{i}] cannot be read, the file is corrupt or "
                       f"truncated ({type(e).__name__}: {one_line(e)[:200] or 'no message'}); rewrite it with "
                       "records.write_array_record") from e

  def __repr__(self):
    return f"ArrayRecordSource({self.paths})"


def _open_array_records(paths: list[str]):
  """grain's ArrayRecordDataSource over `paths`; a file riegeli cannot open is an InputError naming it."""
  import grain
  try:
    return grain.sources.ArrayRecordDataSource(paths)
  except Exception as e:  # riegeli: RuntimeError / ValueError, often without the file name
    bad = next((p for p in paths if not _opens(p)), paths[0])
    size = os.path.getsize(bad) if os.path.isfile(bad) else 0
    raise InputError(f"array_record data source: {bad} is not a readable ArrayRecord file ({size} bytes: "
                     f"{'empty' if not size else 'corrupt, truncated or another format'}; riegeli says "
                     f"{type(e).__name__}: {one_line(e)[:200] or 'no message'}). Rewrite it with "
                     "records.write_array_record, or for JSON / JSONL data set --config.data.source=json") from e


def _opens(path: str) -> bool:
  import grain
  try:
    grain.sources.ArrayRecordDataSource([path])
    return True
  except Exception:  # noqa: BLE001 - any failure means this file is the bad one
    return False


def detect_kind(paths: Sequence[str]) -> str:
  """The source kind of existing paths, by content: a folder is a prepared TFDS builder ('tfds'), JSON / JSONL /
  YAML text is 'json', anything else 'array_record' (whose reader then checks its format)."""
  if os.path.isdir(paths[0]):
    return "tfds"
  if all(os.path.isfile(p) and (p.endswith(_YAML_SUFFIXES) or _head(p) in (b"[", b"{")) for p in paths):
    return "json"
  return "array_record"


def open_source(kind: str, paths: str | Sequence[str], split: str = "train", *, seed: int = 0):
  """kind: 'auto' (by content, `detect_kind`), 'array_record' (paths: files), 'json' or 'jsonl' (paths: JSON /
  JSONL / YAML mixture files), 'tfds' (paths: a prepared builder dir). seed: the random:N draws of YAML mixtures.

  A missing path is a FileNotFoundError naming the kind and every missing path.
  """
  listed = [paths] if isinstance(paths, str) else list(paths)
  missing = [p for p in listed if not os.path.exists(p)]
  if missing or not listed:
    raise FileNotFoundError(f"{kind} data source: {'no paths given' if not listed else 'no such file or folder'}"
                            f"{': ' + ', '.join(map(repr, missing)) if missing else ''} (data paths: {listed})")
  if kind == "auto":
    kind = detect_kind(listed)
  if kind == "array_record":
    return ArrayRecordSource(paths)
  if kind in ("json", "jsonl"):
    return JsonSource(paths, seed)
  if kind == "tfds":
    from insightv_jax.data.tfds_source import TfdsRecordSource  # TensorFlow Datasets is imported only when used
    return TfdsRecordSource(listed[0], split)
  raise InputError(f"unknown source kind {kind!r}; expected auto, array_record, json (or jsonl) or tfds")
