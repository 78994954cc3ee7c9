"""Round trips and error paths of checkpoint I/O, and sharded == unsharded logits.

- HF -> ours -> HF (save_llava_next) -> transformers.from_pretrained gives the original logits.
- HF -> Orbax (insightv-convert) -> ours gives the same logits; Orbax -> HF loads in transformers.
- On an 8-device mesh (fsdp=4, tensor=2) the loaded model gives the single-device logits.
- A checkpoint with a missing, unknown or mis-shaped tensor raises an error naming it.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch
from hf_reference import build_hf_model, random_image, tiny_hf_config
from test_model_parity import hf_logits, make_batch, our_logits
from transformers import LlavaNextForConditionalGeneration

from insightv_jax import sharding
from insightv_jax.checkpoints import convert, load_model
from insightv_jax.checkpoints.safetensors_io import open_checkpoint, write_checkpoint
from insightv_jax.hf import CheckpointMismatchError, load_llava_next, save_llava_next


@pytest.fixture(scope="module")
def hf_ckpt(tmp_path_factory):
  hf_model = build_hf_model(tiny_hf_config("llama", "clip"), seed=3)
  path = tmp_path_factory.mktemp("hf")
  hf_model.save_pretrained(path)
  return hf_model, str(path)


@pytest.fixture(scope="module")
def batch(hf_ckpt):
  model = load_llava_next(hf_ckpt[1])
  images = [random_image(50, 120, 7), random_image(90, 45, 8), random_image(64, 64, 9), random_image(30, 70, 10)]
  return make_batch(model.cfg, images, seed=5)


def test_roundtrip_through_transformers(hf_ckpt, batch, tmp_path):
  hf_model, path = hf_ckpt
  model = load_llava_next(path)
  out = tmp_path / "export"
  save_llava_next(model, str(out), max_shard_bytes=60_000)  # force several shards + index.json
  assert (out / "model.safetensors.index.json").exists()
  reloaded = LlavaNextForConditionalGeneration.from_pretrained(out).eval()
  ref, again = hf_logits(hf_model, *batch), hf_logits(reloaded, *batch)
  real = batch[1].astype(bool)
  assert np.abs(ref[real] - again[real]).max() < 1e-5
  # every tensor is bit-identical after the trip
  for name, tensor in hf_model.state_dict().items():
    torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_orbax_conversion_roundtrip(hf_ckpt, batch, tmp_path):
  hf_model, path = hf_ckpt
  convert(path, str(tmp_path / "orbax"), to="params")
  convert(str(tmp_path / "orbax"), str(tmp_path / "hf_again"), to="hf")
  with pytest.raises(FileExistsError, match="--overwrite"):
    convert(path, str(tmp_path / "orbax"), to="params")
  ours = our_logits(load_model("params:" + str(tmp_path / "orbax")), *batch)
  ref = hf_logits(LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf_again").eval(), *batch)
  real = batch[1].astype(bool)
  assert np.abs(ours[real] - ref[real]).max() < 1e-4


def test_sharded_logits_equal_single_device(hf_ckpt, batch):
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (fake) devices")
  path = hf_ckpt[1]
  single = our_logits(load_llava_next(path), *batch)
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  with sharding.use_mesh(mesh):
    model = load_llava_next(path, mesh=mesh)
    q = model.language_model.layers.layers[0].self_attn.q_proj.kernel.get_value()
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (12, 24)
    sharded = our_logits(model, *batch)
  real = batch[1].astype(bool)
  assert np.abs(single[real] - sharded[real]).max() < 1e-5


def _rewrite(src: str, dst: str, edit):
  """Copies a checkpoint, passing its {name: array} through `edit`."""
  os.makedirs(dst)
  shutil.copy(os.path.join(src, "config.json"), dst)
  tensors = {n: np.array(f.get(n)) for n, f in open_checkpoint(src).items()}
  tensors = edit(tensors)
  write_checkpoint(dst, [(n, a.shape, a.dtype) for n, a in tensors.items()], tensors.__getitem__)


def test_checkpoint_errors_name_the_tensor(hf_ckpt, tmp_path):
  path = hf_ckpt[1]
  missing = "language_model.model.layers.1.mlp.up_proj.weight"
  _rewrite(path, str(tmp_path / "missing"), lambda t: {k: v for k, v in t.items() if k != missing})
  with pytest.raises(CheckpointMismatchError, match=r"missing.*layers\.1\.mlp\.up_proj"):
    load_llava_next(str(tmp_path / "missing"))

  _rewrite(path, str(tmp_path / "unknown"), lambda t: {**t, "language_model.model.extra.weight": np.ones(3)})
  with pytest.raises(CheckpointMismatchError, match="language_model.model.extra.weight"):
    load_llava_next(str(tmp_path / "unknown"))
  load_llava_next(str(tmp_path / "unknown"), strict=False)  # skipping is allowed when asked

  def bad_shape(t):
    t["multi_modal_projector.linear_1.weight"] = np.zeros((5, 5), np.float32)
    return t
  _rewrite(path, str(tmp_path / "shape"), bad_shape)
  with pytest.raises(CheckpointMismatchError, match=r"linear_1\.weight.*\(5, 5\)"):
    load_llava_next(str(tmp_path / "shape"))

  os.makedirs(tmp_path / "badcfg")
  with open(tmp_path / "badcfg" / "config.json", "w") as f:
    json.dump({"model_type": "llava_next", "vision_config": {"model_type": "resnet"}, "text_config": {
        "model_type": "llama", "hidden_size": 8, "num_attention_heads": 2}}, f)
  with pytest.raises(ValueError, match="vision_config.model_type='resnet'"):
    load_llava_next(str(tmp_path / "badcfg"))
