"""Optimizer: AdamW with linear warmup + cosine decay, global-norm clipping, and parameter freezing.

Freezing is by regex over parameter paths ('/'-joined, e.g. `vision_tower/layers/layers/0/fc1/kernel`):
frozen parameters get no optimizer state and no update, and the train step stops their gradients so XLA
skips the backward pass through them (e.g. the vision tower in LLaVA-NeXT SFT).
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import optax


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def trainable_mask(params, freeze: Sequence[str]):
  """A pytree of bools: False where the parameter path matches any `freeze` regex."""
  patterns = [re.compile(p) for p in freeze]
  return jax.tree_util.tree_map_with_path(lambda p, _: not any(r.search(path_str(p)) for r in patterns), params)


def lr_schedule(cfg) -> optax.Schedule:
  """cfg: lr, warmup_ratio (of total_steps), total_steps, final_lr_ratio.

  No warmup and final_lr_ratio 1 is a constant lr: then the compiled step does not depend on total_steps, so runs
  that differ only in their length share one compiled program (the persistent compilation cache hits).
  """
  warmup = max(int(cfg.warmup_ratio * cfg.total_steps), 0)
  if not warmup and cfg.final_lr_ratio == 1.0:
    return optax.constant_schedule(cfg.lr)
  return optax.warmup_cosine_decay_schedule(init_value=0.0 if warmup else cfg.lr, peak_value=cfg.lr,
                                            warmup_steps=warmup, decay_steps=max(cfg.total_steps, warmup + 1),
                                            end_value=cfg.lr * cfg.final_lr_ratio)


def make_optimizer(cfg, mask) -> optax.GradientTransformation:
  """cfg (ml_collections): lr, warmup_ratio, total_steps, final_lr_ratio, b1, b2, eps, weight_decay, clip_norm.

  Weight decay applies to matrices only (not to norms, biases or the image_newline vector).
  """
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(),
      optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                  mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)),
  )
  labels = jax.tree.map(lambda t: "train" if t else "frozen", mask)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
