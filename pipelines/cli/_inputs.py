"""The command lines' inputs, checked by kind before a job starts: each failure names the flag and what to give.

    check(config, {"tokenizer": TOKENIZER, "data.paths": DATA_FILES, "model.init": MODEL})

Kinds (one function each): a tokenizer folder (or a hub id 'org/name'), a model spec ('<layout>:<folder>' or a
folder; 'random' where allowed), comma-separated data files, an optional folder (image roots), a question source
('synthetic:N', 'llava:<file>' or a JSONL), a server URL. These checks see paths, flag values and what is cheap to
read (a model's config.json, its safetensors headers and every tensor's byte range); the rest of a file is checked
where it is read (records, images, tensors, tokenizers, server replies), and those errors name the file and the
line, record or tensor.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Callable

from insightv_jax.utils.inputs import InputError, existing, is_hub_id, required

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
MODEL_LAYOUTS = ("hf", "params", "llava")


def tokenizer(value: str, flag: str) -> None:
  if is_hub_id(value):  # "org/name": the hub is asked when the job loads it (load_tokenizer names a failure)
    return
  folder = existing(value, flag, kind="dir", what="a tokenizer folder written by save_pretrained")
  if not any(os.path.exists(os.path.join(folder, n)) for n in TOKENIZER_FILES):
    raise InputError(f"{flag}={value}: the folder holds none of {', '.join(TOKENIZER_FILES)} (expected a tokenizer "
                     "folder written by save_pretrained)")


def model(value: str, flag: str, *, allow_random: bool = False) -> None:
  what = "'random' or a model: " if allow_random else "a model: "
  what += "'<layout>:<folder>' (layout hf, params or llava) or a checkpoint folder"
  if allow_random and value == "random":
    return
  required(value, flag, what)
  layout, sep, folder = value.partition(":")
  if not (sep and layout in MODEL_LAYOUTS):
    folder = value
  full = existing(folder, flag, kind="dir", what=what)
  config = os.path.join(full, "config.json")
  if not os.path.exists(config):
    raise InputError(f"{flag}={value}: {folder} has no config.json (expected {what})")
  try:
    with open(config, encoding="utf-8") as f:
      if not isinstance(json.load(f), dict):
        raise ValueError("not a JSON object")
  except (ValueError, UnicodeDecodeError) as e:
    raise InputError(f"{flag}={value}: {config} is not a JSON object ({e}); the checkpoint's config.json is "
                     "corrupt: copy it again") from None
  if layout == "params" and not os.path.isdir(os.path.join(full, "params")):
    raise InputError(f"{flag}={value}: {folder} has no params/ folder (expected a params folder written by "
                     "insightv-train's export or insightv-convert --to=orbax)")
  if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in os.listdir(full)):
    from insightv_jax.checkpoints.safetensors_io import open_checkpoint  # headers and byte ranges only
    open_checkpoint(full)


def optional_model(value: str, flag: str) -> None:
  if value:
    model(value, flag)


def init_model(value: str, flag: str) -> None:
  model(value, flag, allow_random=True)


def data_files(value: str, flag: str) -> None:
  """Comma-separated training data files (or one prepared TFDS folder); each must exist and not be empty."""
  paths = [p for p in required(value, flag, "comma-separated data files").split(",") if p]
  if len(paths) == 1 and os.path.isdir(os.path.expanduser(paths[0])):
    if not os.path.exists(os.path.join(os.path.expanduser(paths[0]), "dataset_info.json")):
      raise InputError(f"{flag}={value}: is a folder but not a prepared TFDS builder folder (no dataset_info.json; "
                       "see insightv_jax/data/tfds_source.py); give data files or a prepared builder folder")
    return
  for p in paths:
    existing(p, flag, kind="file", what="a data file: ArrayRecord, JSON, JSONL or a YAML mixture")


def benchmark_files(value: str, flag: str) -> None:
  """Comma-separated benchmark files; each must exist and not be empty."""
  for p in [p for p in required(value, flag, "comma-separated benchmark files").split(",") if p]:
    existing(p, flag, kind="file", what="a benchmark file: VLMEvalKit .tsv, MathVista .json or JSONL")


def optional_dir(value: str, flag: str) -> None:
  if value:
    existing(value, flag, kind="dir", what="a folder")


def questions(value: str, flag: str) -> None:
  """'synthetic:N', 'llava:<file>' or a JSONL of question records."""
  required(value, flag, "'synthetic:N', 'llava:<file>' or a JSONL of question records")
  if value.startswith("synthetic:"):
    n = value.split(":", 1)[1]
    if not n.isdigit() or int(n) < 1:
      raise InputError(f"{flag}={value}: expected synthetic:N with N a positive count of questions")
    return
  if value.startswith("llava:"):
    existing(value[len("llava:"):], flag, what="LLaVA-NeXT JSON, JSONL or a YAML mixture")
    return
  existing(value, flag, what="a JSONL of question records, 'synthetic:N' or 'llava:<file>'")


def url(value: str, flag: str) -> None:
  required(value, flag, "a server URL such as http://127.0.0.1:8000/v1")
  parts = urllib.parse.urlparse(value)
  if parts.scheme not in ("http", "https") or not parts.hostname:
    raise InputError(f"{flag}={value}: not an http(s) URL (expected e.g. http://127.0.0.1:8000/v1)")
  try:
    parts.port
  except ValueError as e:
    raise InputError(f"{flag}={value}: {e}") from None


def nonempty(value: str, flag: str) -> None:
  required(value, flag, "a value")


def check(config, table: dict[str, Callable[[str, str], None]]) -> None:
  """Runs `table[field](value, "--config.<field>")` for every dotted config field of `table`."""
  for field, fn in table.items():
    value = config
    for part in field.split("."):
      value = value[part]
    fn(value, f"--config.{field}")
