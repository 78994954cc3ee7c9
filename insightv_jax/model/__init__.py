"""LLaVA-NeXT in Flax NNX: CLIP/SigLIP tower -> mlp2x_gelu projector -> AnyRes packing -> LLaMA/Qwen2 decoder.

    from insightv_jax.model import LlavaConfig, LlavaNext
    model = LlavaNext(LlavaConfig.from_hf(hf_config_dict), rngs=nnx.Rngs(0))
    logits = model(input_ids, pixel_values, image_sizes, attention_mask)   # [B, T, V]

Modules: config (HF-mirroring dataclasses), layers, vision, projector, anyres (tiling geometry), llm (decoder +
KV cache), llava (the whole model), resize (growing the vocabulary).
"""

from insightv_jax.model.config import ConfigError, LlavaConfig, TextConfig, VisionConfig
from insightv_jax.model.llava import LlavaNext, abstract_model
from insightv_jax.model.resize import fit_vocab, grow_vocab

__all__ = ["ConfigError", "LlavaConfig", "LlavaNext", "TextConfig", "VisionConfig", "abstract_model", "fit_vocab",
           "grow_vocab"]
