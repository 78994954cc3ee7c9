"""The original LLaVA-NeXT / Insight-V layout ("llava:"): names, config mapping, parity, round trips, errors.

Given tiny random transformers LLaVA-NeXT models (LLaMA + CLIP, Qwen2 + SigLIP) rewritten into the original
layout the way LLaVA-NeXT saves them (its module names, a flat text config with `mm_*` fields, pinpoints as
(width, height) pairs or a "(AxB),...,(CxD)" string, a SigLIP tower without its deleted last layer), when loaded
with `load_llava_next(..., vision_config=...)`, then the logits match transformers' (fp32, 1e-4); saving back in
the original layout gives byte-equal tensors and an equivalent config.json; conversion to llava-hf gives the
same logits in transformers, and `insightv-convert` adds `<image>` to an Insight-V tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import model_preset
from flax import nnx
from hf_reference import IMAGE_TOKEN, TILE, VOCAB, build_hf_model, hf_processor, random_image, tiny_hf_config
from llava_original_builders import base_config, think_tokenizer, vision_config_arg, write_original
from test_model_parity import TOL, hf_logits, make_batch, our_logits
from transformers import LlavaNextForConditionalGeneration

from insightv_jax.checkpoints import convert, load_model, parse_spec, read_config
from insightv_jax.checkpoints.llava_original import (
  NAMING,
  VISION_TOWER_PRESETS,
  config_from_original,
  config_to_original,
  expand_pinpoints,
)
from insightv_jax.checkpoints.safetensors_io import open_checkpoint, write_checkpoint
from insightv_jax.data.prompts import AGENT_TOKENS
from insightv_jax.hf import CheckpointMismatchError, load_llava_next, save_llava_original
from insightv_jax.model.config import ConfigError, LlavaConfig, VisionConfig

# "(1x1),...,(3x3)" over 28-px tiles: train.py's (w, h) pairs (i outer, j inner), as our [h, w].
EXPANDED_3X3 = [[28, 28], [56, 28], [84, 28], [28, 56], [56, 56], [84, 56], [28, 84], [56, 84], [84, 84]]
HW_5 = [[28, 56], [56, 28], [56, 56], [28, 84], [84, 28]]

CASES = {
    # the base model's settings: select layer -2; the pinpoint string of Insight-V's scripts; a tower dict
    "llama-clip-select-2": dict(text="llama", vision="clip", select=-2, pinpoints="(1x1),...,(3x3)",
                                hf_pinpoints=EXPANDED_3X3, vision_config="dict"),
    # Insight-V's reasoning agent: select layer -1; pinpoints as (w, h) pairs; the tower's config.json path
    "llama-clip-select-1": dict(text="llama", vision="clip", select=-1, pinpoints=[[w, h] for h, w in HW_5],
                                hf_pinpoints=HW_5, vision_config="path"),
    # SigLIP: the original drops the tower's last layer and takes the last hidden state whatever select says,
    # which is HF's vision_feature_layer=-2 on the whole tower; a whole SiglipConfig with a nested vision_config
    "qwen2-siglip": dict(text="qwen2", vision="siglip", select=-2, pinpoints="(1x1),...,(3x3)",
                         hf_pinpoints=EXPANDED_3X3, vision_config="nested", tie=True),
}
IMAGES = [(40, 90), (70, 30), (33, 33), (200, 61)]


_BUILT: dict[str, tuple] = {}


def _build(name: str, tmp_path_factory) -> tuple:
  """(name, hf_cfg, hf_model, original folder, vision_config argument), built once per module."""
  if name not in _BUILT:
    c = CASES[name]
    hf_cfg = tiny_hf_config(c["text"], c["vision"], pinpoints=c["hf_pinpoints"], tie=c.get("tie", False),
                            feature_layer=c["select"])
    hf_model = build_hf_model(hf_cfg, seed=1)
    folder = tmp_path_factory.mktemp(name) / "original"
    write_original(hf_model, hf_cfg, c, folder)
    _BUILT[name] = name, hf_cfg, hf_model, str(folder), vision_config_arg(hf_cfg, c["vision_config"], folder)
  return _BUILT[name]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
  return _build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def base_case(tmp_path_factory):
  """The base model's settings (select layer -2, pinpoint string)."""
  return _build("llama-clip-select-2", tmp_path_factory)


@pytest.fixture(scope="module")
def agent_case(tmp_path_factory):
  """Insight-V's reasoning agent's settings (select layer -1), its tower given as a config.json path."""
  return _build("llama-clip-select-1", tmp_path_factory)


@pytest.fixture(scope="module")
def batch_images():
  return [random_image(h, w, seed=i) for i, (h, w) in enumerate(IMAGES)]


def _sentinel_ids(ids, model_cfg):
  """The reference batch uses transformers' image token; ours uses the model's own id."""
  return np.where(ids == IMAGE_TOKEN, model_cfg.image_token_index, ids)


# ------------------------------------------------------------------------------------------------ parity

def test_logits_match_transformers(case, batch_images):
  name, hf_cfg, hf_model, folder, vision_config = case
  assert parse_spec(folder)[0].name == "llava"  # detected from config.json's model_type
  model = load_llava_next(folder, vision_config=vision_config, scan_layers=(name == "llama-clip-select-1"))
  cfg = model.cfg
  assert cfg.image_token_index == VOCAB  # no <image> in the original: one past the vocabulary (documented)
  assert [list(p) for p in cfg.image_grid_pinpoints] == hf_cfg.image_grid_pinpoints
  if CASES[name]["vision"] == "siglip":
    assert cfg.vision.num_hidden_layers == hf_cfg.vision_config.num_hidden_layers - 1
    assert cfg.vision_feature_select_strategy == "full"

  ids, mask, pixel_values, sizes = make_batch(cfg, batch_images)
  hp = hf_processor(hf_cfg)(batch_images, return_tensors="np")
  np.testing.assert_allclose(pixel_values, hp["pixel_values"], atol=1e-6, err_msg="preprocessing differs")
  ref = hf_logits(hf_model, ids, mask, pixel_values, sizes)
  ours = our_logits(model, _sentinel_ids(ids, cfg), mask, pixel_values, sizes)
  real = mask.astype(bool)
  assert np.isfinite(ours[real]).all()
  assert np.abs(ours[real] - ref[real]).max() < TOL, name


# ------------------------------------------------------------------------------------------------ round trips

def test_original_round_trip_is_bit_identical(case, tmp_path):
  name, hf_cfg, _, folder, vision_config = case
  out = str(tmp_path / "again")
  convert(f"llava:{folder}", out, to="llava", vision_config=vision_config)

  src, dst = open_checkpoint(folder), open_checkpoint(out)
  assert sorted(dst) == sorted(src)
  for n, f in src.items():
    a, b = f.get(n), dst[n].get(n)
    assert a.dtype == b.dtype and a.shape == b.shape, n
    assert a.tobytes() == b.tobytes(), n

  with open(os.path.join(folder, "config.json")) as f:
    before = json.load(f)
  with open(os.path.join(out, "config.json")) as f:
    after = json.load(f)
  assert set(after) - set(before) <= {"vision_config", "head_dim"}  # the tower (no preset) is now described
  for k, v in before.items():
    want = [[w, h] for h, w in EXPANDED_3X3] if k == "image_grid_pinpoints" and isinstance(v, str) else v
    assert after[k] == want, k
  assert read_config(out) == read_config(f"llava:{folder}", vision_config=vision_config)  # no vision_config needed


def test_hf_to_original_and_back(tmp_path):
  """Any model our layouts hold (here a saved llava-hf one) writes an original checkpoint that reads back."""
  hf_cfg = tiny_hf_config("llama", "clip", feature_layer=-1)
  path = tmp_path / "hf"
  build_hf_model(hf_cfg, seed=4).save_pretrained(path)
  model = load_llava_next(str(path))
  with pytest.raises(ConfigError, match="mm_vision_tower: the model's vision tower is no preset and nothing names it"):
    save_llava_original(model, str(tmp_path / "unnamed"))  # a model_type names no tower LLaVA-NeXT could load
  save_llava_original(model, str(tmp_path / "orig"), vision_tower="/home/models/tiny-clip")
  with open(tmp_path / "orig" / "config.json") as f:
    d = json.load(f)
  assert d["model_type"] == "llava_llama" and d["image_token_index"] == IMAGE_TOKEN  # 250 != vocab: kept
  assert d["mm_vision_tower"] == "/home/models/tiny-clip"
  assert d["image_grid_pinpoints"] == [[w, h] for h, w in hf_cfg.image_grid_pinpoints]
  again = load_llava_next(str(tmp_path / "orig"))
  assert again.cfg == model.cfg
  want, got = _params(model), _params(again)
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _params(model):
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_original_to_hf_runs_in_transformers(base_case, batch_images, tmp_path):
  """--to=hf grows one mean-initialised row for <image> (id = the old vocabulary size); transformers agrees."""
  _, hf_cfg, hf_model, folder, vision_config = base_case
  convert(folder, str(tmp_path / "hf"), to="hf", vision_config=vision_config)
  converted = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
  assert converted.config.image_token_index == VOCAB and converted.config.text_config.vocab_size == VOCAB + 1
  emb = converted.get_input_embeddings().weight.detach().numpy()
  np.testing.assert_allclose(emb[VOCAB], emb[:VOCAB].mean(0), atol=1e-6)

  cfg = LlavaConfig.from_hf(converted.config.to_dict())
  ids, mask, pixel_values, sizes = make_batch(cfg, batch_images)
  ref = hf_logits(hf_model, ids, mask, pixel_values, sizes)
  got = hf_logits(converted, _sentinel_ids(ids, cfg), mask, pixel_values, sizes)
  real = mask.astype(bool)
  assert np.abs(got[real][:, :VOCAB] - ref[real]).max() < TOL


def test_convert_cli_adds_image_token(agent_case, tmp_path, cli):
  """insightv-convert --to=orbax (deprecated spelling of --to=params) on an Insight-V folder: <image> appended after
  the think tokens, model grown."""
  _, _, _, folder, vision_config = agent_case
  src = tmp_path / "insight-v"
  shutil.copytree(folder, src)
  tok = think_tokenizer(VOCAB - len(AGENT_TOKENS))
  tok.save_pretrained(src)
  think_ids = [tok.convert_tokens_to_ids(t) for t in AGENT_TOKENS]
  out = tmp_path / "orbax"
  done = cli.run("pipelines.cli.convert", ["--to=orbax", f"--input=llava:{src}", f"--output={out}",
                                           f"--vision_config={vision_config}"], workdir=tmp_path / "logs")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "--to=orbax is deprecated and goes in the next release: write --to=params" in done.stderr  # still works

  from transformers import AutoTokenizer
  converted = AutoTokenizer.from_pretrained(out)
  assert converted.convert_tokens_to_ids("<image>") == VOCAB
  assert [converted.convert_tokens_to_ids(t) for t in AGENT_TOKENS] == think_ids
  assert converted.tokenize("w3 <image> <thoughts>") == ["w3", "<image>", "<thoughts>"]

  model = load_model(f"params:{out}")
  original = load_llava_next(folder, vision_config=vision_config)
  assert model.cfg.image_token_index == VOCAB and model.cfg.text.vocab_size == VOCAB + 1
  emb = np.asarray(model.language_model.embed_tokens.embedding.get_value())
  old = np.asarray(original.language_model.embed_tokens.embedding.get_value())
  np.testing.assert_array_equal(emb[:VOCAB], old)
  np.testing.assert_allclose(emb[VOCAB], old.mean(0), atol=1e-6)


# ------------------------------------------------------------------------------------------------ names

# transformers' convert_llava_next_weights_to_hf.py (KEYS_TO_MODIFY_MAPPING, applied in order by substring).
CONVERTER_KEYS = {
    "model.vision_tower.": "",
    "model.mm_projector": "multi_modal_projector",
    "model": "model.model",
    "vision_model.model": "vision_model",
    "lm_head": "language_model.lm_head",
    "model.model": "language_model.model",
    "multi_modal_projector.0": "multi_modal_projector.linear_1",
    "multi_modal_projector.2": "multi_modal_projector.linear_2",
    "language_model.model.image_newline": "image_newline",
}


def test_names_agree_with_transformers_converter(case):
  from insightv_jax.checkpoints.hf_names import canonical_name
  names = list(open_checkpoint(case[3]))
  assert any(n.startswith("model.mm_projector.") for n in names) and "model.image_newline" in names
  for name in names:
    key = name
    for old, new in CONVERTER_KEYS.items():
      if old in key:
        key = key.replace(old, new)
    assert NAMING.to_canonical(name) == canonical_name(key), name
    assert NAMING.to_disk(NAMING.to_canonical(name)) == name


def test_buffers_skipped_unknown_tensors_named_in_original_spelling(base_case, tmp_path):
  _, _, _, folder, vision_config = base_case

  def rewrite(dst, edit):
    os.makedirs(dst)
    shutil.copy(os.path.join(folder, "config.json"), dst)
    tensors = edit({n: np.array(f.get(n)) for n, f in open_checkpoint(folder).items()})
    write_checkpoint(str(dst), [(n, a.shape, a.dtype) for n, a in tensors.items()], tensors.__getitem__)

  buffers = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": np.ones(6, np.float32) for i in range(2)}
  buffers["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = np.arange(5)[None]
  rewrite(tmp_path / "buffers", lambda t: {**t, **buffers})
  load_llava_next(str(tmp_path / "buffers"), vision_config=vision_config)  # buffers older checkpoints hold

  rewrite(tmp_path / "unknown", lambda t: {**t, "model.mm_projector.4.weight": np.ones((2, 2), np.float32)})
  with pytest.raises(CheckpointMismatchError, match=r"model\.mm_projector\.4\.weight"):
    load_llava_next(str(tmp_path / "unknown"), vision_config=vision_config)

  missing = "model.layers.1.mlp.up_proj.weight"
  rewrite(tmp_path / "missing", lambda t: {k: v for k, v in t.items() if k != missing})
  with pytest.raises(CheckpointMismatchError, match=re.escape(missing)):
    load_llava_next(str(tmp_path / "missing"), vision_config=vision_config)


# ------------------------------------------------------------------------------------------------ config


def test_presets_resolve_for_the_real_towers():
  clip = VisionConfig(**VISION_TOWER_PRESETS["openai/clip-vit-large-patch14-336"])
  # the same numbers as the repo's llava-hf presets (configs/models.py)
  assert dataclasses.asdict(clip) == model_preset("llava-next-llama3-8b")["vision_config"]
  assert VISION_TOWER_PRESETS["google/siglip-so400m-patch14-384"] == model_preset("llava-next-qwen2-7b")[
      "vision_config"]

  base = config_from_original(base_config())
  assert base.vision == clip and base.tokens_per_tile == 576 and base.feature_layers == (23,)
  assert base.image_grid_pinpoints == ((672, 336), (336, 672), (672, 672), (336, 1008), (1008, 336))  # (w, h) -> [h, w]
  assert base.image_token_index == 128256  # where llava-hf's converted model has <image> too
  hf_8b = LlavaConfig.from_hf(model_preset("llava-next-llama3-8b"))
  assert base.text == dataclasses.replace(hf_8b.text, vocab_size=128256)  # llava-hf pads to 128320

  # Insight-V's reasoning agent: a local copy of the CLIP tower, select layer -1, the (1x1)..(3x3) string
  agent = config_from_original(base_config(mm_vision_tower="/home/models/clip-vit-large-patch14-336",
                                           mm_vision_select_layer=-1, image_grid_pinpoints="(1x1),...,(3x3)"))
  assert agent.vision == clip and agent.feature_layers == (24,)
  assert sorted(agent.image_grid_pinpoints) == sorted((a * 336, b * 336) for a in (1, 2, 3) for b in (1, 2, 3))

  qwen = config_from_original(base_config(
      model_type="llava_qwen", vocab_size=152064, mm_vision_tower="google/siglip-so400m-patch14-384",
      mm_hidden_size=1152, image_grid_pinpoints="(1x1),...,(2x2)"))
  assert qwen.vision.model_type == "siglip_vision_model" and qwen.vision.num_hidden_layers == 26  # last deleted
  assert qwen.feature_layers == (26,) and qwen.tokens_per_tile == 729 and qwen.text.qkv_bias

  for cfg in (base, agent, qwen):  # written back: the preset's name, no vision_config, the same model
    d = config_to_original(cfg)
    assert d["mm_vision_tower"] in VISION_TOWER_PRESETS and "vision_config" not in d
    assert config_from_original(d) == cfg

  with pytest.raises(ConfigError, match=r"mm_vision_tower='org/other-tower'.*vision_config="):
    config_from_original(base_config(mm_vision_tower="org/other-tower"))


def test_pinpoint_string_expands_like_train_py():
  def train_py(grid_pinpoints: str, patch_size: int):  # llava/train/train.py, the "x" in the string branch
    matches = re.findall(r"\((\d+)x(\d+)\)", grid_pinpoints)
    range_start = tuple(map(int, matches[0]))
    range_end = tuple(map(int, matches[-1]))
    grid_pinpoints = [(i, j) for i in range(range_start[0], range_end[0] + 1)
                      for j in range(range_start[1], range_end[1] + 1)]
    return [[dim * patch_size for dim in pair] for pair in grid_pinpoints]

  for s, tile in (("(1x1),...,(3x3)", 336), ("(1x1),...,(6x6)", 384), ("(2x1),...,(4x3)", 336)):
    assert expand_pinpoints(s, tile) == [[h, w] for w, h in train_py(s, tile)]  # LLaVA's (w, h) -> our [h, w]
  assert expand_pinpoints("(1x1),...,(2x2)", 336) == [[336, 336], [672, 336], [336, 672], [672, 672]]
  assert expand_pinpoints("(1x1),...,(3x3)", TILE) == EXPANDED_3X3
  assert expand_pinpoints("[(336, 672), (672, 336)]", 336) == [[672, 336], [336, 672]]  # a literal, as mm_utils


@pytest.mark.parametrize("field,value", [("mm_projector_type", "linear"), ("mm_patch_merge_type", "flat"),
                                         ("image_aspect_ratio", "anyres_max_9"),
                                         ("mm_vision_select_feature", "slicefour_patch")])
def test_unsupported_config_fields_are_named_errors(base_case, tmp_path, field, value):
  _, _, _, folder, vision_config = base_case
  bad = tmp_path / "bad"
  shutil.copytree(folder, bad)
  with open(bad / "config.json") as f:
    d = json.load(f)
  d[field] = value
  with open(bad / "config.json", "w") as f:
    json.dump(d, f)
  with pytest.raises(ConfigError, match=f"{field}={value!r}"):
    load_llava_next(str(bad), vision_config=vision_config)


def test_hf_and_llava_specs_accept_both_layouts(agent_case, tmp_path, caplog):
  """model.init=hf:<folder> or llava:<folder> (and insightv-convert --input) read either safetensors layout, for one
  more release: with a deprecation warning naming the right prefix."""
  _, _, _, folder, vision_config = agent_case
  path = tmp_path / "hf"
  build_hf_model(tiny_hf_config("llama", "clip")).save_pretrained(path)
  with caplog.at_level("WARNING"):
    assert parse_spec(str(path))[0].name == "hf" and parse_spec(f"llava:{path}")[0].name == "hf"
    assert parse_spec(folder)[0].name == "llava" and parse_spec(f"hf:{folder}")[0].name == "llava"
  assert f"read as 'llava:{folder}'. Deprecated: 'hf:' will stop reading" in caplog.text
  assert f"read as 'hf:{path}'. Deprecated: 'llava:' will stop reading" in caplog.text
  assert read_config(f"hf:{folder}", vision_config=vision_config) == read_config(folder, vision_config=vision_config)
  assert read_config(f"llava:{path}") == read_config(f"hf:{path}")
  with pytest.raises(ValueError, match="vision_config= is for"):
    load_llava_next(str(path), vision_config={"model_type": "clip_vision_model"})
