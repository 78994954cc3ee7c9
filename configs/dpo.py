"""One DPO round of the reasoning agent (Insight-V: lr 5e-7, beta 0.1, sigmoid on summed log-probs, 1 epoch,
reference = the round's starting policy, plus an NLL term on the chosen chain)."""

from configs.train_base import base


def get_config(variant: str = "tiny"):
  c = base("dpo", variant)
  c.dpo.sft_weight = 1.0
  if variant != "tiny":
    c.optim.lr = 5e-7
  else:
    c.optim.lr = 1e-4
    c.optim.warmup_ratio = 0.0
  return c
