"""What a model folder records besides its weights, in one file, `insightv.json` (only this module reads or writes it).

    card = model_card.read("/runs/sft/export")   # ModelCard(template="llava_llama_3", prompts="ours", ...)
    model_card.update(folder, template="llava_llama_3", prompts="ours")
    template = model_card.resolve("template", config.data.template, card, fallback="llama3",
                                  flag="--config.data.template")

Fields (each None when unknown):
    template          the chat template the model was trained with (insightv_jax/data/templates.py TEMPLATES)
    prompts           the prompt preset its agents were trained with (insightv_jax/data/prompts.py PROMPT_PRESETS)
    original_config   the config.json of the original LLaVA-NeXT release the weights came from, as it was:
                      `--to=llava-original` writes its fields back (checkpoints/llava_original.py config_to_original)
    vision_tower      the vision tower's name (hub id or folder), LLaVA-NeXT's `mm_vision_tower`

Every writer (`insightv-convert`, the training export) carries the card of the folder it started from forward and
updates what it changed. bos / eos ids are not here: they are the config.json's own fields (`token_ids`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from insightv_jax.utils.inputs import InputError

log = logging.getLogger(__name__)

FILE = "insightv.json"
TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


@dataclasses.dataclass(frozen=True)
class ModelCard:
  template: str | None = None
  prompts: str | None = None
  original_config: dict[str, Any] | None = None
  vision_tower: str | None = None

  def replace(self, **kw) -> ModelCard:
    return dataclasses.replace(self, **kw)


def read(folder: str | None) -> ModelCard:
  """The card of a model folder (an empty card when the folder has none, or folder is None / not a folder)."""
  if not folder or not os.path.isdir(folder) or not os.path.exists(os.path.join(folder, FILE)):
    return ModelCard()
  file = os.path.join(folder, FILE)
  try:
    with open(file) as f:
      d = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise InputError(f"{file}: cannot be read as JSON ({e}); it records the model's template and prompt preset: "
                     "fix or delete it") from e
  if not isinstance(d, dict):
    raise InputError(f"{file}: expected a JSON object, got {type(d).__name__}")
  names = {f.name for f in dataclasses.fields(ModelCard)}
  return ModelCard(**{k: v for k, v in d.items() if k in names})


def spec_folder(spec: str | None) -> str | None:
  """The folder of a model spec ('<layout>:<folder>' or a folder); None for '' / 'random'."""
  if not spec or spec == "random":
    return None
  from insightv_jax.checkpoints.registry import LAYOUTS
  name, sep, rest = spec.partition(":")
  return os.path.expanduser(rest if sep and name in LAYOUTS else spec)


def for_spec(spec: str | None) -> ModelCard:
  """The card of a model spec; empty for '' / 'random' / a folder without one."""
  return read(spec_folder(spec))


def write(folder: str, card: ModelCard) -> None:
  """Writes `card` (fields that are None are left out) into folder/insightv.json."""
  d = {k: v for k, v in dataclasses.asdict(card).items() if v is not None}
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, FILE), "w") as f:
    json.dump(d, f, indent=2)


def update(folder: str, **fields) -> ModelCard:
  """Sets `fields` (None leaves a field as it is) in folder's card and writes it; returns the new card."""
  card = read(folder).replace(**{k: v for k, v in fields.items() if v is not None})
  write(folder, card)
  return card


def resolve(field: str, given: str, card: ModelCard, *, fallback: str, flag: str, where: str = "the model folder"
            ) -> str:
  """The value a job uses for `field` ("template" / "prompts"): the flag when given, else the card's, else fallback.

  Logs a line saying where the value came from, and a warning when the flag overrides a different recorded value.
  """
  recorded = getattr(card, field)
  if given:
    if recorded and recorded != given:
      log.warning("%s=%s overrides the %s %r that %s records (%s)", flag, given, field, recorded, where, FILE)
    return given
  if recorded:
    log.info("%s: %r, recorded in %s (%s); pass %s to override", field, recorded, where, FILE, flag)
    return recorded
  log.info("%s: %r (%s records none; pass %s to choose)", field, fallback, where, flag)
  return fallback


# ------------------------------------------------------------------------------------------------ token ids

def token_ids(folder: str) -> dict[str, Any]:
  """bos / eos / pad ids of a model folder's config.json (text_config for llava-hf and params folders, top level
  for the original layout); only the ids it has."""
  file = os.path.join(folder or "", "config.json")
  if not folder or not os.path.exists(file):
    return {}
  with open(file) as f:
    d = json.load(f)
  found = {k: d[k] for k in TOKEN_ID_FIELDS if d.get(k) is not None}
  text = d.get("text_config") if isinstance(d.get("text_config"), dict) else {}
  found.update({k: text[k] for k in TOKEN_ID_FIELDS if text.get(k) is not None})
  return found


def with_token_ids(hf_config: dict, ids: dict | None) -> dict:
  """A llava-hf config dict with bos / eos / pad ids set in its text_config (where transformers reads them)."""
  if ids:
    hf_config["text_config"] = {**hf_config["text_config"], **ids}
  return hf_config


def vision_tower_name(folder: str) -> str | None:
  """The tower's name that a llava-hf / params config.json keeps (vision_config `_name_or_path` or `name`)."""
  file = os.path.join(folder, "config.json")
  if not os.path.exists(file):
    return None
  with open(file) as f:
    d = json.load(f)
  vision = d.get("vision_config") if isinstance(d.get("vision_config"), dict) else {}
  return vision.get("_name_or_path") or vision.get("name") or None
