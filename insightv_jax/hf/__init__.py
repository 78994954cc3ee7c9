"""Hugging Face checkpoint folders (safetensors + config.json) <-> our Flax NNX `LlavaNext`.

    model = load_llava_next("/ckpts/llava-v1.6-8b", dtype="bfloat16", mesh=mesh)
    model = load_llava_next("/ckpts/llama3-llava-next-8b")     # original LLaVA-NeXT / Insight-V layout, detected
    save_llava_next(model, "/tmp/export")     # transformers.LlavaNextForConditionalGeneration loads it
    save_llava_original(model, "/tmp/orig")   # LLaVA-NeXT's own LlavaLlamaForCausalLM / LlavaQwenForCausalLM

The documented entry points of ../shared/DESIGN.md section 4; all go through the one layout registry
(`insightv_jax.checkpoints`), which reads every shard straight from memory-mapped safetensors. The original
layout's name and config mapping, and how its models get an image token id: checkpoints/llava_original.py.
"""

from __future__ import annotations

import jax

from insightv_jax.checkpoints import LAYOUTS, CheckpointMismatchError, load_model, save_model
from insightv_jax.model.llava import LlavaNext

__all__ = ["load_llava_next", "save_llava_next", "save_llava_original", "CheckpointMismatchError"]


def load_llava_next(path: str, dtype: str = "float32", *, param_dtype: str | None = None,
                    mesh: jax.sharding.Mesh | None = None, scan_layers: bool = False, remat: str = "none",
                    strict: bool = True, vision_config=None) -> LlavaNext:
  """A llava-hf or original LLaVA-NeXT checkpoint folder -> `LlavaNext` sharded on `mesh` (default: first device).

  The layout is read from config.json's model_type: llava_llama / llava_qwen (original), else llava-hf.
  strict: tensors that match no parameter are an error (False: skip them with a warning).
  vision_config: original layout only, when its vision tower is no preset: the tower's config (a dict, or the
  path of its CLIP / SigLIP config.json).
  """
  layout = "llava" if LAYOUTS["llava"].detect(path) else "hf"
  return load_model(f"{layout}:{path}", dtype, param_dtype=param_dtype, mesh=mesh, scan_layers=scan_layers, remat=remat,
                    strict=strict, vision_config=vision_config)


def save_llava_next(model: LlavaNext, path: str, *, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes config.json + safetensors shards that `transformers` loads (every process calls this)."""
  save_model(model, path, layout="hf", dtype=dtype, max_shard_bytes=max_shard_bytes)


def save_llava_original(model: LlavaNext, path: str, *, dtype: str | None = None,
                        max_shard_bytes: int = 5 * 2**30, vision_tower: str | None = None) -> None:
  """Writes config.json + safetensors shards in the original LLaVA-NeXT layout (every process calls this).

  The original layout has no image token field; the model is written as it is (a vocabulary grown for `<image>`
  stays grown, and config.json records the id when it is not the vocabulary size). vision_tower: the tower's name
  (LLaVA-NeXT's mm_vision_tower); needed when the tower is no preset.
  """
  save_model(model, path, layout="llava", dtype=dtype, max_shard_bytes=max_shard_bytes, vision_tower=vision_tower)
