"""A small synthetic training set (SFT + DPO records, images, a BPE tokenizer) written to a folder."""

from __future__ import annotations

import json

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
  return override(cfg, **overrides)


def loader_config(**fields):
  """A LoaderConfig from configs/train_base.py's data section (the one home of its defaults) with `fields` set;
  the template and preset ("" there: from the model's folder) are the library defaults unless given."""
  from configs.train_base import data_section
  from insightv_jax.data.loader_config import LoaderConfig
  from insightv_jax.data.templates import DEFAULT_TEMPLATE
  return LoaderConfig.from_config(data_section(), **{"template": DEFAULT_TEMPLATE,
                                                     "prompts": prompts.DEFAULT_PRESET, **fields})


def override(cfg, **dotted):
  """Sets dotted-key fields of an ml_collections config in place ({"optim.total_steps": 5}); returns it."""
  for key, value in dotted.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def write_llava_data(root: str, n: int = 16) -> dict:
  """The same kind of world as LLaVA-NeXT JSON under `root`: llava.json (a pretty-printed array of two-turn
  conversations, every fourth one text-only), llava_dpo.json (prompt / chosen / rejected pairs), the images,
  and a BPE tokenizer."""
  world = World(WorldConfig(kinds=("left_of", "chart_range"), image_size=56, bars=3), seed=1)
  qs = world.write(root, "train", n)
  chain = lambda q, m=None: prompts.format_chain(world.teacher_path(q, m).steps)
  convs = []
  for i, q in enumerate(qs):
    text_only = i % 4 == 3
    turns = [{"from": "human", "value": q.question if text_only else f"<image>\n{q.question}"},
             {"from": "gpt", "value": chain(q)}, {"from": "human", "value": "So what is the answer?"},
             {"from": "gpt", "value": q.answer}]
    convs.append({"id": q.id, "conversations": turns, **({} if text_only else {"image": q.images[0].path})})
  pairs = [{"id": q.id, "image": q.images[0].path, "prompt": q.question, "chosen": chain(q),
            "rejected": chain(q, "wrong_count"), "answer": q.answer, "chosen_score": 1.0, "rejected_score": 0.0}
           for q in qs]
  with open(f"{root}/llava.json", "w") as f:
    json.dump(convs, f, indent=2)
  with open(f"{root}/llava_dpo.json", "w") as f:
    json.dump(pairs, f, indent=2)
  tok = train_bpe([chain(q) + " " + q.question + " So what is the answer? " + q.answer for q in qs], 400, "llama3")
  tok.save_pretrained(f"{root}/tok")
  return {"root": root, "tok": f"{root}/tok", "llava": f"{root}/llava.json", "llava_dpo": f"{root}/llava_dpo.json"}
