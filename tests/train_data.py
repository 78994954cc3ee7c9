"""A small synthetic training set (SFT + DPO records, images, a BPE tokenizer) written to a folder."""

from __future__ import annotations

from data_gen.synthetic.world import World, WorldConfig
from insightv_jax.data import prompts, records
from insightv_jax.data.tokenizer import train_bpe


def write_training_data(root: str, n: int = 32) -> dict:
  world = World(WorldConfig(kinds=("left_of", "chart_range"), image_size=56, bars=3), seed=1)
  qs = world.write(root, "train", n)
  chain = lambda q, m=None: prompts.format_chain(world.teacher_path(q, m).steps)
  sft = [records.ReasoningSFT(id=q.id, images=q.images, question=q.question, reasoning=chain(q)) for q in qs]
  records.write_array_record(f"{root}/sft.ar", sft)
  pairs = [records.DPOPair(id=q.id, images=q.images, prompt=q.question, chosen=chain(q),
                           rejected=chain(q, "wrong_count")) for q in qs]
  records.write_array_record(f"{root}/dpo.ar", pairs)
  tok = train_bpe([r.reasoning + " " + r.question for r in sft], 400, "llama3")
  tok.save_pretrained(f"{root}/tok")
  return {"root": root, "tok": f"{root}/tok", "sft": f"{root}/sft.ar", "dpo": f"{root}/dpo.ar"}


def tiny_train_config(data: dict, job: str = "sft_reasoning", **overrides):
  """configs/<job>.py:tiny pointed at `data`, with dotted-key overrides (e.g. {"optim.total_steps": 5})."""
  import importlib
  cfg = importlib.import_module(f"configs.{job}").get_config("tiny")
  cfg.tokenizer = data["tok"]
  cfg.data.paths = data["dpo" if job == "dpo" else "sft"]
  cfg.data.image_root = data["root"]
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg
