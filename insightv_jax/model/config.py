"""Model configuration: frozen dataclasses that mirror Hugging Face `config.json`.

The field names and meanings are those of `transformers`' `CLIPVisionConfig` / `SiglipVisionConfig`,
`LlamaConfig` / `Qwen2Config` and `LlavaNextConfig`, so that a llava-hf `config.json` loads with
`LlavaConfig.from_hf(dict)` and writes back with `to_hf()`. Presets live in `configs/models.py` as
HF-style dicts; there is exactly one way to build a config: `LlavaConfig.from_hf(...)`.

Runtime knobs that HF does not have (compute dtype, remat, scanned layers, attention kernel) are fields of
`LlavaConfig` too, and are never written into `config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

VISION_MODEL_TYPES = ("clip_vision_model", "siglip_vision_model")
TEXT_MODEL_TYPES = ("llama", "qwen2")
REMAT_POLICIES = ("none", "full", "dots_saveable", "nothing_saveable")
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")  # insightv_jax/model/attention.py


class ConfigError(ValueError):
  """A config dict that cannot describe a supported model; the message names the field."""


def _require(d: Mapping[str, Any], key: str, where: str):
  if key not in d or d[key] is None:
    raise ConfigError(f"{where}: required field {key!r} is missing")
  return d[key]


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """A CLIP or SigLIP ViT, as in `CLIPVisionConfig` / `SiglipVisionConfig`.

  model_type: "clip_vision_model" (class token, pre-LN, quick_gelu) or "siglip_vision_model"
    (no class token, no pre-LN, gelu-tanh).
  hidden_size: d, the token width.  intermediate_size: MLP width.
  num_hidden_layers / num_attention_heads: depth and heads.
  image_size / patch_size: one tile is image_size^2 pixels cut into (image_size/patch_size)^2 patches.
  hidden_act: activation name as in `transformers.activations.ACT2FN`.
  layer_norm_eps: LayerNorm epsilon.
  """

  model_type: str = "clip_vision_model"
  hidden_size: int = 1024
  intermediate_size: int = 4096
  num_hidden_layers: int = 24
  num_attention_heads: int = 16
  num_channels: int = 3
  image_size: int = 336
  patch_size: int = 14
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5

  @property
  def has_class_token(self) -> bool:
    return self.model_type == "clip_vision_model"

  @property
  def patches_per_side(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_positions(self) -> int:
    return self.patches_per_side**2 + int(self.has_class_token)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """A LLaMA or Qwen2 decoder, as in `LlamaConfig` / `Qwen2Config`.

  vocab_size: V.  hidden_size: d.  intermediate_size: SwiGLU width.
  num_attention_heads / num_key_value_heads: query heads and KV heads (GQA when fewer KV heads).
  head_dim: per-head width (defaults to hidden_size / num_attention_heads).
  rms_norm_eps: RMSNorm epsilon.  rope_theta: RoPE base.
  rope_scaling: None, or {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"} (LLaMA-3.1 style) or {"rope_type": "linear", "factor"}.
  attention_bias: q/k/v/o biases (LLaMA flag). Qwen2 always has q/k/v biases and no o bias.
  mlp_bias: biases on the SwiGLU projections (LLaMA flag).
  tie_word_embeddings: the LM head reuses the token embedding matrix.
  """

  model_type: str = "llama"
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int = 32
  head_dim: int = 128
  max_position_embeddings: int = 4096
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None  # sorted (key, value) pairs; see `rope_scaling_dict`
  attention_bias: bool = False
  mlp_bias: bool = False
  tie_word_embeddings: bool = False
  hidden_act: str = "silu"

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    return None if self.rope_scaling is None else dict(self.rope_scaling)

  @property
  def qkv_bias(self) -> bool:
    return self.model_type == "qwen2" or self.attention_bias

  @property
  def o_bias(self) -> bool:
    return self.model_type != "qwen2" and self.attention_bias


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
  """LLaVA-NeXT: vision tower -> mlp2x_gelu projector -> AnyRes packing -> decoder.

  image_token_index: the placeholder id; each image expands to `num_image_tokens(...)` of them.
  image_grid_pinpoints: AnyRes candidate resolutions [[h, w], ...] in pixels (multiples of the tile).
  vision_feature_layer: hidden-state index (or list of indices, concatenated) taken from the tower;
    -2 is LLaVA-NeXT's default (the penultimate layer's output).
  vision_feature_select_strategy: "default" drops the class token, "full" keeps it.
  projector_hidden_act / multimodal_projector_bias: the mlp2x_gelu projector.
  tie_word_embeddings: mirrors the text config's flag.

  Runtime (not in config.json):
  dtype: compute dtype of activations and matmuls ("float32" on CPU, "bfloat16" on accelerators).
  param_dtype: storage dtype of parameters (fp32 master weights by default).
  remat: activation checkpointing policy per decoder/vision layer, one of REMAT_POLICIES.
  scan_layers: stack layers and run them with `nnx.scan` (fast compiles for deep models).
  attention: the decoder's attention implementation, one of ATTENTION_IMPLEMENTATIONS: "xla" (ours, runs
    everywhere), "cudnn" (cuDNN flash attention, NVIDIA GPU, bf16 / fp16), "splash" (Pallas TPU kernel), "auto"
    (cudnn on GPU in bf16 / fp16, splash on TPU, xla otherwise). Resolved when the model is built; one that
    cannot run there raises `attention.AttentionUnavailable`.
  """

  vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
  text: TextConfig = dataclasses.field(default_factory=TextConfig)
  image_token_index: int = 32000
  image_grid_pinpoints: tuple[tuple[int, int], ...] = ((336, 672), (672, 336), (672, 672), (1008, 336),
                                                       (336, 1008))
  vision_feature_layer: int | tuple[int, ...] = -2
  vision_feature_select_strategy: str = "default"
  projector_hidden_act: str = "gelu"
  multimodal_projector_bias: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = False
  attention: str = "auto"

  def __post_init__(self):
    if self.vision.model_type not in VISION_MODEL_TYPES:
      raise ConfigError(f"vision_config.model_type={self.vision.model_type!r}; supported: {VISION_MODEL_TYPES}")
    if self.text.model_type not in TEXT_MODEL_TYPES:
      raise ConfigError(f"text_config.model_type={self.text.model_type!r}; supported: {TEXT_MODEL_TYPES}")
    if self.vision_feature_select_strategy not in ("default", "full"):
      raise ConfigError(f"vision_feature_select_strategy={self.vision_feature_select_strategy!r}; "
                        "expected 'default' or 'full'")
    if self.remat not in REMAT_POLICIES:
      raise ConfigError(f"remat={self.remat!r}; expected one of {REMAT_POLICIES}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ConfigError(f"attention={self.attention!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
    tile = self.vision.image_size
    for hw in self.image_grid_pinpoints:
      if len(hw) != 2 or hw[0] % tile or hw[1] % tile:
        raise ConfigError(f"image_grid_pinpoints entry {list(hw)} is not a [h, w] pair of multiples of "
                          f"vision_config.image_size={tile}")
    for layer in self.feature_layers:
      if not -self.vision.num_hidden_layers - 1 <= layer <= self.vision.num_hidden_layers:
        raise ConfigError(f"vision_feature_layer={layer} is outside the tower's "
                          f"{self.vision.num_hidden_layers + 1} hidden states")

  @property
  def feature_layers(self) -> tuple[int, ...]:
    """Vision hidden-state indices to concatenate, as non-negative indices into [embeddings, layer_1, ...]."""
    layers = (self.vision_feature_layer,) if isinstance(self.vision_feature_layer, int) else self.vision_feature_layer
    n = self.vision.num_hidden_layers + 1
    return tuple(int(layer) % n for layer in layers)

  @property
  def vision_layers_needed(self) -> int:
    """How many encoder layers must run to produce every selected hidden state."""
    return max(self.feature_layers)

  @property
  def tokens_per_tile(self) -> int:
    """Vision tokens per tile after feature selection: 576 for CLIP-336/14 with "default"."""
    return self.vision.num_positions - int(self.vision_feature_select_strategy == "default")

  # --------------------------------------------------------------------------- HF dict conversion

  @classmethod
  def from_hf(cls, d: Mapping[str, Any], **runtime) -> LlavaConfig:
    """Builds a config from a llava-hf `config.json` dict (transformers v4 or v5 layout)."""
    d = dict(d)
    if d.get("model_type", "llava_next") != "llava_next":
      raise ConfigError(f"config.json model_type={d.get('model_type')!r}; expected 'llava_next'")
    vd = dict(_require(d, "vision_config", "config.json"))
    td = dict(_require(d, "text_config", "config.json"))
    vision = _dataclass_from(VisionConfig, vd, "vision_config")
    rope_params = td.get("rope_parameters") or {}
    rope_theta = td.get("rope_theta", rope_params.get("rope_theta", 10000.0))
    rope_scaling = td.get("rope_scaling")
    if rope_scaling is None and rope_params.get("rope_type", "default") != "default":
      rope_scaling = {k: v for k, v in rope_params.items() if k != "rope_theta"}
    if rope_scaling is not None:
      rope_scaling = dict(rope_scaling)
      rope_scaling.setdefault("rope_type", rope_scaling.get("type"))
      if rope_scaling["rope_type"] not in ("llama3", "linear", "default"):
        raise ConfigError(f"text_config rope type {rope_scaling['rope_type']!r} is not supported "
                          "(supported: default, linear, llama3)")
      rope_scaling = None if rope_scaling["rope_type"] == "default" else tuple(sorted(
          (k, v) for k, v in rope_scaling.items() if k != "type" and v is not None))
    td_norm = dict(td)
    td_norm["rope_theta"] = float(rope_theta)
    td_norm["rope_scaling"] = rope_scaling
    if td_norm.get("head_dim") is None:
      td_norm["head_dim"] = _require(td, "hidden_size", "text_config") // _require(
          td, "num_attention_heads", "text_config")
    if td_norm.get("num_key_value_heads") is None:
      td_norm["num_key_value_heads"] = td_norm["num_attention_heads"]
    tie = bool(d.get("tie_word_embeddings", td.get("tie_word_embeddings", False)))
    td_norm["tie_word_embeddings"] = tie
    text = _dataclass_from(TextConfig, td_norm, "text_config")
    layer = d.get("vision_feature_layer", -2)
    return cls(
        vision=vision,
        text=text,
        image_token_index=int(d.get("image_token_index", d.get("image_token_id", 32000))),
        image_grid_pinpoints=tuple(tuple(int(x) for x in hw) for hw in d.get(
            "image_grid_pinpoints", cls.image_grid_pinpoints)),
        vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
        vision_feature_select_strategy=d.get("vision_feature_select_strategy", "default"),
        projector_hidden_act=d.get("projector_hidden_act", "gelu"),
        multimodal_projector_bias=bool(d.get("multimodal_projector_bias", True)),
        **runtime,
    )

  @classmethod
  def from_file(cls, path: str, *, what: str = "a checkpoint folder", **runtime) -> LlavaConfig:
    """Reads `path` (a config.json, or a folder holding one); `what` names the expected folder in errors."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
      raise FileNotFoundError(f"{path}: no config.json (expected {what})")
    try:
      with open(file) as f:
        d = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{file}: not valid JSON ({e})") from e
    return cls.from_hf(d, **runtime)

  def to_hf(self) -> dict[str, Any]:
    """The llava-hf `config.json` dict (transformers v5 layout) for this model."""
    v = {f.name: getattr(self.vision, f.name) for f in dataclasses.fields(VisionConfig)}
    t = {f.name: getattr(self.text, f.name) for f in dataclasses.fields(TextConfig)}
    rope = {"rope_type": "default", "rope_theta": t.pop("rope_theta")}
    scaling = t.pop("rope_scaling")
    if scaling:
      rope.update(dict(scaling))
    t["rope_parameters"] = rope
    return {
        "model_type": "llava_next",
        "architectures": ["LlavaNextForConditionalGeneration"],
        "vision_config": v,
        "text_config": t,
        "image_token_index": self.image_token_index,
        "image_grid_pinpoints": [list(hw) for hw in self.image_grid_pinpoints],
        "vision_feature_layer": (self.vision_feature_layer if isinstance(self.vision_feature_layer, int)
                                 else list(self.vision_feature_layer)),
        "vision_feature_select_strategy": self.vision_feature_select_strategy,
        "projector_hidden_act": self.projector_hidden_act,
        "multimodal_projector_bias": self.multimodal_projector_bias,
        "tie_word_embeddings": self.text.tie_word_embeddings,
        "image_seq_length": self.tokens_per_tile,
    }

  def replace(self, **kw) -> LlavaConfig:
    return dataclasses.replace(self, **kw)


def _dataclass_from(cls, d: Mapping[str, Any], where: str):
  """Takes the fields `cls` knows from an HF sub-config dict; the rest (ids, labels...) is ignored."""
  names = {f.name for f in dataclasses.fields(cls)}
  kwargs = {k: d[k] for k in names if k in d and d[k] is not None}
  try:
    return cls(**kwargs)
  except TypeError as e:  # pragma: no cover - dataclass signature errors
    raise ConfigError(f"{where}: {e}") from e
