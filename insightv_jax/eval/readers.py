"""Readers for common benchmark record shapes (local JSONL) -> our `Question` records.

Accepted shapes (one JSON object per line; the image is `image` (a path relative to --image_root) or
`image_b64`):
  multiple choice (MMMU / MMBench / MMStar):  question, options: [..] or A..E columns, answer: letter
  open numeric / short answer (ChartQA / MathVista):  question, answer: "12.5" | "Paris"
  yes/no (MME):  question, answer: "Yes" | "No"
Optional: id (else index), category / subject / task (per-category accuracy), source.
Our own question records (kind = "question") are read as they are (the synthetic world, data_gen output).
"""

from __future__ import annotations

import base64
import json
import os

from insightv_jax.data import records

_LETTERS = "ABCDEFGHIJ"


def read_benchmark(path: str, name: str | None = None) -> list[records.Question]:
  name = name or os.path.splitext(os.path.basename(path))[0]
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        d = json.loads(line)
      except json.JSONDecodeError as e:
        raise records.RecordError(f"{where}: not valid JSON ({e})") from e
      out.append(records.from_json(d, where) if d.get("kind") == "question" else _convert(d, where, name, lineno))
  return out


def _convert(d: dict, where: str, name: str, index: int) -> records.Question:
  if "question" not in d or "answer" not in d:
    raise records.RecordError(f"{where}: benchmark records need 'question' and 'answer'")
  choices = d.get("options") or d.get("choices")
  if isinstance(choices, str):
    choices = json.loads(choices)
  if not choices and any(k in d for k in _LETTERS[:5]):
    choices = [d[k] for k in _LETTERS if k in d and d[k] not in (None, "", "nan")]
  answer = str(d["answer"]).strip()
  if choices and answer not in _LETTERS[:len(choices)]:
    if answer in choices:  # some dumps store the option text
      answer = _LETTERS[list(choices).index(answer)]
    else:
      raise records.RecordError(f"{where}: field 'answer': {answer!r} is neither an option letter nor an option")
  if "image_b64" in d:
    images = (records.ImageRef(data=base64.b64decode(d["image_b64"])),)
  elif d.get("image"):
    images = (records.ImageRef(path=d["image"]),)
  else:
    images = ()
  category = d.get("category") or d.get("subject") or d.get("task") or "all"
  q = records.Question(id=str(d.get("id", f"{name}-{index}")), images=images, question=str(d["question"]),
                       answer=answer, choices=tuple(map(str, choices)) if choices else None,
                       source=d.get("source", name), meta={"benchmark": name, "category": category})
  q.validate(where)
  return q
