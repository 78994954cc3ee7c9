"""Bad inputs: one exception type every layer raises, and the checks that open paths before anything reads them.

    raise InputError(f"{path}: tensor {name!r} ends at byte {end}, past the end of the file ({size} bytes)")
    folder = existing(value, "--config.tokenizer", kind="dir", what="a tokenizer folder (save_pretrained)")

An `InputError` names the culprit (a flag, a file with its line / record / tensor, a URL) and what to do; the
command lines (pipelines/cli/_app.py) print it as their last line, `error: <message>`, and exit with status 2.
Errors of the library's own input formats subclass it (`records.RecordError`, `SafetensorsError`,
`ServerError` ...). No project imports: every layer can use it.
"""

from __future__ import annotations

import os
import re


class InputError(ValueError):
  """An input that cannot be used; the message names it (flag, file and line / record / tensor, URL)."""


def one_line(message: str) -> str:
  """`message` with its whitespace (newlines included) collapsed: what a command line's last line shows."""
  return " ".join(str(message).split())


def is_hub_id(path: str) -> bool:
  """"org/name" that names no local path: a model-hub repository id (loaded where a hub is reachable)."""
  return (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path or "") is not None
          and not os.path.exists(os.path.expanduser(path)))


def required(value: str, flag: str, what: str) -> str:
  """`value` if it is a non-empty string; otherwise an InputError naming `flag` and what it needs."""
  if not isinstance(value, str) or not value.strip():
    raise InputError(f"{flag} is empty: it needs {what}")
  return value


def existing(path: str, flag: str, *, kind: str = "file", what: str = "") -> str:
  """`path` (user-expanded) if it exists and is a `kind` ('file', 'dir' or 'any'); otherwise an InputError
  naming `flag`, the path and what was expected (`what`, e.g. "a JSONL of question records")."""
  required(path, flag, what or f"a {'folder' if kind == 'dir' else 'file'}")
  full = os.path.expanduser(path)
  expected = f" (expected {what})" if what else ""
  if not os.path.exists(full):
    raise InputError(f"{flag}={path}: no such {'folder' if kind == 'dir' else 'file'}{expected}")
  if kind == "dir" and not os.path.isdir(full):
    raise InputError(f"{flag}={path}: is a file, not a folder{expected}")
  if kind == "file" and os.path.isdir(full):
    raise InputError(f"{flag}={path}: is a folder, not a file{expected}")
  if kind == "file" and os.path.getsize(full) == 0:
    raise InputError(f"{flag}={path}: the file is empty{expected}")
  return full


def writable_dir(path: str, flag: str) -> str:
  """A folder that exists or can be made: an InputError when `path` (or a parent) is a file."""
  required(path, flag, "a folder to write into")
  full = os.path.expanduser(path)
  if os.path.exists(full) and not os.path.isdir(full):
    raise InputError(f"{flag}={path}: is a file, not a folder; give a folder to write into")
  parent = full
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent.rstrip(os.sep))
  if parent and not os.path.isdir(parent):
    raise InputError(f"{flag}={path}: {parent} is a file, so the folder cannot be made")
  return full
