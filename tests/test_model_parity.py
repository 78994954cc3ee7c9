"""Golden parity: our Flax LLaVA-NeXT vs transformers' PyTorch LlavaNextForConditionalGeneration.

Given tiny random HF models (LLaMA/Qwen2 text, CLIP/SigLIP vision, several pinpoint sets), saved with
`save_pretrained`, when loaded through `load_llava_next` and fed the same left-padded batch of images
of different aspect ratios, then the logits on every real token match to 1e-4 (fp32), and our
preprocessing equals `LlavaNextImageProcessor`'s output.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_reference import IMAGE_TOKEN, build_hf_model, hf_processor, random_image, tiny_hf_config

from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
from insightv_jax.hf import load_llava_next
from insightv_jax.model import anyres

TOL = 1e-4


def make_batch(model_cfg, images, seed=0, extra=(3, 7)):
  """Left-padded ids with the right number of image tokens per row; returns numpy arrays."""
  proc = ImageProcessorConfig.for_model(model_cfg)
  pixel_values, sizes = stack_batch([preprocess(im, proc) for im in images])
  v = model_cfg.vision
  ntok = anyres.num_image_tokens(sizes[:, 0], sizes[:, 1], model_cfg.image_grid_pinpoints, v.image_size,
                                 v.patches_per_side, model_cfg.tokens_per_tile)
  rng = np.random.default_rng(seed)
  lens = [int(n) + 2 + extra[i % len(extra)] for i, n in enumerate(ntok)]
  t = max(lens) + 1
  ids = np.zeros((len(images), t), np.int64)
  mask = np.zeros_like(ids)
  for b, (n, length) in enumerate(zip(ntok, lens)):
    row = np.concatenate([rng.integers(0, 200, 2), np.full(n, IMAGE_TOKEN), rng.integers(0, 200, length - 2 - n)])
    ids[b, t - length:] = row
    mask[b, t - length:] = 1
  return ids, mask, pixel_values, sizes


def hf_logits(hf_model, ids, mask, pixel_values, sizes):
  positions = np.clip(mask.cumsum(-1) - 1, 0, None)  # what transformers' generate() uses for left padding
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(ids), pixel_values=torch.tensor(pixel_values),
                   image_sizes=torch.tensor(sizes), attention_mask=torch.tensor(mask),
                   position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


def our_logits(model, ids, mask, pixel_values, sizes):
  return np.asarray(model(jnp.asarray(ids, jnp.int32), jnp.asarray(pixel_values), jnp.asarray(sizes),
                          jnp.asarray(mask, jnp.int32)))


CASES = {
    "llama-clip": dict(text="llama", vision="clip"),
    "qwen2-siglip-3x3-tied": dict(text="qwen2", vision="siglip", tie=True,
                                  pinpoints=[[a * 28, b * 28] for a in (1, 2, 3) for b in (1, 2, 3)]),
    "llama-clip-multilayer": dict(text="llama", vision="clip", feature_layer=[-3, -1],
                                  pinpoints=[[28, 28], [28, 56], [56, 28], [56, 84]]),
}
IMAGES = [(40, 90), (70, 30), (33, 33), (200, 61)]  # wide, tall, square, very tall


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
  hf_cfg = tiny_hf_config(**CASES[request.param])
  hf_model = build_hf_model(hf_cfg)
  path = tmp_path_factory.mktemp(request.param)
  hf_model.save_pretrained(path)
  return request.param, hf_cfg, hf_model, str(path)


def test_logits_match_transformers(case):
  name, hf_cfg, hf_model, path = case
  model = load_llava_next(path, scan_layers=(name == "llama-clip"))
  images = [random_image(h, w, seed=i) for i, (h, w) in enumerate(IMAGES)]
  ids, mask, pixel_values, sizes = make_batch(model.cfg, images)

  hp = hf_processor(hf_cfg)(images, return_tensors="np")
  np.testing.assert_allclose(pixel_values, hp["pixel_values"], atol=1e-6, err_msg="preprocessing differs")
  np.testing.assert_array_equal(sizes, hp["image_sizes"])

  ref = hf_logits(hf_model, ids, mask, pixel_values, sizes)
  ours = our_logits(model, ids, mask, pixel_values, sizes)
  real = mask.astype(bool)
  assert ours.shape == ref.shape
  assert np.abs(ours[real] - ref[real]).max() < TOL, name


def test_text_only_and_scan_equivalence(case):
  name, _, hf_model, path = case
  if name != "llama-clip":
    pytest.skip("one text-only check is enough")
  rng = np.random.default_rng(1)
  ids = rng.integers(0, 200, (2, 256))  # 4 query blocks of 64: exercises the block-causal attention path
  mask = np.ones_like(ids)
  mask[0, :140] = 0  # left padding across a block boundary
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   position_ids=torch.tensor(np.clip(mask.cumsum(-1) - 1, 0, None))).logits.numpy()
  for scan in (False, True):
    model = load_llava_next(path, scan_layers=scan)
    ours = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    assert np.abs(ours[mask == 1] - ref[mask == 1]).max() < TOL


def test_best_resolution_matches_transformers():
  """Our exact-integer AnyRes choice agrees with transformers' float64 one on realistic sizes."""
  from transformers.image_processing_utils import select_best_resolution
  pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
  rng = np.random.default_rng(0)
  sizes = rng.integers(16, 4000, (3000, 2))
  ours = anyres.best_resolution(sizes[:, 0], sizes[:, 1], pinpoints)
  for (h, w), i in zip(sizes, ours):
    assert tuple(pinpoints[i]) == tuple(select_best_resolution((int(h), int(w)), pinpoints)), (h, w)
