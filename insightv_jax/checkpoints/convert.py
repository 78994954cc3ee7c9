"""Converting a checkpoint folder from one layout to another (what `insightv-convert` runs).

    convert("hf:/ckpts/llama3-llava-next-8b-hf", "/ckpts/ours", to="params")
    convert("/runs/dpo/export", "/serve/llava", to="hf", dtype="bfloat16")
    convert("llava:/ckpts/llama3-llava-next-8b", "/ckpts/ours", to="params", image_token_index=128256)
    convert("/runs/dpo/export", "/ckpts/insight-v-reason", to="llava")     # the original LLaVA-NeXT layout

Tokenizer and processor files found beside the source weights are copied across unchanged.

The image token: the "hf" and "params" layouts store the model's image_token_index, and transformers looks it up
in the embedding table, so a model whose id is past its vocabulary (an original LLaVA-NeXT checkpoint, see
llava_original.py) is grown by mean-initialised rows first (`model.resize.fit_vocab`). The "llava" layout has no image
token and is written as the model is; llava -> llava keeps the source config.json's other fields.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from insightv_jax.checkpoints.registry import LAYOUTS, load_model, parse_spec, save_model
from insightv_jax.model.resize import fit_vocab

log = logging.getLogger(__name__)

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja",
              "generation_config.json")


def convert(src: str, dst: str, *, to: str, dtype: str = "float32", overwrite: bool = False, vision_config=None,
            image_token_index: int | None = None) -> None:
  """src: a model spec ('<layout>:<folder>' or a folder); dst: a new folder written in layout `to`.

  vision_config: for an original ("llava") source whose vision tower is no preset (a dict or a config.json path).
  image_token_index: the `<image>` id of the tokenizer that goes with dst (default: the model's own); ignored
  when `to` is "llava".
  """
  if to not in LAYOUTS:
    raise ValueError(f"to={to!r}; expected one of {sorted(LAYOUTS)}")
  layout, folder = parse_spec(src)
  if os.path.exists(dst) and os.listdir(dst) and not overwrite:
    raise FileExistsError(f"output folder {dst} exists and is not empty; pass --overwrite (overwrite=True) to "
                          "replace it")
  model = load_model(src, dtype=dtype, vision_config=vision_config)
  options = {}
  if to == "llava" and layout.name == "llava":
    with open(os.path.join(folder, "config.json")) as f:
      options["base_config"] = json.load(f)
  elif to != "llava":
    token = model.cfg.image_token_index if image_token_index is None else image_token_index
    model = fit_vocab(model, vocab_size=token + 1, image_token_index=token)
  save_model(model, dst, layout=to, dtype=dtype, **options)
  for name in SIDE_FILES:
    if os.path.exists(os.path.join(folder, name)):
      shutil.copy(os.path.join(folder, name), os.path.join(dst, name))
  log.info("converted %s -> %s (%s)", src, dst, to)
