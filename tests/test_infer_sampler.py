"""The KV-cache sampler: greedy output equals transformers' generate; sampling options and stops behave."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_reference import IMAGE_TOKEN, build_hf_model, random_image, tiny_hf_config
from test_model_parity import make_batch

from insightv_jax import infer, sharding
from insightv_jax.hf import load_llava_next
from insightv_jax.infer import generate, truncate_at_stop_strings


def test_generate_is_the_documented_package_api():
  """DESIGN.md: `insightv_jax.infer.generate(model, input_ids, pixel_values, image_sizes, attention_mask, *,
  max_new_tokens, ...)`; the package exports the sampler and the agents."""
  params = inspect.signature(infer.generate).parameters
  positional = [n for n, p in params.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
  assert positional == ["model", "input_ids", "pixel_values", "image_sizes", "attention_mask"]
  assert params["max_new_tokens"].kind is inspect.Parameter.KEYWORD_ONLY
  assert params["max_new_tokens"].default is inspect.Parameter.empty
  assert set(infer.__all__) == {"generate", "truncate_at_stop_strings", "bucket_length", "Agent", "GenerationConfig",
                                "Example", "reason", "two_agent", "direct", "chain_of_thought"}
  assert all(callable(getattr(infer, name)) for name in infer.__all__)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  hf = build_hf_model(tiny_hf_config("llama", "clip"), seed=11)
  path = tmp_path_factory.mktemp("gen")
  hf.save_pretrained(path)
  return hf, str(path)


@pytest.fixture(scope="module")
def pair(checkpoint):
  hf, path = checkpoint
  return hf, load_llava_next(path)


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_greedy_matches_transformers_generate(checkpoint, pair, scan):
  """Both cache layouts (a tuple of per-layer buffers, or one stacked buffer under scan) decode exactly."""
  hf, model = pair
  if scan:
    model = load_llava_next(checkpoint[1], scan_layers=True)
  images = [random_image(40, 90, 1), random_image(70, 30, 2), random_image(50, 50, 3)]
  ids, mask, pv, sizes = make_batch(model.cfg, images, seed=4, extra=(3, 9, 1))  # different prompt lengths
  n_new = 12
  with torch.no_grad():
    ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pixel_values=torch.tensor(pv),
                      image_sizes=torch.tensor(sizes), max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                      pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:].numpy()
  ours = np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, max_new_tokens=n_new))
  np.testing.assert_array_equal(ours, ref)
  assert IMAGE_TOKEN in ids


def test_stops_per_row_and_sampling_modes(pair):
  _, model = pair
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 200, (2, 8))
  greedy = np.asarray(generate(model, ids, max_new_tokens=10))
  stop = greedy[0, 3]
  stopped = np.asarray(generate(model, ids, max_new_tokens=10, eos_ids=np.asarray([[stop], [-1]]), pad_id=255))
  first = int(np.argmax(greedy[0] == stop))
  np.testing.assert_array_equal(stopped[0, :first + 1], greedy[0, :first + 1])
  assert (stopped[0, first + 1:] == 255).all() and (stopped[1] == greedy[1]).all()
  a = np.asarray(generate(model, ids, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=1))
  b = np.asarray(generate(model, ids, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=1))
  c = np.asarray(generate(model, ids, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=2))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  top1 = np.asarray(generate(model, ids, max_new_tokens=10, temperature=1.0, top_k=1, seed=3))
  np.testing.assert_array_equal(top1, greedy)  # top-k 1 is greedy
  with pytest.raises(ValueError, match="top_p"):
    generate(model, ids, max_new_tokens=2, top_p=0.0)
  assert truncate_at_stop_strings("abc</output>xyz", ["</output>", "\n\n"]) == "abc"


def test_sharded_generation_equals_single_device(checkpoint, pair):
  """Parameters sharded over fsdp=4 x tensor=2: the same greedy tokens as on one device."""
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (fake) devices")
  _, model = pair
  images = [random_image(60, 40, 5), random_image(30, 80, 6)]
  ids, mask, pv, sizes = make_batch(model.cfg, images, seed=7, extra=(5, 0))
  single = np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, max_new_tokens=8))
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  with sharding.use_mesh(mesh):
    sharded_model = load_llava_next(checkpoint[1], mesh=mesh)
    out = generate(sharded_model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, max_new_tokens=8)
  assert len(sharded_model.language_model.embed_tokens.embedding.get_value().sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(out), single)
