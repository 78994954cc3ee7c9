"""Builders for test_checkpoints_llava_original.py: tiny checkpoints and configs in the original LLaVA-NeXT layout.

`write_original` rewrites a tiny transformers LLaVA-NeXT checkpoint into the layout LLaVA-NeXT saves (its module
names, several shards, a flat text config.json with `mm_*` fields from `original_config`); `vision_config_arg` gives
its tower's config as a dict, a whole SiglipConfig or a config.json path; `think_tokenizer` is an Insight-V-like
tokenizer (think tokens, no `<image>`); `base_config` is lmms-lab/llama3-llava-next-8b's config.json.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from insightv_jax.checkpoints.safetensors_io import open_checkpoint, write_checkpoint
from insightv_jax.data.prompts import AGENT_TOKENS

# llava-hf name (transformers v5 on disk) -> LLaVA-NeXT's module path (llava_arch.py, clip_encoder.py, builder.py)
TO_ORIGINAL = [
    ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("image_newline", "model.image_newline"),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
]


def original_config(hf_cfg, case: dict) -> dict:
  """An original config.json as LLaVA-NeXT's train.py writes it (flat text fields + mm_* fields)."""
  text = hf_cfg.text_config.to_dict()
  rope = text.pop("rope_parameters")
  model_type = {"llama": "llava_llama", "qwen2": "llava_qwen"}[text["model_type"]]
  return {
      **text, "rope_theta": rope["rope_theta"], "rope_scaling": None, "model_type": model_type,
      "architectures": [{"llava_llama": "LlavaLlamaForCausalLM", "llava_qwen": "LlavaQwenForCausalLM"}[model_type]],
      "torch_dtype": "float32", "mm_vision_tower": f"/home/models/tiny-{case['vision']}",
      "mm_hidden_size": hf_cfg.vision_config.hidden_size, "mm_projector_type": "mlp2x_gelu",
      "mm_vision_select_layer": case["select"], "mm_vision_select_feature": "patch",
      "mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "anyres",
      "image_grid_pinpoints": case["pinpoints"], "use_mm_proj": True, "mm_use_im_start_end": False,
      "mm_use_im_patch_token": False, "mm_use_think_token": True, "tokenizer_padding_side": "right",
      "tokenizer_model_max_length": 512, "mm_tunable_parts": "mm_mlp_adapter,mm_language_model",
      "image_crop_resolution": None,
  }


def write_original(hf_model, hf_cfg, case: dict, folder) -> None:
  """Rewrites a transformers LLaVA-NeXT checkpoint into the original layout."""
  staging = str(folder) + "-hf"
  hf_model.save_pretrained(staging)
  last = hf_cfg.vision_config.num_hidden_layers - 1
  tensors = {}
  for name, f in open_checkpoint(staging).items():
    if case["vision"] == "siglip" and name.startswith(f"vision_tower.encoder.layers.{last}."):
      continue  # LLaVA-NeXT's SigLipVisionTower deletes the last layer before training and saving
    disk = next(orig + name[len(hf):] for hf, orig in TO_ORIGINAL if name.startswith(hf))
    tensors[disk] = np.array(f.get(name))
  shutil.rmtree(staging)
  write_checkpoint(str(folder), [(n, a.shape, a.dtype) for n, a in tensors.items()], tensors.__getitem__,
                   max_shard_bytes=200_000)  # several shards + index.json, like the real checkpoints
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(original_config(hf_cfg, case), f, indent=2)


def vision_config_arg(hf_cfg, kind: str, folder):
  d = hf_cfg.vision_config.to_dict()
  if kind == "dict":
    return d
  if kind == "nested":
    return {"model_type": "siglip", "vision_config": {k: v for k, v in d.items() if k != "model_type"}}
  path = os.path.join(str(folder) + "-tower", "config.json")
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    json.dump(d, f)
  return path


def think_tokenizer(words: int):
  """An Insight-V-like tokenizer: `words` plain tokens, then the four think tokens; no <image>."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(words)}, unk_token="w0"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")
  fast.add_tokens(list(AGENT_TOKENS), special_tokens=True)
  return fast


def base_config(**kw) -> dict:
  """lmms-lab/llama3-llava-next-8b's config.json (the fields that matter)."""
  d = {
      "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "vocab_size": 128256,
      "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
      "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False, "hidden_act": "silu",
      "torch_dtype": "bfloat16", "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 1024,
      "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
      "mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "anyres",
      "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
  }
  d.update(kw)
  return d
