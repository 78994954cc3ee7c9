"""Tiny random `transformers` LLaVA-NeXT models built offline: the PyTorch reference for parity tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import (
  CLIPVisionConfig,
  LlamaConfig,
  LlavaNextConfig,
  LlavaNextForConditionalGeneration,
  Qwen2Config,
  SiglipVisionConfig,
)

TILE = 28  # 2 x 2 patches of 14 px per tile: tiny but a real grid
IMAGE_TOKEN = 250
VOCAB = 256


def tiny_hf_config(text: str = "llama", vision: str = "clip", pinpoints=None, tie: bool = False,
                   feature_layer=-2, strategy: str | None = None) -> LlavaNextConfig:
  vkw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=TILE,
             patch_size=14)
  vcfg = CLIPVisionConfig(**vkw) if vision == "clip" else SiglipVisionConfig(vision_use_head=False, **vkw)
  tkw = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=tie)
  if text == "llama":
    tcfg = LlamaConfig(rope_theta=500000.0, **tkw)
  else:
    tcfg = Qwen2Config(rope_theta=1000000.0, **tkw)
  pinpoints = pinpoints or [[28, 56], [56, 28], [56, 56], [28, 84], [84, 28]]
  return LlavaNextConfig(vision_config=vcfg, text_config=tcfg, image_grid_pinpoints=pinpoints,
                         image_token_index=IMAGE_TOKEN, vision_feature_layer=feature_layer,
                         vision_feature_select_strategy=strategy or ("default" if vision == "clip" else "full"),
                         tie_word_embeddings=tie)


def build_hf_model(cfg: LlavaNextConfig, seed: int = 0) -> LlavaNextForConditionalGeneration:
  torch.manual_seed(seed)
  model = LlavaNextForConditionalGeneration(cfg).eval()
  with torch.no_grad():  # random init leaves some tensors at exact 0/1: perturb everything
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  return model


def random_image(h: int, w: int, seed: int) -> Image.Image:
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def hf_processor(cfg: LlavaNextConfig):
  from transformers import LlavaNextImageProcessor
  mean_std = {} if cfg.vision_config.model_type == "clip_vision_model" else dict(image_mean=[0.5] * 3,
                                                                                image_std=[0.5] * 3)
  return LlavaNextImageProcessor(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                 image_grid_pinpoints=cfg.image_grid_pinpoints, **mean_std)
