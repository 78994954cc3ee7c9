"""Converting a checkpoint folder from one layout to another (what `insightv-convert` runs).

    convert("hf:/ckpts/llama3-llava-next-8b-hf", "/ckpts/ours", to="params")
    convert("/runs/dpo/export", "/serve/llava", to="hf", dtype="bfloat16")

Tokenizer and processor files found beside the source weights are copied across unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil

from insightv_jax.checkpoints.registry import LAYOUTS, load_model, parse_spec, save_model

log = logging.getLogger(__name__)

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja",
              "generation_config.json")


def convert(src: str, dst: str, *, to: str, dtype: str = "float32", overwrite: bool = False) -> None:
  """src: a model spec ('<layout>:<folder>' or a folder); dst: a new folder written in layout `to`."""
  if to not in LAYOUTS:
    raise ValueError(f"to={to!r}; expected one of {sorted(LAYOUTS)}")
  _, folder = parse_spec(src)
  if os.path.exists(dst) and os.listdir(dst) and not overwrite:
    raise FileExistsError(f"output folder {dst} exists and is not empty; pass --overwrite (overwrite=True) to "
                          "replace it")
  save_model(load_model(src, dtype=dtype), dst, layout=to, dtype=dtype)
  for name in SIDE_FILES:
    if os.path.exists(os.path.join(folder, name)):
      shutil.copy(os.path.join(folder, name), os.path.join(dst, name))
  log.info("converted %s -> %s (%s)", src, dst, to)
