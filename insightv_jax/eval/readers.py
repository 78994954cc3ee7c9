"""Benchmark files -> our `Question` records, carrying what the official scorers need.

    qs = read_benchmark("/data/LMUData/MMBench_DEV_EN.tsv")    # VLMEvalKit's TSV, name = file stem
    qs = read_benchmark("/data/MathVista/testmini.json")       # MathVista's own file + its images/ folder
    qs = read_benchmark("/bench/mmstar.jsonl")                 # one JSON object per line

Every question's `meta` holds: benchmark (the dataset name: VLMEvalKit picks scorers by it), scorer (the official
scorer family, `scoring.vlmeval_compat.scorer_for`; None for our own questions), category, l2-category, index
(VLMEvalKit's row index: circular MMBench groups copies by index % 1e6), row (the row's original fields as
VLMEvalKit reads them, NaN cells as None, without the image bytes), file and line (where the file asks it: the
line of a TSV row or a JSONL record; None for MathVista's JSON, whose question ids are its pids) and, for files
whose images are files beside them, image_root (which the runner prefers to its own --image_root).

VLMEvalKit TSV (vlmeval/dataset/image_base.py, image_mcq.py; rules in `scoring.vlmeval_compat`):
  columns  index, question, answer, image (base64; or a list of them) and/or image_path; A, B, ... (options),
           hint, category, l2-category, split, ... (kept in meta["row"])
  image    a cell of at most 64 characters is the index of the row that holds the image (MMBench's rotated copies,
           MME's second question); a row with no image is skipped (VLMEvalKit's skip_noimg); a file with only
           image_path finds its images where VLMEvalKit does: absolute, or under <tsv folder>/images/<name>/
  cells    read as pandas reads them: "", "NA", "None", "nan", ... are missing
  prompt   multiple choice with a hint: "Hint: <hint>\\nQuestion: <question>" (the options are added by
           `prompts.format_question`); ChartQA gets VLMEvalKit's "Answer the question using a single word or phrase."
  test splits without an `answer` column cannot be scored locally (VLMEvalKit submits those to the benchmark
  server) and are refused.

MathVista testmini.json: {pid: {question, image: "images/1.jpg", choices, answer, question_type, answer_type,
precision, unit, query, metadata: {...}}}; the prompt is MathVista's `query`; a multiple-choice answer becomes its
option letter (the text stays in meta["row"]["answer"]); images are relative to the JSON file's folder.

JSONL shapes (one JSON object per line; the image is `image` (a path relative to --image_root) or `image_b64`):
  multiple choice (MMMU / MMBench / MMStar):  question, options: [..] or A..E columns, answer: letter, hint
  open numeric / short answer (ChartQA / MathVista):  question, answer: "12.5" | "Paris"
  yes/no (MME):  question, answer: "Yes" | "No"
Optional: id (else <name>-<line>), index, category / subject / task (per-category accuracy), source.
Our own question records (kind = "question") are read as they are (the synthetic world, data_gen output).
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import dataclasses
import json
import os
import re
import string
import sys
from typing import Any

from insightv_jax.data import records
from insightv_jax.scoring import vlmeval_compat as vc

_LETTERS = string.ascii_uppercase
_INT = re.compile(r"\s*[-+]?\d+\s*")


def read_benchmark(path: str, name: str | None = None) -> list[records.Question]:
  """Reads a benchmark file by its extension: .tsv (VLMEvalKit), .json (MathVista), else JSONL."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".tsv":
    return read_vlmeval_tsv(path, name)
  if ext == ".json":
    return read_mathvista_json(path, name)
  return read_benchmark_jsonl(path, name)


# ---------------------------------------------------------------------------------------------- VLMEvalKit TSV

def _read_tsv(path: str) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, int]]:
  """(rows, holder, lines) of a VLMEvalKit TSV as VLMEvalKit holds them after loading: missing cells None, rows
  without an image dropped, `image` references resolved (each row's `image` is the full cell of the row holding
  it), `index` an int when every index is one. holder[index] is the index of the row whose cell holds that row's
  image; lines[index] the row's line in the file."""
  csv.field_size_limit(sys.maxsize)  # base64 images are far over csv's 128 kB default
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t")
    header = next(reader, None)
    if not header:
      raise records.RecordError(f"{path}: empty file (a VLMEvalKit TSV starts with a header line)")
    rows, line_of = [], []
    for cells in reader:
      if not cells:
        continue
      if len(cells) != len(header):
        raise records.RecordError(f"{path}:{reader.line_num}: {len(cells)} cells for {len(header)} columns")
      rows.append({k: (None if v in vc.PANDAS_NA_STRINGS else v) for k, v in zip(header, cells)})
      line_of.append(reader.line_num)
  for field in ("index", "question"):
    if field not in header:
      raise records.RecordError(f"{path}: no {field!r} column (columns: {header})")
  lines = {str(r["index"]): n for r, n in zip(rows, line_of)}
  if "image" in header:
    rows = [r for r in rows if r["image"] is not None]
  if any(r["index"] is None for r in rows):
    raise records.RecordError(f"{path}: a row has an empty 'index'")
  if all(_INT.fullmatch(r["index"]) for r in rows):
    for r in rows:
      r["index"] = int(r["index"])
  holder: dict[str, str] = {}
  if "image" in header:
    images = {str(r["index"]): r["image"] for r in rows}
    # in file order, like VLMEvalKit: a reference to a row that is itself a reference works only when that row
    # came first (its cell is already replaced)
    for key, cell in images.items():
      holder[key] = key
      if len(cell) <= vc.IMAGE_REF_MAX_LEN:
        if len(images.get(cell, "")) <= vc.IMAGE_REF_MAX_LEN:
          raise records.RecordError(f"{path}: row index={key}: field 'image': {cell!r} is neither an image nor "
                                    "the index of a row that holds one")
        images[key], holder[key] = images[cell], holder.get(cell, cell)
    for r in rows:
      r["image"] = images[str(r["index"])]
  return rows, holder, lines


def read_vlmeval_tsv(path: str, name: str | None = None) -> list[records.Question]:
  name = name or os.path.splitext(os.path.basename(path))[0]
  rows, holder, lines = _read_tsv(path)
  if rows and "answer" not in rows[0]:
    raise records.RecordError(f"{path}: no 'answer' column: a test split is scored by the benchmark's server, "
                              "not locally")
  images_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "images", name)
  decoded: dict[str, tuple[records.ImageRef, ...]] = {}  # rotated copies share one decoded image
  out = []
  for r in rows:
    where = f"{path} (index={r['index']})"
    row, images, image_root = dict(r), (), None
    if r.get("image") is not None:
      src = holder[str(r["index"])]
      if src not in decoded:
        decoded[src] = tuple(records.ImageRef(data=_b64(s, where)) for s in _to_list(r["image"], where))
      images = decoded[src]
      row["image"] = src  # the bytes live in the Question; the row keeps which row held them (VLMEvalKit's way)
    elif r.get("image_path") is not None:  # VLMEvalKit's layout: LMUData/<name>.tsv, LMUData/images/<name>/...
      images, image_root = tuple(_path_ref(p, where) for p in _to_list(r["image_path"], where)), images_dir
    out.append(_question_from_row(row, images, name, where, image_root=image_root,
                                  at=(path, lines.get(str(r["index"])))))
  return out


def _question_from_row(row: dict, images, name: str, where: str, *, image_root: str | None,
                       at: tuple[str, int | None]) -> records.Question:
  letters = [ch for ch in _LETTERS if row.get(ch) is not None]
  if letters and letters != list(_LETTERS[:len(letters)]):
    raise records.RecordError(f"{where}: options {letters} are not consecutive letters from A")
  choices = tuple(str(row[ch]) for ch in letters) or None
  answer = "nan" if row.get("answer") is None else str(row["answer"]).strip()  # VLMEvalKit's str(NaN)
  family = vc.scorer_for(name, has_choices=bool(choices), answer=answer)
  question = str(row["question"])
  if family == "mathvista" and row.get("question_type") == "multi_choice" and row.get("answer_option"):
    answer = str(row["answer_option"]).strip()
  if choices:
    if answer not in letters:
      raise records.RecordError(f"{where}: field 'answer': {answer!r} is not one of the option letters {letters}")
    if row.get("hint") is not None:
      question = f"Hint: {row['hint']}\nQuestion: {question}"
  elif family == "chartqa":
    question += vc.VQA_PROMPT_SUFFIX
  meta = {"benchmark": name, "scorer": family, "category": row.get("category") or "all", "index": row["index"],
          "row": row, "file": at[0], "line": at[1]}
  if row.get("l2-category") is not None:
    meta["l2-category"] = row["l2-category"]
  if image_root is not None:
    meta["image_root"] = image_root
  q = records.Question(id=f"{name}-{row['index']}", images=tuple(images), question=question, answer=answer,
                       choices=choices, source=str(row.get("source") or name), meta=meta)
  q.validate(where)
  return q


def _to_list(cell: str, where: str) -> list[str]:
  """VLMEvalKit's toliststr: a cell "[...]" is a Python list literal of several images / paths."""
  if len(cell) > 1 and cell[0] == "[" and cell[-1] == "]":
    try:
      return [str(x) for x in ast.literal_eval(cell)]
    except (ValueError, SyntaxError) as e:
      raise records.RecordError(f"{where}: a cell [...] must be a list literal ({e})") from e
  return [cell]


def _b64(s: str, where: str) -> bytes:
  try:
    return base64.b64decode(s)
  except (binascii.Error, ValueError) as e:
    raise records.RecordError(f"{where}: field 'image': not valid base64 ({e})") from e


def _path_ref(p: str, where: str) -> records.ImageRef:
  """A relative image path stays a path (resolved against meta image_root when the image is read); an absolute
  one is read now (our image references are never absolute)."""
  if os.path.isabs(p):
    try:
      with open(p, "rb") as f:
        return records.ImageRef(data=f.read())
    except OSError as e:
      raise records.RecordError(f"{where}: field 'image_path': cannot read {p!r} ({e})") from e
  ref = records.ImageRef(path=p)
  ref.validate(where, "image_path")
  return ref


# ---------------------------------------------------------------------------------------------- MathVista JSON

_MATHVISTA_META = ("category", "context", "grade", "img_height", "img_width", "language", "skills", "source", "split",
                   "task")


def read_mathvista_json(path: str, name: str | None = None) -> list[records.Question]:
  """MathVista's testmini.json (or test.json) with its images folder next to it. Rows take the shape of
  VLMEvalKit's MathVista TSV (question = the query; choices / skills as Python list literals; answer_option)."""
  stem = os.path.splitext(os.path.basename(path))[0]
  name = name or (stem if "mathvista" in stem.lower() else f"MathVista_{stem}")
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise records.RecordError(f"{path}: not valid JSON ({e})") from e
  if isinstance(data, list):
    data = {str(p.get("pid", i + 1)): p for i, p in enumerate(data)}
  if not isinstance(data, dict) or not all(isinstance(p, dict) and "question" in p for p in data.values()):
    raise records.RecordError(f"{path}: expected MathVista's {{pid: problem}} object")
  root = os.path.dirname(os.path.abspath(path))
  out = []
  for pid in sorted(data, key=lambda k: (0, int(k), "") if _INT.fullmatch(k) else (1, 0, k)):
    p, where = data[pid], f"{path} (pid={pid})"
    choices = p.get("choices")
    row: dict[str, Any] = {
        "index": int(pid) if _INT.fullmatch(pid) else pid, "question": p.get("query") or p["question"],
        "answer": p.get("answer"), "question_type": p.get("question_type"), "answer_type": p.get("answer_type"),
        "precision": p.get("precision"), "unit": p.get("unit"), "image_path": p.get("image"),
        "choices": str(list(choices)) if choices else None, "answer_option": None,
    }
    if p.get("question_type") == "multi_choice":
      if not choices or p.get("answer") not in choices:
        raise records.RecordError(f"{where}: field 'answer': {p.get('answer')!r} is not one of the choices")
      row["answer_option"] = _LETTERS[list(choices).index(p["answer"])]
    for k in _MATHVISTA_META:
      v = (p.get("metadata") or {}).get(k)
      row[k] = str(v) if isinstance(v, list) else v
    if row["answer"] is None:
      raise records.RecordError(f"{where}: field 'answer' is missing")
    images = (_path_ref(p["image"], where),) if p.get("image") else ()
    out.append(_question_from_row(row, images, name, where, image_root=root, at=(path, None)))
  return out


# ---------------------------------------------------------------------------------------------- JSONL

def read_benchmark_jsonl(path: str, name: str | None = None) -> list[records.Question]:
  """A JSONL benchmark (the shapes in the module docstring): one question per line."""
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
      if d.get("kind") == "question":
        q = records.from_json(d, where)
        out.append(dataclasses.replace(q, meta={**q.meta, "file": path, "line": lineno}))
      else:
        out.append(_convert(d, where, name, lineno, path))
  return out


def _convert(d: dict, where: str, name: str, lineno: int, path: str) -> records.Question:
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
  index = d.get("index", lineno)
  # the row in VLMEvalKit's shape, so that the official scorers read a JSONL benchmark like its TSV
  row = {"index": index, "question": d["question"], "answer": answer, "category": category,
         "l2-category": d.get("l2-category"), "hint": d.get("hint"), "split": d.get("split"),
         "image_path": d.get("image") or None}
  if not d.get("split"):
    del row["split"]
  for letter, text in zip(_LETTERS, choices or ()):
    row[letter] = str(text)
  question = str(d["question"])
  if choices and d.get("hint"):
    question = f"Hint: {d['hint']}\nQuestion: {question}"
  meta = {"benchmark": name, "category": category, "index": index, "row": row,
          "scorer": vc.scorer_for(name, has_choices=bool(choices), answer=answer), "file": path, "line": lineno}
  q = records.Question(id=str(d.get("id", f"{name}-{lineno}")), images=images, question=question,
                       answer=answer, choices=tuple(map(str, choices)) if choices else None,
                       source=d.get("source", name), meta=meta)
  q.validate(where)
  return q
