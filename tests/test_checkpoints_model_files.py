"""The files that make a model folder usable on its own (data/model_files.py), and its card (checkpoints/model_card.py).

For every chat template (ours and LLaVA-NeXT's conv modes), the tokenizer written into a folder and loaded back with
`AutoTokenizer` renders a conversation to the ids and assistant mask of `encode_chat`; `AutoProcessor` loads an "hf"
folder with the same template; generation_config.json stops at the tokenizer's eos and the template's end of turn.
"""

from __future__ import annotations

import json
import logging

import pytest
from test_data_templates import CORPUS, MESSAGES  # a system turn, an image, two assistant turns

from insightv_jax.checkpoints import model_card
from insightv_jax.data import model_files, templates
from insightv_jax.data.tokenizer import train_bpe
from insightv_jax.utils.inputs import InputError


@pytest.mark.parametrize("name", sorted(templates.TEMPLATES))
def test_written_tokenizer_renders_like_encode_chat(name, tiny_cfg, tmp_path):
  from transformers import AutoProcessor, AutoTokenizer
  tok = train_bpe(CORPUS, 320, name)
  tok.chat_template = "{{ 'not the trained template' }}"  # what the tokenizer came with is replaced
  model_files.write(str(tmp_path), tok, tiny_cfg, layout="hf", template=name, prompts="insightv")
  loaded = AutoTokenizer.from_pretrained(tmp_path)
  tpl = templates.TEMPLATES[name]
  image_id = loaded.convert_tokens_to_ids(templates.IMAGE_PLACEHOLDER)
  for msgs in (MESSAGES, MESSAGES[1:3]):
    ids, mask = templates.encode_chat(loaded, tpl, msgs, image_token_id=image_id, image_token_counts=[1])
    ref = loaded.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ids.tolist() == list(ref["input_ids"]) and mask.tolist() == list(ref["assistant_masks"]), name
  proc = AutoProcessor.from_pretrained(tmp_path)
  assert type(proc).__name__ == "LlavaNextProcessor" and proc.patch_size == tiny_cfg.vision.patch_size
  assert proc.apply_chat_template(MESSAGES[1:2], add_generation_prompt=True, tokenize=False) == tpl.render(
      MESSAGES[1:2], add_generation_prompt=True)[0]
  with open(tmp_path / "generation_config.json") as f:
    gen = json.load(f)
  stop = loaded.convert_tokens_to_ids(tpl.stop)
  assert gen["eos_token_id"] == (stop if stop == loaded.eos_token_id else [loaded.eos_token_id, stop])
  assert model_card.read(str(tmp_path)) == model_card.ModelCard(template=name, prompts="insightv")


def test_model_card_resolves_flag_record_and_fallback(tmp_path, caplog):
  card = model_card.update(str(tmp_path), template="qwen_1_5")
  assert model_card.for_spec(f"params:{tmp_path}") == card == model_card.for_spec(str(tmp_path))
  assert model_card.for_spec("random") == model_card.ModelCard()
  with caplog.at_level(logging.INFO):
    assert model_card.resolve("template", "", card, fallback="llama3", flag="--t") == "qwen_1_5"
    assert model_card.resolve("prompts", "", card, fallback="ours", flag="--p") == "ours"
    assert model_card.resolve("template", "chatml", card, fallback="llama3", flag="--t") == "chatml"
  assert "--t=chatml overrides the template 'qwen_1_5'" in caplog.text
  (tmp_path / model_card.FILE).write_text("{not json")
  with pytest.raises(InputError, match="insightv.json: cannot be read as JSON"):
    model_card.read(str(tmp_path))
