"""Converting a checkpoint folder from one layout to another (what `insightv-convert` runs).

    convert("hf:/ckpts/llama3-llava-next-8b-hf", "/ckpts/ours", to="params")
    convert("/runs/dpo/export", "/serve/llava", to="hf", dtype="bfloat16")
    convert("llava:/ckpts/llama3-llava-next-8b", "/ckpts/ours", to="params", image_token_index=128256)
    convert("/runs/dpo/export", "/ckpts/insight-v-reason", to="llava")     # the original LLaVA-NeXT layout

Tokenizer and processor files found beside the source weights are copied across unchanged (`insightv-convert`
then writes the tokenizer, its chat template, generation_config.json and, for "hf", the processor:
insightv_jax/data/model_files.py). What the source records travels (checkpoints/model_card.py): its
insightv.json (template, prompt preset), an original release's config.json and tower name (a llava source keeps
its own: "llava" -> "params" -> training -> "llava" writes every field of the release back), and the bos / eos /
pad ids of its config.json.

The image token: the "hf" and "params" layouts store the model's image_token_index, and transformers looks it up
in the embedding table, so a model whose id is past its vocabulary (an original LLaVA-NeXT checkpoint, see
llava_original.py) is grown by mean-initialised rows first (`model.resize.fit_vocab`). The "llava" layout has no image
token and is written as the model is.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from insightv_jax.checkpoints import model_card
from insightv_jax.checkpoints.registry import LAYOUTS, load_model, parse_spec, save_model
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.resize import fit_vocab

log = logging.getLogger(__name__)

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja",
              "generation_config.json")


def convert(src: str, dst: str, *, to: str, dtype: str = "float32", overwrite: bool = False, vision_config=None,
            image_token_index: int | None = None, vocab_size: int | None = None, vision_tower: str | None = None,
            token_ids: dict | None = None) -> LlavaConfig:
  """src: a model spec ('<layout>:<folder>' or a folder); dst: a new folder written in layout `to`. Returns the
  written model's config.

  vision_config: for an original ("llava") source whose vision tower is no preset (a dict or a config.json path).
  image_token_index: the `<image>` id of the tokenizer that goes with dst (default: the model's own); vocab_size:
  that tokenizer's length (the model grows mean-initialised rows up to it); both ignored when `to` is "llava".
  vision_tower: the tower's name (LLaVA-NeXT's mm_vision_tower) when neither the source nor its card names it.
  token_ids: bos / eos / pad ids for the ones the source's config.json does not have (its own are kept).
  """
  if to not in LAYOUTS:
    raise ValueError(f"to={to!r}; expected one of {sorted(LAYOUTS)}")
  layout, folder = parse_spec(src)
  if os.path.exists(dst) and os.listdir(dst) and not overwrite:
    raise FileExistsError(f"output folder {dst} exists and is not empty; pass --overwrite (overwrite=True) to "
                          "replace it")
  card = source_card(layout.name, folder)
  card = card.replace(vision_tower=vision_tower or card.vision_tower)
  model = load_model(src, dtype=dtype, vision_config=vision_config)
  options = {"token_ids": {**(token_ids or {}), **model_card.token_ids(folder)}}
  if to == "llava":
    options.update(base_config=card.original_config, vision_tower=card.vision_tower)
  else:
    token = model.cfg.image_token_index if image_token_index is None else image_token_index
    model = fit_vocab(model, vocab_size=max(token + 1, vocab_size or 0), image_token_index=token)
  save_model(model, dst, layout=to, dtype=dtype, **options)
  for name in SIDE_FILES:
    if os.path.exists(os.path.join(folder, name)):
      shutil.copy(os.path.join(folder, name), os.path.join(dst, name))
  if card != model_card.ModelCard():
    model_card.write(dst, card)
  log.info("converted %s -> %s (%s)", src, dst, to)
  return model.cfg


def source_card(layout: str, folder: str) -> model_card.ModelCard:
  """What a source folder records (its insightv.json); an original ("llava") folder's own config.json is its
  original_config and its mm_vision_tower the tower's name; a llava-hf one's vision_config may name the tower."""
  card = model_card.read(folder)
  if layout == "llava":
    with open(os.path.join(folder, "config.json")) as f:
      original = json.load(f)
    return card.replace(original_config=original, vision_tower=original.get("mm_vision_tower") or card.vision_tower)
  return card.replace(vision_tower=card.vision_tower or model_card.vision_tower_name(folder))
