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
from insightv_jax.utils.inputs import InputError

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(InputError):
  """A safetensors file that cannot be read as it says; the message names the file (and the tensor)."""


def read_header(path: str) -> tuple[dict, int]:
  """(header dict without __metadata__, byte offset where data starts)."""
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise SafetensorsError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", raw)
    size = os.fstat(f.fileno()).st_size
    if n > min(100 * 2**20, size - 8):
      raise SafetensorsError(f"{path}: header length {n} is implausible for a file of {size} bytes; the file is "
                             "truncated, corrupt or not safetensors")
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise SafetensorsError(f"{path}: header is not valid JSON ({e}); the file is corrupt or not safetensors") from e
  if not isinstance(header, dict):
    raise SafetensorsError(f"{path}: header is not a JSON object; the file is corrupt or not safetensors")
  header.pop("__metadata__", None)
  return header, 8 + n


def check_tensors(path: str, header: dict, data_bytes: int) -> None:
  """Every tensor's dtype, shape and byte range against the header and the `data_bytes` after it: a truncated
  or mismatched file names itself and its first bad tensor, before any tensor is reshaped."""
  for name, info in header.items():
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
      raise SafetensorsError(f"{where}: header entry needs dtype, shape and data_offsets, got {info!r:.120}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
      raise SafetensorsError(f"{where}: shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
      raise SafetensorsError(f"{where}: data_offsets {offsets!r} are not [begin, end] byte offsets")
    begin, end = offsets
    dtype = DTYPES.get(info["dtype"])  # an unsupported dtype is an error only when the tensor is read
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if dtype else end - begin
    if end - begin != want:
      raise SafetensorsError(f"{where}: {end - begin} bytes for {info['dtype']} {shape} ({want} bytes); the header "
                             "disagrees with itself: the file is corrupt")
    if end > data_bytes:
      raise SafetensorsError(f"{where}: its bytes [{begin}, {end}) end past the file's {data_bytes} data bytes; "
                             "the file is truncated (an interrupted copy or download?): copy it again")


class SafetensorsFile:
  """Lazy, memory-mapped access to one file's tensors (every tensor's byte range checked on open)."""

  def __init__(self, path: str):
    self.path = path
    self.header, self._start = read_header(path)
    check_tensors(path, self.header, os.path.getsize(path) - self._start)
    self._mm = np.memmap(path, dtype=np.uint8, mode="r")

  def keys(self) -> list[str]:
    return list(self.header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    """A read-only view of the tensor (no copy); its dtype and byte range were checked on open."""
    info = self.header[name]
    if info["dtype"] not in DTYPES:
      raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']!r} (supported: "
                             f"{', '.join(DTYPES)})")
    begin, end = info["data_offsets"]
    buf = self._mm[self._start + begin:self._start + end]
    return buf.view(DTYPES[info["dtype"]]).reshape(info["shape"])


def open_checkpoint(folder: str) -> dict[str, SafetensorsFile]:
  """name -> file for every tensor of a (possibly sharded) checkpoint folder."""
  index = os.path.join(folder, "model.safetensors.index.json")
  if os.path.exists(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
      raise SafetensorsError(f"{index}: not a safetensors index (JSON with a weight_map) ({type(e).__name__}: {e})") \
          from e
    missing = sorted({fn for fn in weight_map.values() if not os.path.isfile(os.path.join(folder, fn))})
    if missing:
      raise SafetensorsError(f"{index}: names shard files that are not in {folder}: {missing[:5]}; the checkpoint "
                             "is incomplete: copy the missing files")
    files = {fn: SafetensorsFile(os.path.join(folder, fn)) for fn in sorted(set(weight_map.values()))}
    return {name: files[fn] for name, fn in weight_map.items()}
  single = os.path.join(folder, "model.safetensors")
  if not os.path.exists(single):
    raise SafetensorsError(f"{folder}: no model.safetensors or model.safetensors.index.json (expected a safetensors "
                           "checkpoint folder)")
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

