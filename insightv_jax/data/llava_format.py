"""LLaVA-NeXT / Insight-V training records (`data.format="llava"`): parse, validate, turn into chat messages.

    rec = llava_format.loads(raw, "llava.json[3]")  # a Conversation (SFT) or a Preference (DPO)
    rec.images                    # (ImageRef(path="coco/000123.jpg"),): relative to data.image_root
    rec.messages                  # Conversation: [{"role": "user", ...}, {"role": "assistant", ...}, ...]
    rec.messages_for("chosen")    # Preference: [{"role": "user", ...}, {"role": "assistant", ...}]

The files (read by `sources.JsonSource`: a JSON array, JSON lines, or a YAML mixture) hold one record each:

  conversation (LLaVA-NeXT llava/train/train.py, LazySupervisedDataset)
    {"id": "000123", "image": "coco/000123.jpg",            # or a list of paths, or absent: text-only
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."},
                       {"from": "human", "value": "Its colour?"}, {"from": "gpt", "value": "Black."}]}
  preference pair (llava/train/train_dpo.py, DPODataset; Insight-V's DPO rounds write the same)
    {"id": ..., "image": ..., "prompt": "What is this?", "chosen": "A cat.", "rejected": "A dog.",
     "answer": "cat", "chosen_score": 9.0, "rejected_score": 2.0}         # answer and scores: optional, not trained

How they become training examples (as train.py / train_dpo.py do, except where marked):
  - turns: "human" -> user, "gpt" -> assistant, "system" -> system ("role"/"content" keys are read too, as
    train.py does). Every assistant turn is a target: the loss mask covers each reply and its end-of-turn token
    (`templates.encode_chat`); train.py also trains on headers and separators (see `insightv_compat`).
  - a first turn from gpt is dropped (train.py: "Skip the first one if it is not from human"); a first system
    turn replaces the template's default system prompt (train.py would fail on it).
  - `<image>` placeholders stay where the record puts them, one per image (train.py moves a single mid-text
    `<image>` to the front of its turn; ours trains the text as written). Placeholders in gpt turns, or a count
    that differs from the images, are errors (train.py would silently drop the image).
  - a preference prompt becomes "<image>\\n" once per image + the prompt without placeholders (train_dpo.py puts
    one "<image>\\n" first, even for text-only records); each side is [user: prompt, assistant: chosen|rejected].
  - image paths are relative to data.image_root and may not escape it (`records.ImageRef`); "video" records
    are not supported.
Errors are `records.RecordError`s naming the record (file[index] or file:line, and id) and the field.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from insightv_jax.data import records
from insightv_jax.data.records import ImageRef, RecordError
from insightv_jax.data.templates import IMAGE_PLACEHOLDER

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PAIR_FIELDS = ("prompt", "chosen", "rejected")


def _fail(where: str, field: str, msg: str):
  raise RecordError(f"{where}: field {field!r}: {msg}")


@dataclasses.dataclass(frozen=True)
class Conversation:
  """An SFT example: messages as given (every assistant turn a target); `<image>` k is images[k]."""

  id: Any
  images: tuple[ImageRef, ...]
  messages: tuple[dict, ...]


@dataclasses.dataclass(frozen=True)
class Preference:
  """A DPO pair: the same prompt (placeholders first) answered by `chosen` and by `rejected`."""

  id: Any
  images: tuple[ImageRef, ...]
  prompt: str
  chosen: str
  rejected: str
  answer: str | None = None
  chosen_score: float | None = None
  rejected_score: float | None = None

  def messages_for(self, side: str) -> list[dict]:
    """side: "chosen" | "rejected" -> [user: prompt, assistant: that reply]."""
    return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": getattr(self, side)}]


def _images(d: dict, where: str) -> tuple[ImageRef, ...]:
  value = d.get("image")
  if value is None:
    return ()
  paths = [value] if isinstance(value, str) else value
  if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
    _fail(where, "image", f"must be a path or a list of paths, got {value!r:.80}")
  refs = tuple(ImageRef(path=p) for p in paths)
  for ref in refs:
    ref.validate(where, "image")
  return refs


def _conversation(d: dict, images: tuple[ImageRef, ...], where: str) -> Conversation:
  turns = d["conversations"]
  if not isinstance(turns, list) or not turns:
    _fail(where, "conversations", f"must be a non-empty list of turns, got {turns!r:.80}")
  messages = []
  for i, turn in enumerate(turns):
    if not isinstance(turn, dict):
      _fail(where, f"conversations[{i}]", f"expected an object with 'from' and 'value', got {turn!r:.80}")
    role_key, text_key = ("role", "content") if "role" in turn and "from" not in turn else ("from", "value")
    role, text = turn.get(role_key), turn.get(text_key)
    if role not in ROLES:
      _fail(where, f"conversations[{i}].{role_key}", f"{role!r} is not one of human, gpt, system")
    if not isinstance(text, str):
      _fail(where, f"conversations[{i}].{text_key}", f"must be a string, got {text!r:.80}")
    if ROLES[role] == "assistant" and IMAGE_PLACEHOLDER in text:
      _fail(where, f"conversations[{i}].{text_key}", f"{IMAGE_PLACEHOLDER} in a gpt turn; images go in human turns")
    messages.append({"role": ROLES[role], "content": text})
  if messages[0]["role"] == "assistant":
    messages = messages[1:]  # train.py: a conversation starts with the human
  if not any(m["role"] == "assistant" for m in messages):
    _fail(where, "conversations", "no gpt turn after the first human turn: nothing to train on")
  placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
  if placeholders != len(images):
    _fail(where, "conversations", f"{placeholders} {IMAGE_PLACEHOLDER} placeholders for {len(images)} images "
          "(field 'image'): one placeholder per image")
  return Conversation(d.get("id"), images, tuple(messages))


def _preference(d: dict, images: tuple[ImageRef, ...], where: str) -> Preference:
  for name in PAIR_FIELDS:
    if not isinstance(d[name], str) or not d[name].strip():
      _fail(where, name, f"must be a non-empty string, got {d[name]!r:.60}")
  if d.get("answer") is not None and not isinstance(d["answer"], str):
    _fail(where, "answer", f"must be a string, got {d['answer']!r:.60}")
  for name in ("chosen_score", "rejected_score"):
    value = d.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
      _fail(where, name, f"must be a number, got {value!r:.60}")
  for name in ("chosen", "rejected"):
    if IMAGE_PLACEHOLDER in d[name]:
      _fail(where, name, f"{IMAGE_PLACEHOLDER} in a reply; images go in the prompt")
  prompt = f"{IMAGE_PLACEHOLDER}\n" * len(images) + d["prompt"].replace(IMAGE_PLACEHOLDER, "").strip()
  return Preference(d.get("id"), images, prompt, d["chosen"], d["rejected"], d.get("answer"),
                    d.get("chosen_score"), d.get("rejected_score"))


def from_json(d: Any, where: str = "record") -> Conversation | Preference:
  """A LLaVA record's JSON object -> Conversation ('conversations') or Preference ('prompt', 'chosen',
  'rejected'); `where` names it in errors (file[index] or file:line)."""
  if not isinstance(d, dict):
    raise RecordError(f"{where}: expected a JSON object, got {type(d).__name__}")
  if d.get("id") is not None:
    where = f"{where} (id={d['id']!r})"
  if "video" in d:
    _fail(where, "video", "video records are not supported (images only)")
  images = _images(d, where)
  if "conversations" in d:
    return _conversation(d, images, where)
  if all(name in d for name in PAIR_FIELDS):
    return _preference(d, images, where)
  _fail(where, "conversations", "is missing (a LLaVA record has 'conversations', or 'prompt', 'chosen' and "
        "'rejected' for DPO)")


def loads(raw: str | bytes, where: str = "record") -> Conversation | Preference:
  try:
    d = json.loads(raw)
  except json.JSONDecodeError as e:
    raise RecordError(f"{where}: not valid JSON ({e})") from e
  return from_json(d, where)


def to_question(d: Any, where: str = "record") -> records.Question:
  """A LLaVA record -> a `records.Question` for data generation: the first human turn (placeholders removed)
  is the question, the first gpt turn the ground truth (a preference pair: prompt and 'answer')."""
  rec = from_json(d, where)
  if isinstance(rec, Conversation):
    question = next((m["content"] for m in rec.messages if m["role"] == "user"), None)
    answer = next(m["content"] for m in rec.messages if m["role"] == "assistant")
    if question is None:
      _fail(where, "conversations", "no human turn: no question")
  else:
    question, answer = rec.prompt, rec.answer
    if answer is None:
      _fail(where, "answer", "a preference pair needs 'answer' (the ground truth) to be a question")
  named = f"{where} (id={rec.id!r})" if rec.id is not None else where
  q = records.Question(id=str(rec.id) if rec.id is not None else where, images=rec.images,
                       question=question.replace(IMAGE_PLACEHOLDER, "").strip(), answer=answer.strip(),
                       source="llava")
  q.validate(named)
  return q


def format_hint(raw: str | bytes, data_format: str) -> str | None:
  """When a record that failed looks like another known format: what to change (else None)."""
  try:
    d = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None
  if not isinstance(d, dict):
    return None
  ours = "kind" in d and "schema_version" in d
  if data_format != "llava" and not ours:
    if "conversations" in d:
      return "this looks like LLaVA conversation JSON: add --config.data.format=llava"
    if all(name in d for name in PAIR_FIELDS):
      return "this looks like LLaVA-NeXT DPO JSON: add --config.data.format=llava (with configs/dpo.py)"
  if data_format == "llava" and ours:
    return (f"this looks like insightv-jax {d['kind']!r} records, not LLaVA JSON: drop --config.data.format=llava "
            "(format=auto reads them)")
  return None
