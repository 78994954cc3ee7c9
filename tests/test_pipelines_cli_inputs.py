"""The command lines' input checks by kind (pipelines/cli/_inputs.py) that need no model: template and preset names,
a tokenizer against the chat template it is used with, a vision tower's config. Each failure names the flag.

The end-to-end rows (status 2, the last stderr line) are in test_pipelines_cli_faults.py; these check what each
kind accepts and that its cheap view of a tokenizer (the `tokenizers` library) is the job's (transformers).
"""

from __future__ import annotations

import json
import os

import ml_collections
import pytest

from insightv_jax.data.templates import IMAGE_PLACEHOLDER, TEMPLATES, rendered_special_tokens
from insightv_jax.data.tokenizer import load_tokenizer, train_bpe
from insightv_jax.utils.inputs import InputError
from pipelines.cli import _inputs

TEXTS = ["the cat sat on the mat", "how many bars are taller than the red one?", "step one: count the bars"] * 4
TOK, TPL, MODEL = "--config.tokenizer", "--config.data.template", "--config.model.init"


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
  """Tokenizer folders: made for llama3, for chatml, a llama3 one without <image> (as an original release's), and one
  whose tokenizer.json lacks <image> but whose tokenizer_config.json lists it (transformers adds it back)."""
  root = tmp_path_factory.mktemp("toks")
  out = {}
  for name in ("llama3", "chatml", "no_image", "config_lists_image"):
    out[name] = str(root / name)
    train_bpe(TEXTS, 300, "chatml" if name == "chatml" else "llama3").save_pretrained(out[name])
  for name in ("no_image", "config_lists_image"):
    path = os.path.join(out[name], "tokenizer.json")
    tok = json.load(open(path))
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != IMAGE_PLACEHOLDER]
    json.dump(tok, open(path, "w"))
  path = os.path.join(out["no_image"], "tokenizer_config.json")
  config = json.load(open(path))
  config["extra_special_tokens"].remove(IMAGE_PLACEHOLDER)
  json.dump(config, open(path, "w"))
  return out


def test_template_and_preset_names_are_checked_against_their_registries():
  _inputs.template("llava_llama_3", TPL)
  _inputs.template("", TPL)  # "": the one the model folder records
  with pytest.raises(InputError, match=r"^--config.data.template=llava_llama3: no such chat template \(did you mean "
                                       r"llava_llama_3\?\); the chat templates are chatml, llama3, llava_llama_3, "
                                       r"qwen_1_5, vicuna$"):
    _inputs.template("llava_llama3", TPL)
  _inputs.prompts("insightv", "--config.prompts")
  with pytest.raises(InputError, match=r"^--config.prompts=insight-v: .*did you mean insightv.*insightv, ours$"):
    _inputs.prompts("insight-v", "--config.prompts")
  with pytest.raises(InputError, match=r"^--config.prompts=zzz: no such prompt preset; the prompt presets are"):
    _inputs.prompts("zzz", "--config.prompts")


def test_a_tokenizer_passes_with_the_templates_it_was_made_for(toks):
  for name in ("llama3", "llava_llama_3", ""):  # "" with a random init: templates.DEFAULT_TEMPLATE (llama3)
    _inputs.chat_tokenizer(toks["llama3"], name, "random", TOK, TPL, MODEL)
  for name in ("chatml", "qwen_1_5"):
    _inputs.chat_tokenizer(toks["chatml"], name, "random", TOK, TPL, MODEL)


def test_a_template_whose_tokens_the_tokenizer_lacks_is_named(toks):
  with pytest.raises(InputError) as e:
    _inputs.chat_tokenizer(toks["llama3"], "chatml", "random", TOK, TPL, MODEL)
  msg = str(e.value)
  assert msg.startswith("--config.data.template=chatml: the tokenizer (--config.tokenizer=")
  assert "<|im_start|>, <|im_end|>" in msg and "'<|im_end|>' never generated as one token" in msg
  assert "templates this tokenizer holds: llama3, llava_llama_3" in msg
  with pytest.raises(InputError, match=r"--config.data.template=vicuna: .*no single token for <s>, </s>"):
    _inputs.chat_tokenizer(toks["chatml"], "vicuna", "random", TOK, TPL, MODEL)


def test_a_tokenizer_without_the_image_token_points_at_the_converted_folder(toks):
  with pytest.raises(InputError, match=r"^--config.tokenizer=.*no_image: the tokenizer has no <image> token .*"
                                       r"insightv-convert --to=params"):
    _inputs.chat_tokenizer(toks["no_image"], "llama3", "random", TOK, TPL, MODEL)


def test_the_template_a_model_folder_records_is_the_one_checked(toks, tmp_path):
  folder = tmp_path / "export"
  folder.mkdir()
  (folder / "insightv.json").write_text(json.dumps({"template": "chatml"}))
  _inputs.chat_tokenizer(toks["chatml"], "", f"params:{folder}", TOK, TPL, MODEL)
  with pytest.raises(InputError, match=r"^the template 'chatml' that --config.model.init=params:.*export records "
                                       r"\(.*insightv.json; --config.data.template is not given\): the tokenizer"):
    _inputs.chat_tokenizer(toks["llama3"], "", f"params:{folder}", TOK, TPL, MODEL)
  _inputs.chat_tokenizer(toks["llama3"], "llama3", f"params:{folder}", TOK, TPL, MODEL)  # the flag wins


def test_the_cheap_view_of_a_tokenizer_is_the_jobs(toks):
  """What the check reads (tokenizer.json through `tokenizers`) splits each token as transformers does."""
  tokens = {IMAGE_PLACEHOLDER, "<thoughts>", *(t for tpl in TEMPLATES.values() for t in rendered_special_tokens(tpl))}
  for folder in toks.values():
    cheap, job = _inputs._pieces(folder, TOK), load_tokenizer(folder)
    for t in sorted(tokens):
      assert cheap(t) == len(job(t, add_special_tokens=False)["input_ids"]), (folder, t)
  _inputs.chat_tokenizer(toks["config_lists_image"], "llama3", "random", TOK, TPL, MODEL)


def test_a_corrupt_tokenizer_json_is_named_at_the_flag(toks, tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
  with pytest.raises(InputError, match=r"^--config.tokenizer=.*bad: .*tokenizer.json cannot be loaded"):
    _inputs.chat_tokenizer(str(bad), "llama3", "random", TOK, TPL, MODEL)


def test_vision_config_must_be_a_clip_or_siglip_config(tmp_path):
  clip = {"model_type": "clip_vision_model", "hidden_size": 32, "image_size": 28, "patch_size": 14}
  (tmp_path / "tower").mkdir()
  (tmp_path / "tower" / "config.json").write_text(json.dumps(clip))
  _inputs.vision_config(str(tmp_path / "tower" / "config.json"), "--vision_config")
  _inputs.vision_config(str(tmp_path / "tower"), "--vision_config")  # the folder holding it
  whole = tmp_path / "siglip.json"
  whole.write_text(json.dumps({"model_type": "siglip", "vision_config": {"hidden_size": 32}}))
  _inputs.vision_config(str(whole), "--vision_config")
  own = tmp_path / "model.json"
  own.write_text(json.dumps({"model_type": "llava_llama", "mm_vision_tower": "/home/models/tower"}))
  with pytest.raises(InputError, match=r"^--vision_config=.*model.json: is not a CLIP / SigLIP vision config "
                                       r"\(.*model_type='llava_llama'.*\); that is a LLaVA model's own config.json"):
    _inputs.vision_config(str(own), "--vision_config")
  listed = tmp_path / "list.json"
  listed.write_text("[1, 2]")
  with pytest.raises(InputError, match=r"^--vision_config=.*list.json: is not a CLIP / SigLIP vision config"):
    _inputs.vision_config(str(listed), "--vision_config")


def test_check_runs_checks_across_fields():
  config = ml_collections.ConfigDict({"tokenizer": "/tok", "data": {"template": "chatml"}})
  seen = []
  _inputs.check(config, {"tokenizer": lambda v, f: seen.append((v, f)),
                         ("tokenizer", "data.template"): lambda *a: seen.append(a)})
  assert seen == [("/tok", "--config.tokenizer"),
                  ("/tok", "chatml", "--config.tokenizer", "--config.data.template")]
