"""The one registry of checkpoint layouts: detect a folder's layout, read its config, load sharded, save.

    model = load_model("hf:/ckpts/llama3-llava-next-8b-hf", dtype="bfloat16", mesh=mesh)
    model = load_model("/runs/sft/export")             # a bare folder: its layout is detected
    model = load_model("llava:/ckpts/llama3-llava-next-8b")     # original LLaVA-NeXT / Insight-V checkpoints
    save_model(model, "/serve/llava", layout="hf", dtype="bfloat16")

A model spec is "<layout>:<folder>" or a bare folder. Layouts (one module each):
    hf       llava-hf safetensors, what `transformers.LlavaNextForConditionalGeneration` reads   llava_hf.py
    params   our params-only Orbax folder (config.json + params/), the hand-off between stages   params.py
    llava    original LLaVA-NeXT / Insight-V safetensors (LlavaLlama/QwenForCausalLM)           llava_original.py
Every layout reads its config into a `LlavaConfig` and loads straight into the shardings of
`sharding.RULES` on the given mesh (default: the first device). Detection reads config.json: `model_type`
llava_next (hf, with safetensors; params, with params/) vs llava_llama / llava_qwen (llava). Deprecated, for
one release: "hf:" on an original-layout folder (and "llava:" on a llava-hf one) still reads the folder in its
own layout, with a warning that names the right prefix; a bare folder is always detected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import jax

from insightv_jax import sharding
from insightv_jax.checkpoints import llava_hf, llava_original, params
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext


@dataclasses.dataclass(frozen=True)
class Layout:
  """name: the spec prefix. detect(folder) -> bool. read_config(folder, **runtime) -> LlavaConfig.
  load(folder, cfg, mesh) -> LlavaNext. save(model, folder, dtype=None) writes the layout.
  names_vision_tower: config.json may name its vision tower without describing it; read_config then takes
  vision_config= (a dict or the path of the tower's config.json)."""

  name: str
  description: str
  detect: Callable[[str], bool]
  read_config: Callable[..., LlavaConfig]
  load: Callable[..., LlavaNext]
  save: Callable[..., None]
  names_vision_tower: bool = False


LAYOUTS: dict[str, Layout] = {
    "hf": Layout("hf", "llava-hf safetensors (transformers LlavaNextForConditionalGeneration)", llava_hf.is_layout,
                 llava_hf.read_config, llava_hf.load, llava_hf.save),
    "params": Layout("params", "params-only Orbax folder (config.json + params/)", params.is_layout,
                     params.read_config, params.load, params.save),
    "llava": Layout("llava", "original LLaVA-NeXT / Insight-V safetensors (model_type llava_llama / llava_qwen)",
                    llava_original.is_layout, llava_original.read_config, llava_original.load, llava_original.save,
                    names_vision_tower=True),
}


# "hf:" and "llava:" both name Hugging Face-style safetensors folders; config.json's model_type says which one.
SAFETENSORS_LAYOUTS = ("hf", "llava")
log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # specs already warned about (a job parses its spec several times)


def parse_spec(spec: str) -> tuple[Layout, str]:
  """'<layout>:<folder>' or a bare folder (layout detected) -> (layout, folder).

  'hf:' and 'llava:' accept either safetensors layout: a folder detected as the other one is read as that one,
  with a deprecation warning naming the right prefix (this reading goes in the next release).
  """
  name, sep, rest = spec.partition(":")
  if sep and name in LAYOUTS:
    if name in SAFETENSORS_LAYOUTS:
      detected = [n for n in SAFETENSORS_LAYOUTS if LAYOUTS[n].detect(rest)]
      if detected and detected[0] != name:
        _warn_prefix(spec, name, detected[0], rest)
        name = detected[0]
    return LAYOUTS[name], rest
  folder = os.path.expanduser(spec)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"model {spec!r}: no such folder (a model is '<layout>:<folder>' with layout one of "
                            f"{sorted(LAYOUTS)}, or a checkpoint folder)")
  for layout in LAYOUTS.values():
    if layout.detect(folder):
      return layout, folder
  raise ValueError(f"model {spec!r}: the folder matches no checkpoint layout: "
                   + "; ".join(f"'{n}:' = {lay.description}" for n, lay in LAYOUTS.items()))


def _warn_prefix(spec: str, given: str, detected: str, folder: str) -> None:
  if spec in _WARNED:
    return
  _WARNED.add(spec)
  log.warning("%r: %s is a %s folder (%s), read as '%s:%s'. Deprecated: '%s:' will stop reading %s folders in the "
              "next release; write '%s:%s' (or the bare folder)", spec, folder, LAYOUTS[detected].description,
              "config.json model_type", detected, folder, given, detected, detected, folder)


def read_config(spec: str, *, vision_config=None, **runtime) -> LlavaConfig:
  """The `LlavaConfig` of a model spec; runtime: dtype, param_dtype, remat, scan_layers, attention.

  vision_config: for a folder whose config.json names a vision tower that is no preset ("llava" layout).
  """
  layout, folder = parse_spec(spec)
  return _read_config(layout, folder, vision_config, runtime)


def _read_config(layout: Layout, folder: str, vision_config, runtime) -> LlavaConfig:
  if vision_config is None:
    return layout.read_config(folder, **runtime)
  if not layout.names_vision_tower:
    raise ValueError(f"vision_config= is for checkpoints whose config.json names a vision tower without "
                     f"describing it ('llava:' layout); {folder} is a '{layout.name}:' folder, whose config.json "
                     "describes its own")
  return layout.read_config(folder, vision_config=vision_config, **runtime)


def load_model(spec: str, dtype: str = "float32", *, param_dtype: str | None = None,
               mesh: jax.sharding.Mesh | None = None, scan_layers: bool = False, remat: str = "none",
               attention: str = "auto", config: LlavaConfig | None = None, vision_config=None,
               **options) -> LlavaNext:
  """A model spec -> `LlavaNext` with parameters born sharded on `mesh` (default: the first device).

  dtype: compute dtype; param_dtype: storage dtype of the weights (defaults to `dtype`). attention: the
  decoder's attention implementation (`insightv_jax.model.attention`: auto | xla | cudnn | splash).
  config: use this config instead of the folder's (its runtime fields included).
  vision_config: the vision tower's config (a dict or a config.json path) for a "llava" folder whose tower is
  no preset.
  options: the layout's own (e.g. strict=False for "hf" / "llava": skip tensors that match no parameter).
  """
  layout, folder = parse_spec(spec)
  cfg = config or _read_config(layout, folder, vision_config, dict(dtype=dtype, param_dtype=param_dtype or dtype,
                                                                   scan_layers=scan_layers, remat=remat,
                                                                   attention=attention))
  return layout.load(folder, cfg, mesh or sharding.single_device_mesh(), **options)


def save_model(model: LlavaNext, folder: str, *, layout: str, dtype: str | None = None, **options) -> None:
  """Writes `model` in `layout` (every process calls this; one writes). dtype: on-disk dtype.

  options: the layout's own (e.g. max_shard_bytes for "hf" / "llava"; base_config for "llava").
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {sorted(LAYOUTS)}")
  LAYOUTS[layout].save(model, folder, dtype=dtype, **options)
