"""Image geometry has one definition (`anyres.layout`, numpy on the host, jax.numpy in the model), and an example
whose image tokens do not match its images' features is an error naming it, raised where the batch is built."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from train_data import loader_config

from insightv_jax.data import images, loader
from insightv_jax.data.tokenizer import fit_model_config, train_bpe
from insightv_jax.model import anyres
from insightv_jax.utils.inputs import InputError

CORPUS = ["What colour is the cat? The cat is black. And the dog? Brown, with white paws. Count the shapes."] * 20


def test_host_and_device_layouts_are_one_function(tiny_cfg):
  """The image processor's token count, its tile grid (what `preprocess` cuts), and the model's jitted layout come
  from the same `anyres.layout`."""
  proc = images.ImageProcessorConfig.for_model(tiny_cfg)
  sizes = np.array([[56, 48], [20, 90], [90, 20], [33, 33], [400, 7]], np.int32)
  host = anyres.layout(sizes[:, 0], sizes[:, 1], proc.pinpoints, proc.tile, proc.patches_per_side,
                       proc.tokens_per_tile)
  device = jax.jit(lambda s: anyres.layout(s[:, 0], s[:, 1], proc.pinpoints, proc.tile, proc.patches_per_side,
                                           proc.tokens_per_tile, xp=jnp))(jnp.asarray(sizes))
  for name, h, d in zip(anyres.Layout._fields, host, device):
    np.testing.assert_array_equal(h, d, err_msg=name)
  for (h, w), n, rows, cols in zip(sizes, host.num_tokens, host.grid_rows, host.grid_cols):
    assert proc.num_image_tokens(int(h), int(w)) == n
    tiles, _ = images.preprocess(Image.new("RGB", (int(w), int(h))), proc)
    assert len(tiles) == 1 + rows * cols  # the base tile and the grid the device derives from (h, w)


def test_check_image_tokens_names_the_example():
  images.check_image_tokens(np.array([1, 9, 9, 9, 2]), [3], 9, "f.json[0] (id='a')")
  with pytest.raises(InputError, match=r"f.json\[0\] \(id='a'\): 2 image tokens in the text but its 1 image\(s\) "
                                       r"give 3 features"):
    images.check_image_tokens(np.array([1, 9, 9, 2]), [3], 9, "f.json[0] (id='a')")


def test_an_image_cut_by_truncation_is_named_not_clipped(tmp_path, tiny_cfg):
  """A conversation whose second image sits in a later turn, truncated to max_len inside that image: before, the
  model filled the cut row's image tokens and shifted every later row's images (embed clipped the indices);
  now the loader rejects the record, naming it (skipped and counted, or raised with strict=True)."""
  os.makedirs(tmp_path / "imgs")
  rng = np.random.default_rng(0)
  for name in ("a", "b"):
    Image.fromarray(rng.integers(0, 255, (56, 48, 3), np.uint8)).save(tmp_path / "imgs" / f"{name}.png")
  tok = train_bpe(CORPUS, 320, "llama3")
  cfg = fit_model_config(tiny_cfg, tok)
  rec = {"id": "two-images", "image": ["imgs/a.png", "imgs/b.png"], "conversations": [
      {"from": "human", "value": "<image>\nWhat colour is the cat?"}, {"from": "gpt", "value": "The cat is black."},
      {"from": "human", "value": "<image>\nAnd the dog?"}, {"from": "gpt", "value": "Brown, with white paws."}]}
  raw = json.dumps(rec).encode()

  def encoder(max_len, **kw):
    c = loader_config(max_len=max_len, batch_size=1, image_root=str(tmp_path), template="llama3",
                            format="llava", images_per_row=2, **kw)
    return loader.Encoder(c, cfg, tok, dpo=False)

  full = encoder(4096).encode("talk.json[0]", raw)
  ids, _ = full["sft"]
  at = np.flatnonzero(ids == cfg.image_token_index)
  counts = [int(images.ImageProcessorConfig.for_model(cfg).num_image_tokens(h, w)) for h, w in full["sizes"]]
  assert len(at) == sum(counts) and len(counts) == 2
  cut = int(at[counts[0]]) + 2  # two tokens into the second image
  with pytest.raises(images.ImageTokenMismatch, match=r"talk.json\[0\] \(id='two-images'\): "
                                                      rf"{counts[0] + 2} image tokens in the text"):
    encoder(cut).encode("talk.json[0]", raw)
  skipped = encoder(cut)(("talk.json[0]", raw))
  assert isinstance(skipped, loader.Skipped) and "id='two-images'" in skipped.reason
  with pytest.raises(loader.BadRecord, match="two-images"):
    encoder(cut, strict=True)(("talk.json[0]", raw))
