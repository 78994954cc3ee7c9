"""The original LLaVA-NeXT / Insight-V checkpoint layout (`LlavaLlamaForCausalLM`, `LlavaQwenForCausalLM`).

`lmms-lab/llama3-llava-next-8b` and the released Insight-V agents come in this layout: a flat LLaMA / Qwen2
config.json (`model_type` llava_llama / llava_qwen) with `mm_*` fields, and safetensors named after LLaVA-NeXT's
modules (llava/model/llava_arch.py). One entry of the layout registry ("llava:<folder>"); the tensors stream
through llava_hf's machinery (`load_tensors` / `save_tensors`) under `NAMING`.

Names (original -> the canonical llava-hf names of hf_names.py; the same mapping as KEYS_TO_MODIFY_MAPPING of
transformers' convert_llava_next_weights_to_hf.py):
    model.vision_tower.vision_tower.vision_model.*   vision_tower.*
    model.mm_projector.0 / .2                        multi_modal_projector.linear_1 / .linear_2
    model.image_newline                              image_newline
    model.{embed_tokens, layers.*, norm}             language_model.model.*
    lm_head                                          language_model.lm_head
    *.rotary_emb.inv_freq, ...embeddings.position_ids   skipped (buffers older transformers saved, not parameters)

Config (original field -> `LlavaConfig`), read by `config_from_original`, written by `config_to_original`:
    model_type            llava_llama -> LLaMA, llava_qwen -> Qwen2; the flat text fields -> `cfg.text`
    mm_vision_tower       names the tower; config.json holds no vision config, so it comes from, in order:
                          vision_config= (a dict, or the path of a CLIP/SigLIP config.json), a "vision_config"
                          key of config.json (what `save` writes for a tower that is no preset), the tower's
                          config.json when mm_vision_tower is a local folder, `VISION_TOWER_PRESETS` by the
                          name's last part (Insight-V's configs name a local copy such as
                          /home/models/clip-vit-large-patch14-336); else a ConfigError.
    mm_hidden_size        must equal the tower's hidden_size
    mm_projector_type     "mlp2x_gelu" only (Linear, GELU, Linear with biases: our projector)
    mm_vision_select_layer, mm_vision_select_feature ("patch" | "cls_patch")
                          -> vision_feature_layer, vision_feature_select_strategy ("default" | "full"), for CLIP.
                          A SigLIP tower follows LLaVA-NeXT's SigLipVisionTower, which deletes the tower's last
                          layer (the checkpoint holds num_hidden_layers - 1 of them) and always returns the last
                          hidden state of all patches, whatever these two fields say: ours gets
                          num_hidden_layers - 1 layers, vision_feature_layer -1 and strategy "full".
    mm_patch_merge_type   "spatial_unpad" only (AnyRes tiles, unpadding, image_newline)
    image_aspect_ratio    "anyres" only
    image_grid_pinpoints  [[w, h], ...] in LLaVA's (width, height) order (ours: [h, w]; the order is kept, so
                          ties between candidate grids break the same way), or "(AxB),...,(CxD)" expanded over
                          the tile as llava/train/train.py does (`expand_pinpoints`)

image_token_index: the original layout has no image token. LLaVA-NeXT writes the sentinel IMAGE_TOKEN_INDEX = -200
into input_ids and its tokenizers have no `<image>` (its preprocessing appends one to a copy of the tokenizer
only to find the placeholders). Our model takes a real id: config.json's "image_token_index" when present (what
`save` writes when it is not the default), else the text vocab_size, the id `<image>` gets when it is appended to
a tokenizer as long as the embedding table (the llama3-llava-next-8b and Insight-V tokenizers are). That id is
past the table: our model overwrites image positions with image features before their embedding is used, so an
original checkpoint runs as is. `insightv-convert` to the other layouts adds `<image>` to the tokenizer
(`data.tokenizer.add_image_token`), takes its id and grows the vocabulary with a mean-initialised row when the id
is past it (`model.resize.fit_vocab`); training fits the config to its tokenizer the same way.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from typing import Any, Mapping

import jax

from insightv_jax.checkpoints import hf_names, llava_hf
from insightv_jax.model.config import ConfigError, LlavaConfig, VisionConfig
from insightv_jax.model.llava import LlavaNext

NAMING = hf_names.Naming(renames=(  # (original prefix, canonical llava-hf prefix); the first match applies
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower."),
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
    ("model.image_newline", "image_newline"),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
))

ORIGINAL_MODEL_TYPES = {"llava_llama": "llama", "llava_qwen": "qwen2"}  # original model_type -> text model_type
ARCHITECTURES = {"llava_llama": "LlavaLlamaForCausalLM", "llava_qwen": "LlavaQwenForCausalLM"}

# Compatibility constants: the architecture fields of the towers LLaVA-NeXT and Insight-V use, as the "vision_config"
# of each checkpoint's config.json on the Hugging Face hub gives them (openai/clip-vit-large-patch14-336,
# google/siglip-so400m-patch14-384). An original config names its tower but does not describe it.
VISION_TOWER_PRESETS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": dict(
        model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, num_channels=3, image_size=336, patch_size=14, hidden_act="quick_gelu",
        layer_norm_eps=1e-5),
    "google/siglip-so400m-patch14-384": dict(
        model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
        num_attention_heads=16, num_channels=3, image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6),
}
# The defaults of transformers' CLIPVisionConfig / SiglipVisionConfig: a tower's config.json leaves out the
# fields that keep them (SigLIP's omits hidden_act and layer_norm_eps).
VISION_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5),
    "siglip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, num_channels=3, image_size=224, patch_size=16,
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
}
SELECT_FEATURES = {"patch": "default", "cls_patch": "full"}  # mm_vision_select_feature -> our strategy
# What LLaVA-NeXT's SigLIP scripts pass; its SigLipVisionTower ignores both fields.
SIGLIP_SELECT = {"mm_vision_select_layer": -2, "mm_vision_select_feature": "patch"}


# ------------------------------------------------------------------------------------------------ the layout

def is_layout(path: str) -> bool:
  """A folder with config.json and *.safetensors whose model_type is llava_llama or llava_qwen."""
  return (llava_hf.safetensors_config(path) or {}).get("model_type") in ORIGINAL_MODEL_TYPES


def read_config(path: str, *, vision_config: Mapping[str, Any] | str | None = None, **runtime) -> LlavaConfig:
  """The `LlavaConfig` of an original folder (or config.json); vision_config: see `config_from_original`."""
  file = os.path.join(path, "config.json") if os.path.isdir(path) else path
  if not os.path.exists(file):
    raise FileNotFoundError(f"{path}: no config.json (expected an original LLaVA-NeXT checkpoint folder)")
  return config_from_original(_read_json(file), vision_config=vision_config, where=file, **runtime)


def load(path: str, cfg: LlavaConfig, mesh: jax.sharding.Mesh, *, strict: bool = True) -> LlavaNext:
  """Streams an original folder's safetensors into a `LlavaNext` sharded on `mesh` (see llava_hf.load_tensors).

  strict: tensors that match no parameter are an error (False: skip them with a warning).
  """
  return llava_hf.load_tensors(path, cfg, mesh, naming=NAMING, strict=strict)


def save(model: LlavaNext, path: str, *, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30,
         base_config: Mapping[str, Any] | None = None, vision_tower: str | None = None,
         token_ids: Mapping[str, Any] | None = None) -> None:
  """Writes config.json + safetensors in the original layout (every process calls this; process 0 writes).

  dtype: on-disk dtype (default: the parameters' own). base_config: the config.json of the original release the
  model came from (a params folder keeps it in its model card); its other fields are written back (see
  `config_to_original`). vision_tower: the tower's name when base_config has none. token_ids: bos / eos / pad ids.
  """
  stored = llava_hf.save_tensors(model, path, naming=NAMING, dtype=dtype, max_shard_bytes=max_shard_bytes)
  if stored is None:
    return
  out = config_to_original(model.cfg, dtype=stored, base=base_config, vision_tower=vision_tower)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({**out, **(token_ids or {})}, f, indent=2)


# ------------------------------------------------------------------------------------------------ config mapping

def config_from_original(d: Mapping[str, Any], *, vision_config: Mapping[str, Any] | str | None = None,
                         where: str = "config.json", **runtime) -> LlavaConfig:
  """An original LLaVA-NeXT config.json dict -> `LlavaConfig` (runtime: dtype, param_dtype, remat, scan_layers).

  vision_config: the tower's config (a dict or the path of its config.json), for a tower that is no preset.
  Every field this model cannot honour is a ConfigError that names it.
  """
  model_type = d.get("model_type")
  if model_type not in ORIGINAL_MODEL_TYPES:
    raise ConfigError(f"{where}: model_type={model_type!r}; the original LLaVA-NeXT layout supports "
                      f"{sorted(ORIGINAL_MODEL_TYPES)}")
  _expect(d, "mm_projector_type", "mlp2x_gelu", where, "our projector is LLaVA-NeXT's two-layer GELU MLP")
  _expect(d, "mm_patch_merge_type", "spatial_unpad", where, "our model packs AnyRes tiles with unpadding and "
          "image_newline")
  _expect(d, "image_aspect_ratio", "anyres", where, "our preprocessing is LLaVA-NeXT's AnyRes tiling")
  vocab = _field(d, "vocab_size", where)
  tower = _tower(d, vision_config, where)
  if d.get("mm_hidden_size") not in (None, tower["hidden_size"]):
    raise ConfigError(f"{where}: mm_hidden_size={d['mm_hidden_size']} but the vision tower "
                      f"{d.get('mm_vision_tower')!r} is {tower['hidden_size']} wide")
  if tower["model_type"] == "siglip_vision_model":  # LLaVA-NeXT's SigLipVisionTower: see the module docstring
    vision = {**tower, "num_hidden_layers": tower["num_hidden_layers"] - 1}
    layer, strategy = -1, "full"
  else:
    vision = tower
    layer = int(_field(d, "mm_vision_select_layer", where))
    feature = d.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURES:
      raise ConfigError(f"{where}: mm_vision_select_feature={feature!r}; supported: {sorted(SELECT_FEATURES)}")
    strategy = SELECT_FEATURES[feature]
  hf = {
      "model_type": "llava_next",
      "vision_config": vision,
      "text_config": {**d, "model_type": ORIGINAL_MODEL_TYPES[model_type],
                      "rope_scaling": d.get("rope_scaling") or None},  # LLaVA-NeXT may write {} for none
      "image_token_index": int(d.get("image_token_index", vocab)),
      "image_grid_pinpoints": expand_pinpoints(_field(d, "image_grid_pinpoints", where), vision["image_size"]),
      "vision_feature_layer": layer,
      "vision_feature_select_strategy": strategy,
      "projector_hidden_act": "gelu",
      "multimodal_projector_bias": True,
      "tie_word_embeddings": bool(d.get("tie_word_embeddings", False)),
  }
  return LlavaConfig.from_hf(hf, **runtime)


def config_to_original(cfg: LlavaConfig, *, dtype: str = "float32", base: Mapping[str, Any] | None = None,
                       vision_tower: str | None = None) -> dict[str, Any]:
  """`LlavaConfig` -> an original config.json dict that `config_from_original` reads back to the same model.

  base: the config.json of the original checkpoint the model was read from. Its other fields (tokenizer
  settings, bos / eos ids, training flags, ...) are kept, and so is its spelling of fields that do not change the
  model: the tower's name, and a SigLIP tower's select fields. A tower that is no preset is written under
  "vision_config". mm_vision_tower, the name LLaVA-NeXT's builder loads the tower by: base's, else vision_tower,
  else the preset's name; else a ConfigError (a model_type such as "clip_vision_model" names no tower).
  """
  model_type = {text: orig for orig, text in ORIGINAL_MODEL_TYPES.items()}[cfg.text.model_type]
  if cfg.projector_hidden_act != "gelu" or not cfg.multimodal_projector_bias:
    raise ConfigError(f"projector_hidden_act={cfg.projector_hidden_act!r}, multimodal_projector_bias="
                      f"{cfg.multimodal_projector_bias}: the original layout's mlp2x_gelu projector is GELU with "
                      "biases")
  text = dataclasses.asdict(cfg.text)
  text.pop("model_type")
  text["rope_scaling"] = cfg.text.rope_scaling_dict
  if cfg.text.model_type == "qwen2":  # Qwen2's biases are fixed; its config has no such flags
    text.pop("attention_bias")
    text.pop("mlp_bias")
  tower = dataclasses.asdict(cfg.vision)
  keep = {"mm_vision_tower"}  # fields whose source spelling is kept (they do not change the model)
  if cfg.vision.model_type == "siglip_vision_model":
    if cfg.feature_layers != (cfg.vision.num_hidden_layers,) or cfg.vision_feature_select_strategy != "full":
      raise ConfigError(f"vision_feature_layer={cfg.vision_feature_layer}, vision_feature_select_strategy="
                        f"{cfg.vision_feature_select_strategy!r}: the original layout's SigLIP tower always takes the "
                        "last hidden state of all patches (-1, 'full')")
    tower["num_hidden_layers"] += 1  # the layer LLaVA-NeXT deletes: not in the checkpoint
    select = dict(SIGLIP_SELECT)
    keep |= set(SIGLIP_SELECT)
  else:
    if not isinstance(cfg.vision_feature_layer, int):
      raise ConfigError(f"vision_feature_layer={list(cfg.vision_feature_layer)}: the original layout selects one "
                        "vision layer")
    strategy_to_feature = {s: f for f, s in SELECT_FEATURES.items()}
    select = {"mm_vision_select_layer": cfg.vision_feature_layer,
              "mm_vision_select_feature": strategy_to_feature[cfg.vision_feature_select_strategy]}
  preset = next((name for name, p in VISION_TOWER_PRESETS.items() if p == tower), None)
  name = (base or {}).get("mm_vision_tower") or vision_tower or preset
  if not name:
    raise ConfigError("mm_vision_tower: the model's vision tower is no preset and nothing names it (no original "
                      "config.json in its model card, no vision_config _name_or_path); pass vision_tower= "
                      "(insightv-convert --vision_tower=<hub id or folder of the tower>)")
  out = {
      "architectures": [ARCHITECTURES[model_type]],
      "model_type": model_type,
      **text,
      "torch_dtype": dtype,
      "use_cache": True,
      "mm_vision_tower": name,
      "mm_hidden_size": cfg.vision.hidden_size,
      "mm_projector_type": "mlp2x_gelu",
      **select,
      "mm_patch_merge_type": "spatial_unpad",
      "image_aspect_ratio": "anyres",
      "image_grid_pinpoints": [[w, h] for h, w in cfg.image_grid_pinpoints],
      "use_mm_proj": True,
      "mm_use_im_start_end": False,
      "mm_use_im_patch_token": False,
  }
  if preset is None:
    out["vision_config"] = tower
  if cfg.image_token_index != cfg.text.vocab_size:
    out["image_token_index"] = cfg.image_token_index
  base = dict(base or {})
  base.pop("vision_config", None)
  base.pop("image_token_index", None)
  return {**base, **out, **{k: base[k] for k in keep if k in base}}


def expand_pinpoints(value: str | list, tile: int) -> list[list[int]]:
  """An original image_grid_pinpoints -> [[h, w], ...] in pixels (our and llava-hf's order, LLaVA's sequence).

  LLaVA-NeXT's pairs are (width, height) (llava/mm_utils.py select_best_resolution). A string "(AxB),...,(CxD)"
  is expanded over the tile as llava/train/train.py does: (i, j) for i in A..C for j in B..D, times the tile;
  any other string is a Python literal. With 336-px tiles, "(1x1),...,(2x2)" is (w, h) (336, 336), (336, 672),
  (672, 336), (672, 672), i.e. [h, w] [[336, 336], [672, 336], [336, 672], [672, 672]].
  """
  if isinstance(value, str) and "x" in value:
    matches = re.findall(r"\((\d+)x(\d+)\)", value)
    if not matches:
      raise ConfigError(f"image_grid_pinpoints={value!r} is not of the form '(AxB),...,(CxD)'")
    (a0, a1), (b0, b1) = (tuple(map(int, m)) for m in (matches[0], matches[-1]))
    pairs = [(i * tile, j * tile) for i in range(a0, b0 + 1) for j in range(a1, b1 + 1)]
  else:
    if isinstance(value, str):
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError) as e:
        raise ConfigError(f"image_grid_pinpoints={value!r} is neither '(AxB),...,(CxD)' nor a list of pairs") from e
    pairs = [tuple(int(x) for x in p) for p in value]
  if not pairs or any(len(p) != 2 for p in pairs):
    raise ConfigError(f"image_grid_pinpoints={value!r}: expected (width, height) pairs")
  return [[h, w] for w, h in pairs]


def tower_config(source: Mapping[str, Any] | str) -> dict[str, Any]:
  """A CLIP / SigLIP config (a dict, a config.json path, or a folder holding one) -> our vision fields.

  Takes a vision config (model_type clip_vision_model / siglip_vision_model) or a whole CLIP / SigLIP config
  (model_type clip / siglip) with one nested; fields it leaves out get transformers' defaults.
  """
  if isinstance(source, str):
    file = os.path.join(source, "config.json") if os.path.isdir(source) else source
    if not os.path.exists(file):
      raise FileNotFoundError(f"vision_config {source!r}: no such config.json")
    d, where = _read_json(file), file
  else:
    d, where = dict(source), "vision_config"
  if d.get("model_type") in ("clip", "siglip") and isinstance(d.get("vision_config"), Mapping):
    d = {**d["vision_config"], "model_type": f"{d['model_type']}_vision_model"}
  kind = d.get("model_type")
  if kind not in VISION_CONFIG_DEFAULTS:
    raise ConfigError(f"{where}: model_type={kind!r}; expected a CLIP or SigLIP vision config "
                      f"({sorted(VISION_CONFIG_DEFAULTS)}, or 'clip' / 'siglip' with a nested vision_config)")
  fields = {f.name for f in dataclasses.fields(VisionConfig)}
  out = {"model_type": kind, **VISION_CONFIG_DEFAULTS[kind],
         **{k: v for k, v in d.items() if k in fields and v is not None}}
  return {k: out[k] for k in sorted(fields)}


def _tower(d: Mapping[str, Any], vision_config, where: str) -> dict[str, Any]:
  """The tower's own config (all its layers), by the order of the module docstring."""
  if vision_config is not None:
    return tower_config(vision_config)
  if isinstance(d.get("vision_config"), Mapping):
    return tower_config(d["vision_config"])
  name = d.get("mm_vision_tower") or d.get("vision_tower")
  if not name:
    raise ConfigError(f"{where}: required field 'mm_vision_tower' is missing")
  if os.path.exists(os.path.join(name, "config.json")):
    return tower_config(name)
  for preset, fields in VISION_TOWER_PRESETS.items():
    if name.rstrip("/").split("/")[-1] == preset.split("/")[-1]:
      return dict(fields)
  raise ConfigError(f"{where}: mm_vision_tower={name!r} is not a known tower ({sorted(VISION_TOWER_PRESETS)}) and "
                    "no config.json describes it: give the tower's CLIP / SigLIP config.json as insightv-convert "
                    "--vision_config=<file> (vision_config= in Python; convert such a folder once and use the "
                    "params folder it writes)")


def _expect(d: Mapping[str, Any], key: str, want: str, where: str, why: str) -> None:
  if d.get(key) != want:
    raise ConfigError(f"{where}: {key}={d.get(key)!r} is not supported; only {want!r} ({why})")


def _field(d: Mapping[str, Any], key: str, where: str):
  if d.get(key) is None:
    raise ConfigError(f"{where}: required field {key!r} is missing")
  return d[key]


def _read_json(file: str) -> dict:
  try:
    with open(file) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{file}: not valid JSON ({e})") from e

