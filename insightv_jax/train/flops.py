"""Analytic model FLOPs of a train step (for MFU): every matmul, vision tower included.

XLA's `cost_analysis()` counts a scanned layer body once, not once per layer, so MFU uses these counts.
"""

from __future__ import annotations

# bf16 dense peak FLOP/s per device, for MFU when config.device_peak_flops is "auto"
PEAK_FLOPS = {"tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12, "tpu v5p": 459e12, "tpu v6 lite": 918e12,
              "h100": 989e12, "h200": 989e12, "a100": 312e12}


def train_flops(cfg, seq: int, batch: int, tiles_per_row: int) -> float:
  """Forward + backward (3x forward) matmul FLOPs of one step: decoder (incl. LM head and attention), vision
  tower (only the layers LLaVA runs) and projector, for `batch` rows of `seq` tokens with `tiles_per_row` tiles."""
  t, v = cfg.text, cfg.vision
  d, e = t.hidden_size, t.head_dim
  per_tok = 2 * (d * t.num_attention_heads * e + 2 * d * t.num_key_value_heads * e + t.num_attention_heads * e * d
                 + 3 * d * t.intermediate_size)
  text = batch * seq * (t.num_hidden_layers * per_tok + 2 * d * t.vocab_size)
  text += batch * t.num_hidden_layers * 2 * 2 * seq * seq * t.num_attention_heads * e
  s, vd = v.num_positions, v.hidden_size
  vis_tok = 2 * (4 * vd * vd + 2 * vd * v.intermediate_size)
  layers = cfg.vision_layers_needed
  vision = batch * tiles_per_row * (s * (layers * vis_tok + 2 * v.num_channels * v.patch_size**2 * vd)
                                    + layers * 2 * 2 * s * s * vd)
  proj = batch * tiles_per_row * s * 2 * (vd * len(cfg.feature_layers) * d + d * d)
  return 3.0 * (text + vision + proj)


def device_peak(kind: str) -> float:
  kind = kind.lower()
  return next((v for k, v in PEAK_FLOPS.items() if k in kind), 0.0)
