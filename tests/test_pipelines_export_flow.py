"""README's "Bring your own checkpoints and data", checked as a user would use what it writes.

Given a tiny original-layout LLaVA-NeXT folder (`llava_llama`, a CLIP tower that is no preset, its config.json beside
it) with a LLaMA-3-style tokenizer that has no `<image>`, when it is converted (`insightv-convert --to=params`),
trained a few SFT steps with template `llava_llama_3`, and exported (`--to=hf`, `--to=llava-original`), then:
`AutoTokenizer`, `AutoProcessor` and `LlavaNextForConditionalGeneration` load the hf export; its chat template
renders the trained conversation to our ids and assistant mask; the processor expands `<image>` to our count with
our pixels; greedy generation equals ours and stops at `<|eot_id|>` (generation_config.json); the original export's
config.json keeps every source field (vocab_size grows) and its tokenizer loads; the template travels (insightv.json)
and `insightv-eval`'s config defaults to it.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from hf_reference import build_hf_model, random_image, tiny_hf_config
from test_checkpoints_llava_original import vision_config_arg, write_original
from train_data import override

from insightv_jax.data.templates import TEMPLATES

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QUESTION, REPLY = "What colour is the square?", "It is red."
PINPOINTS = [[28, 56], [56, 28], [56, 56]]  # [h, w]
CASE = dict(vision="clip", select=-2, pinpoints=[[w, h] for h, w in PINPOINTS])  # the source spells (w, h)


def llama3_style_tokenizer(texts):
  """A byte-level BPE with LLaMA-3's special tokens (eos <|end_of_text|>, end of turn <|eot_id|>), no <image>."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=LLAMA3_SPECIALS[0], eos_token=LLAMA3_SPECIALS[1])
  fast.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS[2:]})
  fast.chat_template = TEMPLATES["llama3"].jinja  # what Meta ships; the export must carry llava_llama_3's
  return fast


def conversation(with_reply: bool = True):
  msgs = [{"role": "user", "content": f"<image>\n{QUESTION}"}]
  return msgs + ([{"role": "assistant", "content": REPLY}] if with_reply else [])


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
  """Runs the README flow once: original folder -> params -> 12 SFT steps -> hf and llava-original exports."""
  from insightv_jax.train.loop import train
  from pipelines.cli.convert import convert_checkpoint
  root = tmp_path_factory.mktemp("flow")
  image = random_image(56, 56, seed=3)
  os.makedirs(root / "images")
  image.save(root / "images" / "square.png")
  data = [{"id": f"q{i}", "image": "square.png",
           "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": REPLY}]}
          for i in range(8)]
  with open(root / "llava.json", "w") as f:
    json.dump(data, f)

  tok = llama3_style_tokenizer([QUESTION, REPLY, TEMPLATES["llava_llama_3"].default_system] * 10)
  hf_cfg = tiny_hf_config("llama", "clip", pinpoints=PINPOINTS, feature_layer=-2)
  hf_cfg.text_config.vocab_size = len(tok)  # a release's tokenizer is as long as its embedding table
  hf_cfg.text_config.bos_token_id = tok.bos_token_id
  hf_cfg.text_config.eos_token_id = tok.eos_token_id
  original = root / "original"
  write_original(build_hf_model(hf_cfg, seed=2), hf_cfg, CASE, original)
  tok.save_pretrained(original)
  tower = vision_config_arg(hf_cfg, "path", original)  # the tower's own config.json (no preset)

  convert_checkpoint(f"llava:{original}", str(root / "base"), to="params", vision_config=tower)
  from configs import sft_reasoning
  cfg = override(sft_reasoning.get_config("tiny"), **{
      "tokenizer": str(root / "base"), "model.init": f"params:{root / 'base'}", "data.format": "llava",
      "data.template": "llava_llama_3", "data.paths": str(root / "llava.json"), "data.image_root": str(root / "images"),
      "optim.total_steps": 12, "optim.lr": 1e-2, "checkpoint.every": 0, "mesh.fsdp": 1, "data.batch_size": 2})
  train(cfg, str(root / "sft"))
  export = str(root / "sft" / "export")
  convert_checkpoint(export, str(root / "hf"), to="hf")
  convert_checkpoint(export, str(root / "release"), to="llava-original")
  return dict(root=root, original=str(original), export=export, hf=str(root / "hf"), release=str(root / "release"),
              image=image, source_tok=tok)


def test_every_folder_records_template_and_token_ids(flow):
  from insightv_jax.checkpoints import model_card
  base = model_card.read(str(flow["root"] / "base"))
  assert base.template is None and base.original_config["mm_vision_tower"] == "/home/models/tiny-clip"
  for folder in (flow["export"], flow["hf"], flow["release"]):
    card = model_card.read(folder)
    assert card.template == "llava_llama_3" and card.vision_tower == "/home/models/tiny-clip", folder
    with open(os.path.join(folder, "generation_config.json")) as f:
      gen = json.load(f)
    eot, eos = (flow["source_tok"].convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|end_of_text|>"))
    assert gen["eos_token_id"] == [eos, eot] and gen["bos_token_id"] == flow["source_tok"].bos_token_id, folder
  for folder in (flow["export"], flow["hf"]):  # the source's bos / eos ids survive both conversions
    assert model_card.token_ids(folder)["eos_token_id"] == flow["source_tok"].eos_token_id


def test_hf_export_serves_like_ours(flow):
  import torch
  from transformers import AutoProcessor, AutoTokenizer, LlavaNextForConditionalGeneration

  from insightv_jax import infer
  from insightv_jax.checkpoints import load_model
  from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
  from insightv_jax.data.templates import encode_chat
  hf = flow["hf"]
  tok = AutoTokenizer.from_pretrained(hf)
  proc = AutoProcessor.from_pretrained(hf)
  hf_model = LlavaNextForConditionalGeneration.from_pretrained(hf).eval()
  ours = load_model(f"params:{flow['export']}")
  tpl, image_id = TEMPLATES["llava_llama_3"], tok.convert_tokens_to_ids("<image>")
  assert image_id == ours.cfg.image_token_index == len(flow["source_tok"])  # <image> appended first

  # the chat template renders the trained conversation to our ids and assistant mask
  ids, mask = encode_chat(tok, tpl, conversation(), image_token_id=image_id, image_token_counts=[1])
  ref = tok.apply_chat_template(conversation(), tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
  assert ids.tolist() == list(ref["input_ids"]) and mask.tolist() == list(ref["assistant_masks"])

  # the processor: our image token count and pixels
  geometry = ImageProcessorConfig.for_model(ours.cfg)
  n = geometry.num_image_tokens(56, 56)
  prompt_ids, _ = encode_chat(tok, tpl, conversation(False), image_token_id=image_id, image_token_counts=[n],
                              add_generation_prompt=True)
  text = proc.apply_chat_template(conversation(False), add_generation_prompt=True, tokenize=False)
  inputs = proc(text=text, images=[flow["image"]], return_tensors="pt")
  assert inputs["input_ids"][0].tolist() == prompt_ids.tolist()
  pixel_values, sizes = stack_batch([preprocess(flow["image"], geometry)])
  np.testing.assert_allclose(inputs["pixel_values"].numpy(), pixel_values, atol=1e-6)

  # greedy generation: the same tokens, stopping at the end of turn
  eot = tok.convert_tokens_to_ids("<|eot_id|>")
  with torch.no_grad():
    out = hf_model.generate(**inputs, max_new_tokens=10, do_sample=False)
  theirs = out[0, inputs["input_ids"].shape[1]:].tolist()
  mine = np.asarray(infer.generate(ours, prompt_ids[None], pixel_values, sizes, max_new_tokens=10,
                                   eos_ids=hf_model.generation_config.eos_token_id))[0].tolist()
  assert eot in mine, tok.decode(mine)
  mine = mine[:mine.index(eot) + 1]
  assert theirs == mine, (tok.decode(theirs), tok.decode(mine))
  assert tok.decode(mine[:-1]).strip() == REPLY


def test_original_export_keeps_every_source_field(flow):
  from transformers import AutoTokenizer
  with open(os.path.join(flow["original"], "config.json")) as f:
    source = json.load(f)
  with open(os.path.join(flow["release"], "config.json")) as f:
    release = json.load(f)
  for k, v in source.items():
    if k == "vocab_size":
      assert release[k] == v + 5  # <image> and the four agent tokens
    else:
      assert release[k] == v, k
  assert release["mm_vision_tower"] == "/home/models/tiny-clip"
  tok = AutoTokenizer.from_pretrained(flow["release"])
  assert len(tok) == release["vocab_size"] and tok.convert_tokens_to_ids("<image>") == release["image_token_index"]
  assert tok.chat_template == TEMPLATES["llava_llama_3"].jinja


def test_eval_defaults_to_the_recorded_template(flow, caplog):
  from configs import eval as eval_config
  from insightv_jax.data.model_files import apply_recorded_defaults
  cfg = eval_config.get_config()
  cfg.reasoning_model = f"params:{flow['export']}"
  with caplog.at_level(logging.INFO):
    apply_recorded_defaults(cfg, model="reasoning_model", template="template", prompts="prompts")
  assert cfg.template == "llava_llama_3" and cfg.prompts == "ours"
  assert "recorded in" in caplog.text
  cfg = eval_config.get_config()
  cfg.reasoning_model, cfg.template = f"params:{flow['export']}", "llama3"
  with caplog.at_level(logging.WARNING):
    apply_recorded_defaults(cfg, model="reasoning_model", template="template", prompts="prompts")
  assert cfg.template == "llama3" and "--config.template=llama3 overrides the template 'llava_llama_3'" in caplog.text
