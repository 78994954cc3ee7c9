"""SFT of the reasoning agent on the top-scored chains (Insight-V: ~200K chains, 2 epochs, lr 5e-6)."""

from configs.train_base import base


def get_config(variant: str = "tiny"):
  c = base("sft", variant)
  if variant != "tiny":
    c.optim.lr = 5e-6
  return c
