"""Streaming safetensors I/O over numpy memory maps (bf16 through ml_dtypes).

Reading maps each file once and hands out zero-copy views, so a loader copies only the slice of a
tensor that a device needs. Writing streams tensor by tensor into shards of bounded size and writes
the `model.safetensors.index.json` that `transformers` reads.

Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

from insightv_jax.utils.files import atomic_write

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(ValueError):
  pass


def read_header(path: str) -> tuple[dict, int]:
  """(header dict without __metadata__, byte offset where data starts)."""
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise SafetensorsError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", raw)
    if n > 100 * 2**20:
      raise SafetensorsError(f"{path}: header length {n} is implausible; the file is corrupt or not safetensors")
    try:
      header = json.loads(f.read(n))
    except json.JSONDecodeError as e:
      raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from e
  header.pop("__metadata__", None)
  return header, 8 + n


class SafetensorsFile:
  """Lazy, memory-mapped access to one file's tensors."""

  def __init__(self, path: str):
    self.path = path
    self.header, self._start = read_header(path)
    self._mm = np.memmap(path, dtype=np.uint8, mode="r")

  def keys(self) -> list[str]:
    return list(self.header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    """A read-only view of the tensor (no copy)."""
    info = self.header[name]
    if info["dtype"] not in DTYPES:
      raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    dtype = DTYPES[info["dtype"]]
    begin, end = info["data_offsets"]
    count = int(np.prod(info["shape"], dtype=np.int64))
    if end - begin != count * dtype.itemsize:
      raise SafetensorsError(f"{self.path}: tensor {name!r} has {end - begin} bytes for shape {info['shape']}")
    buf = self._mm[self._start + begin:self._start + end]
    return buf.view(dtype).reshape(info["shape"])


def open_checkpoint(folder: str) -> dict[str, SafetensorsFile]:
  """name -> file for every tensor of a (possibly sharded) checkpoint folder."""
  index = os.path.join(folder, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = {fn: SafetensorsFile(os.path.join(folder, fn)) for fn in sorted(set(weight_map.values()))}
    return {name: files[fn] for name, fn in weight_map.items()}
  single = os.path.join(folder, "model.safetensors")
  if not os.path.exists(single):
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")
  f = SafetensorsFile(single)
  return {name: f for name in f.keys()}


def write_checkpoint(folder: str, tensors: Iterable[tuple[str, tuple[int, ...], np.dtype]],
                     fetch: Callable[[str], np.ndarray], max_shard_bytes: int = 5 * 2**30) -> list[str]:
  """Writes tensors (name, shape, dtype) into shards, calling `fetch(name)` one tensor at a time.

  Files are written under temporary names and renamed at the end, so an interrupted save never leaves
  a half-written checkpoint that looks complete. Returns the file names.
  """
  specs = list(tensors)
  shards: list[list[tuple[str, tuple[int, ...], np.dtype]]] = [[]]
  size = 0
  for spec in specs:
    nbytes = int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(spec)
    size += nbytes
  n = len(shards)
  names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
  os.makedirs(folder, exist_ok=True)
  for fname, shard in zip(names, shards):
    header, offset = {}, 0
    for name, shape, dtype in shard:
      nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
      header[name] = {"dtype": NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
      offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_write(os.path.join(folder, fname), "wb") as f:
      f.write(struct.pack("<Q", len(blob)))
      f.write(blob)
      for name, shape, dtype in shard:
        arr = np.ascontiguousarray(fetch(name), dtype=dtype)
        if arr.shape != tuple(shape):
          raise SafetensorsError(f"tensor {name!r}: fetched shape {arr.shape}, declared {tuple(shape)}")
        f.write(arr.tobytes())
  if n > 1:
    weight_map = {name: fname for fname, shard in zip(names, shards) for name, _, _ in shard}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
  return names

