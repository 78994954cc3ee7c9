"""Versioned, validated, JSON-serialisable records: the files every stage reads and writes.

Kinds (the `kind` field selects the class; `schema_version` guards format changes):
  question       a visual question with its ground truth
  path           one reasoning path for a question: steps, final answer, scores
  reasoning_sft  training example for the reasoning agent (question -> chain)
  summary_sft    training example for the summary agent (question + chain of stated quality -> answer)
  dpo_pair       preference pair for the reasoning agent (prompt, chosen chain, rejected chain)

Images are `ImageRef`s: a path relative to the dataset root (never absolute, never escaping the root) or
embedded encoded bytes (base64 in JSON). Validation errors are `RecordError`s naming the record (file and
line or index, and id) and the field.

I/O: `write_jsonl` / `read_jsonl` (human-facing), `write_array_record` (training; read back through
`insightv_jax.data.sources`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import posixpath
from typing import Any, ClassVar, Iterable, Iterator

from insightv_jax.utils.files import atomic_path, atomic_write
from insightv_jax.utils.inputs import InputError

SCHEMA_VERSION = 1
STEP_ACTIONS = ("continue", "summary")
CHAIN_QUALITIES = ("high", "mid", "low", "wrong", "none")


class RecordError(InputError):
  """A record that does not validate; the message says where and which field."""


def _fail(where: str, field: str, msg: str):
  raise RecordError(f"{where}: field {field!r}: {msg}")


@dataclasses.dataclass(frozen=True)
class ImageRef:
  """Exactly one of `path` (relative to the dataset root) or `data` (encoded image bytes)."""

  path: str | None = None
  data: bytes | None = None

  def validate(self, where: str, field: str = "images"):
    if (self.path is None) == (self.data is None):
      _fail(where, field, "an image needs exactly one of 'path' or 'data'")
    if self.path is not None:
      p = self.path
      if not isinstance(p, str) or not p:
        _fail(where, field, f"path must be a non-empty string, got {p!r}")
      if p.startswith("/") or p.startswith("\\") or (len(p) > 1 and p[1] == ":"):
        _fail(where, field, f"path {p!r} is absolute; image paths are relative to the dataset root")
      norm = posixpath.normpath(p.replace("\\", "/"))
      if norm == ".." or norm.startswith("../"):
        _fail(where, field, f"path {p!r} escapes the dataset root")

  def to_json(self) -> dict[str, str]:
    if self.path is not None:
      return {"path": self.path}
    return {"data_b64": base64.b64encode(self.data).decode("ascii")}

  @classmethod
  def from_json(cls, d: Any, where: str, field: str = "images") -> ImageRef:
    if not isinstance(d, dict):
      _fail(where, field, f"expected an object with 'path' or 'data_b64', got {type(d).__name__}")
    if "data_b64" in d and "path" in d:
      _fail(where, field, "an image needs exactly one of 'path' or 'data_b64', got both")
    if "data_b64" in d:
      try:
        ref = cls(data=base64.b64decode(d["data_b64"], validate=True))
      except (ValueError, TypeError) as e:
        _fail(where, field, f"data_b64 is not valid base64 ({e})")
    else:
      ref = cls(path=d.get("path"))
    ref.validate(where, field)
    return ref

  def read(self, root: str | None) -> bytes:
    """The encoded image bytes (reads `root/path` for path refs)."""
    if self.data is not None:
      return self.data
    if root is None:
      raise RecordError(f"image path {self.path!r} needs a dataset root (image_root) to resolve")
    with open(os.path.join(root, self.path), "rb") as f:
      return f.read()


@dataclasses.dataclass(frozen=True)
class Step:
  title: str
  content: str
  action: str = "continue"  # "continue" | "summary"


# ---------------------------------------------------------------------------------------------- kinds

_KINDS: dict[str, type[Record]] = {}


@dataclasses.dataclass(frozen=True)
class Record:
  """Base class: `id` is unique within a dataset; subclasses declare KIND and field checks."""

  KIND: ClassVar[str] = ""
  id: str

  def __init_subclass__(cls, **kw):
    super().__init_subclass__(**kw)
    if cls.KIND:
      _KINDS[cls.KIND] = cls

  def validate(self, where: str):
    if not isinstance(self.id, str) or not self.id:
      _fail(where, "id", "must be a non-empty string")
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.type in ("str",) and not isinstance(value, str):
        _fail(where, f.name, f"must be a string, got {type(value).__name__}")
    for ref in getattr(self, "images", ()):
      ref.validate(where)

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": self.KIND, "schema_version": SCHEMA_VERSION}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.name == "images":
        value = [r.to_json() for r in value]
      elif f.name == "steps":
        value = [dataclasses.asdict(s) for s in value]
      out[f.name] = value
    return out

  def dumps(self) -> str:
    return json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True)


def _check_str(where, name, value, allow_empty=False):
  if not isinstance(value, str) or (not allow_empty and not value.strip()):
    _fail(where, name, f"must be a {'' if allow_empty else 'non-empty '}string, got {value!r:.60}")


@dataclasses.dataclass(frozen=True)
class Question(Record):
  KIND: ClassVar[str] = "question"
  images: tuple[ImageRef, ...]
  question: str
  answer: str
  choices: tuple[str, ...] | None = None  # multiple choice options, answer is the option letter
  source: str = ""
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # task type, ground-truth facts ...

  def validate(self, where):
    super().validate(where)
    _check_str(where, "question", self.question)
    _check_str(where, "answer", self.answer)
    if self.choices is not None:
      if len(self.choices) < 2 or not all(isinstance(c, str) for c in self.choices):
        _fail(where, "choices", "must be a list of at least two strings")
      if self.answer not in [chr(ord("A") + i) for i in range(len(self.choices))]:
        _fail(where, "answer", f"{self.answer!r} is not an option letter of {len(self.choices)} choices")


@dataclasses.dataclass(frozen=True)
class ReasoningPath(Record):
  KIND: ClassVar[str] = "path"
  question_id: str
  steps: tuple[Step, ...]
  final_answer: str
  scores: dict[str, float] = dataclasses.field(default_factory=dict)  # e.g. answer_correct, reasoning
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def validate(self, where):
    super().validate(where)
    _check_str(where, "question_id", self.question_id)
    if not self.steps:
      _fail(where, "steps", "a path needs at least one step")
    for i, s in enumerate(self.steps):
      _check_str(where, f"steps[{i}].title", s.title)
      _check_str(where, f"steps[{i}].content", s.content)
      if s.action not in STEP_ACTIONS:
        _fail(where, f"steps[{i}].action", f"{s.action!r} is not one of {STEP_ACTIONS}")
    _check_str(where, "final_answer", self.final_answer, allow_empty=True)
    for k, v in self.scores.items():
      if not isinstance(v, (int, float)):
        _fail(where, f"scores.{k}", f"must be a number, got {v!r}")


@dataclasses.dataclass(frozen=True)
class ReasoningSFT(Record):
  KIND: ClassVar[str] = "reasoning_sft"
  images: tuple[ImageRef, ...]
  question: str
  reasoning: str  # the chain the reasoning agent must write
  source: str = ""

  def validate(self, where):
    super().validate(where)
    _check_str(where, "question", self.question)
    _check_str(where, "reasoning", self.reasoning)


@dataclasses.dataclass(frozen=True)
class SummarySFT(Record):
  KIND: ClassVar[str] = "summary_sft"
  images: tuple[ImageRef, ...]
  question: str
  reasoning: str  # the chain shown to the summary agent (may be flawed; empty for plain perception data)
  answer: str  # the target: the correct answer
  chain_quality: str = "none"  # high | mid | low | wrong | none
  source: str = ""

  def validate(self, where):
    super().validate(where)
    _check_str(where, "question", self.question)
    _check_str(where, "reasoning", self.reasoning, allow_empty=True)
    _check_str(where, "answer", self.answer)
    if self.chain_quality not in CHAIN_QUALITIES:
      _fail(where, "chain_quality", f"{self.chain_quality!r} is not one of {CHAIN_QUALITIES}")


@dataclasses.dataclass(frozen=True)
class DPOPair(Record):
  KIND: ClassVar[str] = "dpo_pair"
  images: tuple[ImageRef, ...]
  prompt: str
  chosen: str
  rejected: str
  chosen_score: float | None = None
  rejected_score: float | None = None
  ref_chosen_logp: float | None = None  # precomputed with the reference checkpoint `ref_hash`
  ref_rejected_logp: float | None = None
  ref_hash: str | None = None

  def validate(self, where):
    super().validate(where)
    _check_str(where, "prompt", self.prompt)
    _check_str(where, "chosen", self.chosen)
    _check_str(where, "rejected", self.rejected)
    if (self.ref_chosen_logp is None) != (self.ref_rejected_logp is None):
      _fail(where, "ref_chosen_logp", "reference log-probs come in pairs (both or neither)")
    if self.ref_chosen_logp is not None and not self.ref_hash:
      _fail(where, "ref_hash", "precomputed reference log-probs need the reference checkpoint's hash")


# ---------------------------------------------------------------------------------------------- decode

def from_json(d: Any, where: str = "record") -> Record:
  """Validates and builds a record from its JSON object; `where` names it in errors (file:line)."""
  if not isinstance(d, dict):
    raise RecordError(f"{where}: expected a JSON object, got {type(d).__name__}")
  rid = d.get("id")
  where = f"{where} (id={rid!r})" if rid is not None else where
  kind = d.get("kind")
  if kind not in _KINDS:
    _fail(where, "kind", f"{kind!r} is not one of {sorted(_KINDS)}")
  version = d.get("schema_version")
  if version != SCHEMA_VERSION:
    _fail(where, "schema_version", f"{version!r} is not supported (this code reads version {SCHEMA_VERSION})")
  cls = _KINDS[kind]
  kwargs: dict[str, Any] = {}
  for f in dataclasses.fields(cls):
    if f.name not in d:
      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        _fail(where, f.name, "is missing")
      continue
    value = d[f.name]
    if f.name == "images":
      if not isinstance(value, list):
        _fail(where, "images", "must be a list")
      value = tuple(ImageRef.from_json(r, where) for r in value)
    elif f.name == "steps":
      if not isinstance(value, list):
        _fail(where, "steps", "must be a list")
      try:
        value = tuple(Step(**s) for s in value)
      except TypeError as e:
        _fail(where, "steps", f"each step needs title, content and action ({e})")
    elif f.name == "choices" and value is not None:
      value = tuple(value)
    kwargs[f.name] = value
  unknown = set(d) - {f.name for f in dataclasses.fields(cls)} - {"kind", "schema_version"}
  if unknown:
    _fail(where, sorted(unknown)[0], f"is not a field of a {kind!r} record")
  rec = cls(**kwargs)
  rec.validate(where)
  return rec


def loads(line: str | bytes, where: str = "record") -> Record:
  try:
    d = json.loads(line)
  except json.JSONDecodeError as e:
    raise RecordError(f"{where}: not valid JSON ({e})") from e
  return from_json(d, where)


# ---------------------------------------------------------------------------------------------- files

def write_jsonl(path: str, records: Iterable[Record]) -> int:
  """Writes atomically (temp file + rename): a crash never leaves a truncated file. Returns the count."""
  n = 0
  with atomic_write(path) as f:
    for r in records:
      r.validate(f"{path}[{n}]")
      f.write(r.dumps() + "\n")
      n += 1
  return n


def read_jsonl(path: str) -> Iterator[Record]:
  """Our records as `write_jsonl` wrote them, each validated (benchmark files: `eval.readers.read_benchmark`; a
  resumable stage's journal: `utils.files.read_jsonl_log`)."""
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if line.strip():
        yield loads(line, f"{path}:{lineno}")


def write_array_record(path: str, records: Iterable[Record]) -> int:
  """One JSON record per ArrayRecord entry (group_size 1 for fast random access). Atomic like JSONL."""
  from array_record.python.array_record_module import ArrayRecordWriter
  n = 0
  with atomic_path(path) as tmp:
    writer = ArrayRecordWriter(tmp, "group_size:1")
    try:
      for r in records:
        r.validate(f"{path}[{n}]")
        writer.write(r.dumps().encode("utf-8"))
        n += 1
    finally:
      writer.close()
  return n
