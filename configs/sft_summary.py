"""SFT of the summary agent on question + chain (mixed quality) -> answer (Insight-V: 1 epoch, lr 1e-5)."""

from configs.train_base import base


def get_config(variant: str = "tiny"):
  c = base("sft", variant)
  if variant != "tiny":
    c.optim.lr = 1e-5
  return c
