"""The command lines' inputs, checked by kind before a job starts: each failure names the flag and what to give.

    check(config, {"tokenizer": TOKENIZER, "data.paths": DATA_FILES, "model.init": MODEL})

Kinds (one function each): a tokenizer folder (or a hub id 'org/name'), a model spec ('<layout>:<folder>' or a
folder; 'random' where allowed), comma-separated data files, an optional folder (image roots), a question source
('synthetic:N', 'llava:<file>' or a JSONL), a server URL, a chat template or prompt preset name (checked against
their registries), a vision tower's CLIP / SigLIP config, and a tokenizer checked against the chat template it is
used with (`<image>` and every special token the template writes must each be one token). These checks see paths,
flag values and what is cheap to read (a model's config.json and insightv.json, its safetensors headers and every
tensor's byte range, a tokenizer.json through the `tokenizers` library, never transformers or a model); the rest
of a file is checked where it is read (records, images, tensors, server replies), and those errors name the file
and the line, record or tensor.

A table entry is `field: fn` (`fn(value, "--config.<field>")`) or, for a check across fields, `(field, ...): fn`
(`fn(*values, *flags)`).
"""

from __future__ import annotations

import difflib
import json
import os
import urllib.parse
from typing import Callable

from insightv_jax.utils.inputs import InputError, existing, is_hub_id, one_line, required

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
MODEL_LAYOUTS = ("hf", "params", "llava")


def tokenizer(value: str, flag: str) -> None:
  if is_hub_id(value):  # "org/name": the hub is asked when the job loads it (load_tokenizer names a failure)
    return
  folder = existing(value, flag, kind="dir", what="a tokenizer folder written by save_pretrained")
  if not any(os.path.exists(os.path.join(folder, n)) for n in TOKENIZER_FILES):
    raise InputError(f"{flag}={value}: the folder holds none of {', '.join(TOKENIZER_FILES)} (expected a tokenizer "
                     "folder written by save_pretrained)")


def model(value: str, flag: str, *, allow_random: bool = False, vision_config: str | None = None,
          vision_flag: str = "") -> None:
  """A model spec whose config.json the job can read (`checkpoints.read_config`, with `vision_config`, the value of
  `vision_flag`, for an original folder whose tower is no preset) and whose safetensors headers and byte ranges
  agree with the files."""
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
  _model_config(value, flag, vision_config, vision_flag)
  if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in os.listdir(full)):
    from insightv_jax.checkpoints.safetensors_io import open_checkpoint  # headers and byte ranges only
    open_checkpoint(full)


def _model_config(value: str, flag: str, vision_config: str | None, vision_flag: str) -> None:
  """The model's config read as the job reads it (config.json only): one the model cannot be built from (a vision
  tower that is no preset and not described, an unsupported projector ...) is named at the flag."""
  from insightv_jax.checkpoints import parse_spec, read_config
  try:
    layout, _ = parse_spec(value)
    if vision_config and not layout.names_vision_tower:
      raise InputError(f"{vision_flag}={vision_config}: is only for an original LLaVA-NeXT model ('llava:' "
                       f"layout), whose config.json names its vision tower without describing it; {flag}={value} "
                       f"is a '{layout.name}:' folder whose config.json describes its own: drop {vision_flag}")
    read_config(value, vision_config=vision_config or None)
  except InputError as e:
    if vision_flag and str(e).startswith(vision_flag):
      raise
    raise InputError(f"{flag}={value}: {one_line(e)}") from None
  except (ValueError, TypeError, KeyError, OSError) as e:  # ConfigError, a config.json field of the wrong type
    raise InputError(f"{flag}={value}: {one_line(e)}") from None


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


def template(value: str, flag: str) -> None:
  """A chat template name (insightv_jax/data/templates.py TEMPLATES); '' = the one the model folder records."""
  from insightv_jax.data.templates import TEMPLATES
  if value:
    _registered(value, flag, TEMPLATES, "chat template")


def prompts(value: str, flag: str) -> None:
  """A prompt preset name (insightv_jax/data/prompts.py PROMPT_PRESETS); '' = the one the model folder records."""
  from insightv_jax.data.prompts import PROMPT_PRESETS
  if value:
    _registered(value, flag, PROMPT_PRESETS, "prompt preset")


def _registered(value: str, flag: str, names, what: str) -> None:
  if value not in names:
    close = difflib.get_close_matches(str(value), list(names), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise InputError(f"{flag}={value}: no such {what}{hint}; the {what}s are {', '.join(sorted(names))}")


def vision_config(value: str, flag: str) -> None:
  """The vision tower's CLIP / SigLIP config: a config.json (or the folder holding it) whose model_type is
  clip_vision_model / siglip_vision_model, or clip / siglip with a nested vision_config."""
  what = "the vision tower's CLIP / SigLIP config.json, or its folder"
  full = existing(value, flag, kind="any", what=what)
  from insightv_jax.checkpoints.llava_original import tower_config
  try:
    tower_config(full)
  except (ValueError, TypeError, AttributeError, KeyError, OSError) as e:
    hint = ""
    if str(_json_field(full, "model_type")).startswith("llava"):
      hint = ("; that is a LLaVA model's own config.json: give its vision tower's (the folder its mm_vision_tower "
              "names holds it, e.g. openai/clip-vit-large-patch14-336's config.json)")
    raise InputError(f"{flag}={value}: is not a CLIP / SigLIP vision config ({one_line(e)}){hint}") from None


def _json_field(path: str, key: str):
  """`key` of the JSON object in `path` (or path/config.json); None when there is none."""
  file = os.path.join(path, "config.json") if os.path.isdir(path) else path
  try:
    with open(file, encoding="utf-8") as f:
      d = json.load(f)
  except (OSError, ValueError):
    return None
  return d.get(key) if isinstance(d, dict) else None


def chat_tokenizer(tok: str, tpl: str, spec: str, tok_flag: str, tpl_flag: str, spec_flag: str) -> None:
  """The tokenizer (`tok`) against the chat template it is used with (`tpl`; '' = the one model `spec`'s folder
  records, else templates.DEFAULT_TEMPLATE): `<image>` and each special token the template writes must be ONE token,
  or the image is never found and the turns and their stop string are split into pieces. Reads tokenizer.json with
  the `tokenizers` library (a folder without one: transformers); a hub id is checked where the job loads it."""
  from insightv_jax.data.templates import IMAGE_PLACEHOLDER, TEMPLATES, rendered_special_tokens
  if not tok or is_hub_id(tok):
    return
  pieces = _pieces(tok, tok_flag)
  if pieces(IMAGE_PLACEHOLDER) != 1:
    raise InputError(f"{tok_flag}={tok}: the tokenizer has no {IMAGE_PLACEHOLDER} token (an original LLaVA-NeXT / "
                     "Insight-V tokenizer has none): give the folder insightv-convert --to=params (or --to=hf) "
                     f"wrote, which holds the tokenizer with {IMAGE_PLACEHOLDER} added, or add it yourself "
                     "(insightv_jax.data.tokenizer.add_image_token, then save_pretrained) and pass that folder as "
                     f"{tok_flag}")
  name, source = _template_in_use(tpl, spec, tpl_flag, spec_flag)
  if tpl:
    template(tpl, tpl_flag)
  elif name not in TEMPLATES:
    raise InputError(f"{source}: no such chat template (the chat templates are {', '.join(sorted(TEMPLATES))}); "
                     f"pass {tpl_flag}")
  missing = [t for t in rendered_special_tokens(TEMPLATES[name]) if pieces(t) != 1]
  if missing:
    fits = [n for n, t in sorted(TEMPLATES.items()) if all(pieces(s) == 1 for s in rendered_special_tokens(t))]
    fit = f"templates this tokenizer holds: {', '.join(fits)}" if fits else "no template of ours fits this tokenizer"
    raise InputError(f"{source}: the tokenizer ({tok_flag}={tok}) has no single token for {', '.join(missing)}: "
                     f"each would be split into pieces and the end of turn {TEMPLATES[name].stop!r} never generated "
                     f"as one token; pass the template the tokenizer was made for as {tpl_flag} ({fit}), or a "
                     "tokenizer that has them")


def _listed_tokens(file: str) -> set[str]:
  """The tokens a tokenizer_config.json names: its special tokens (bos, eos, ..., extra / additional special
  tokens) and added_tokens_decoder."""
  if not os.path.exists(file):
    return set()
  try:
    with open(file, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise InputError(f"{file}: not valid JSON ({one_line(e)}); the tokenizer folder is corrupt") from None
  found = []
  for key, value in config.items() if isinstance(config, dict) else ():
    if key.endswith("_token") or key in ("extra_special_tokens", "additional_special_tokens"):
      found.extend(value.values() if isinstance(value, dict) and "content" not in value
                   else value if isinstance(value, list) else [value])
    elif key == "added_tokens_decoder" and isinstance(value, dict):
      found.extend(value.values())
  return {t["content"] if isinstance(t, dict) else t for t in found
          if isinstance(t, str) or (isinstance(t, dict) and isinstance(t.get("content"), str))}


def _template_in_use(tpl: str, spec: str, tpl_flag: str, spec_flag: str) -> tuple[str, str]:
  """(the template the job will use, how to name where it came from): the flag's, else the model folder's record
  (checkpoints/model_card.py), else templates.DEFAULT_TEMPLATE."""
  from insightv_jax.data.templates import DEFAULT_TEMPLATE
  if tpl:
    return tpl, f"{tpl_flag}={tpl}"
  recorded = None
  if spec and spec != "random":  # a folder: what its insightv.json records (imports the checkpoints package)
    from insightv_jax.checkpoints import model_card
    folder = model_card.spec_folder(spec)
    recorded = model_card.for_spec(spec).template
  if recorded:
    return recorded, (f"the template {recorded!r} that {spec_flag}={spec} records "
                      f"({os.path.join(folder, model_card.FILE)}; {tpl_flag} is not given)")
  return DEFAULT_TEMPLATE, f"the default template {DEFAULT_TEMPLATE!r} ({tpl_flag} is not given)"


def _pieces(tok: str, flag: str) -> Callable[[str], int]:
  """text -> how many tokens the tokenizer folder `tok` makes of it (no special tokens added), as transformers
  would: a token tokenizer_config.json lists is one (transformers adds it when tokenizer.json lacks it)."""
  folder = os.path.expanduser(tok)
  file = os.path.join(folder, "tokenizer.json")
  if os.path.exists(file):
    from tokenizers import Tokenizer
    try:
      fast = Tokenizer.from_file(file)
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exceptions for a bad file
      raise InputError(f"{flag}={tok}: {file} cannot be loaded ({type(e).__name__}: {one_line(e)[:300]}); "
                       "expected the files save_pretrained writes") from None
    listed = _listed_tokens(os.path.join(folder, "tokenizer_config.json"))
    return lambda text: 1 if text in listed else len(fast.encode(text, add_special_tokens=False).ids)
  from insightv_jax.data.tokenizer import load_tokenizer  # a slow-only tokenizer (tokenizer.model, vocab.json)
  try:
    slow = load_tokenizer(folder)
  except InputError as e:
    raise InputError(f"{flag}={tok}: {one_line(e)}") from None
  return lambda text: len(slow(text, add_special_tokens=False)["input_ids"])


def check(config, table: dict[str | tuple[str, ...], Callable[..., None]]) -> None:
  """Runs `table[field](value, "--config.<field>")` for every dotted config field of `table`, and
  `table[(f1, f2, ...)](value1, value2, ..., "--config.<f1>", "--config.<f2>", ...)` for a check across fields."""
  for fields, fn in table.items():
    fields = (fields,) if isinstance(fields, str) else fields
    fn(*[_field(config, f) for f in fields], *[f"--config.{f}" for f in fields])


def present(config, *fields: str) -> list[str]:
  """The dotted `fields` that `config` has (for kinds a config may or may not carry, e.g. a prompt preset)."""
  out = []
  for dotted in fields:
    node = config
    for part in dotted.split("."):
      node = node.get(part) if hasattr(node, "get") else None
    if node is not None:
      out.append(dotted)
  return out


def _field(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value
