"""Hugging Face checkpoint folders (safetensors + config.json) <-> our Flax NNX `LlavaNext`.

    model = load_llava_next("/ckpts/llava-v1.6-8b", dtype="bfloat16", mesh=mesh)
    save_llava_next(model, "/tmp/export")     # transformers.LlavaNextForConditionalGeneration loads it

The documented entry points of ../shared/DESIGN.md section 4; both go through the one layout registry
(`insightv_jax.checkpoints`), which reads every shard straight from memory-mapped safetensors.
"""

from __future__ import annotations

import jax

from insightv_jax.checkpoints import CheckpointMismatchError, load_model, save_model
from insightv_jax.model.llava import LlavaNext

__all__ = ["load_llava_next", "save_llava_next", "CheckpointMismatchError"]


def load_llava_next(path: str, dtype: str = "float32", *, param_dtype: str | None = None,
                    mesh: jax.sharding.Mesh | None = None, scan_layers: bool = False, remat: str = "none",
                    strict: bool = True) -> LlavaNext:
  """A llava-hf checkpoint folder -> `LlavaNext` sharded on `mesh` (default: the first device).

  strict: tensors that match no parameter are an error (False: skip them with a warning).
  """
  return load_model(f"hf:{path}", dtype, param_dtype=param_dtype, mesh=mesh, scan_layers=scan_layers, remat=remat,
                    strict=strict)


def save_llava_next(model: LlavaNext, path: str, *, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes config.json + safetensors shards that `transformers` loads (every process calls this)."""
  save_model(model, path, layout="hf", dtype=dtype, max_shard_bytes=max_shard_bytes)
