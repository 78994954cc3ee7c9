"""Model presets as llava-hf `config.json` dicts (field names and values as Hugging Face writes them).

    --config=configs/models.py:tiny                       tests and the CPU demo
    --config=configs/models.py:llava-next-llama3-8b       CLIP ViT-L/14-336 + LLaMA-3-8B (llama3-llava-next-8b-hf)
    --config=configs/models.py:llava-next-qwen2-7b        SigLIP-so400m-14-384 + Qwen2-7B

Build the model config with `insightv_jax.model.config.LlavaConfig.from_hf(get_config(name).to_dict())`.
Job configs embed one of these under `config.model`.
"""

import ml_collections


def _pinpoints(tile: int, max_side: int = 3):
  """All grids up to max_side x max_side tiles: [[h, w], ...] in pixels (9 shapes for 3 x 3)."""
  return [[a * tile, b * tile] for a in range(1, max_side + 1) for b in range(1, max_side + 1)]


CLIP_VIT_L_336 = dict(
    model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
    num_attention_heads=16, num_channels=3, image_size=336, patch_size=14, hidden_act="quick_gelu",
    layer_norm_eps=1e-5)

SIGLIP_SO400M_384 = dict(
    model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
    num_attention_heads=16, num_channels=3, image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6)

LLAMA3_8B = dict(
    model_type="llama", vocab_size=128320, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_parameters=dict(rope_type="default", rope_theta=500000.0), attention_bias=False,
    mlp_bias=False, tie_word_embeddings=False, hidden_act="silu")

QWEN2_7B = dict(
    model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4, head_dim=128, max_position_embeddings=32768,
    rms_norm_eps=1e-6, rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
    tie_word_embeddings=False, hidden_act="silu")

PRESETS = {
    "llava-next-llama3-8b": dict(
        model_type="llava_next", vision_config=CLIP_VIT_L_336, text_config=LLAMA3_8B, image_token_index=128256,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        multimodal_projector_bias=True, tie_word_embeddings=False),
    "llava-next-qwen2-7b": dict(
        model_type="llava_next", vision_config=SIGLIP_SO400M_384, text_config=QWEN2_7B, image_token_index=151646,
        image_grid_pinpoints=_pinpoints(384), vision_feature_layer=-1, vision_feature_select_strategy="full",
        projector_hidden_act="gelu", multimodal_projector_bias=True, tie_word_embeddings=False),
    # Demo: one 8-px patch per cell of a 3 x 3 grid (24-px tiles), a 3-layer 128-wide LLaMA; learns the
    # synthetic counting task on CPU in minutes. The vocabulary grows to the demo's BPE tokenizer.
    "demo": dict(
        model_type="llava_next",
        vision_config=dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2, image_size=24, patch_size=8,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5),
        text_config=dict(model_type="llama", vocab_size=256, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                         max_position_embeddings=1024, rms_norm_eps=1e-6,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0), tie_word_embeddings=False),
        image_token_index=250, image_grid_pinpoints=[[24, 24]], vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", multimodal_projector_bias=True,
        tie_word_embeddings=False),
    # Tiny: 28-px tiles of 2 x 2 patches, a 2-layer 48-wide LLaMA; builds and runs in seconds on CPU.
    "tiny": dict(
        model_type="llava_next",
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=3, num_attention_heads=4, image_size=28, patch_size=14,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5),
        text_config=dict(model_type="llama", vocab_size=256, hidden_size=48, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                         max_position_embeddings=512, rms_norm_eps=1e-6,
                         rope_parameters=dict(rope_type="default", rope_theta=500000.0),
                         tie_word_embeddings=False),
        image_token_index=250, image_grid_pinpoints=[[28, 56], [56, 28], [56, 56], [28, 84], [84, 28]],
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        multimodal_projector_bias=True, tie_word_embeddings=False),
}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f"unknown model preset {arg!r}; choose one of {sorted(PRESETS)}")
  return ml_collections.ConfigDict(PRESETS[arg])
