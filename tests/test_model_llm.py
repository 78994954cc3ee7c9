"""The decoder's one mask mechanism: segment ids, query slots and positions.

Given rows of segment ids (one example, packed examples, right and left padding, a KV-cache decode step),
when `attention_mask` and `segment_positions` build the mask and the RoPE positions, then they equal the
hand-written arrays below; and given an example packed into a row with another one (or left-padded, as the
sampler does), when the tiny model runs, then its logits equal those of the example run alone.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from insightv_jax.model import anyres
from insightv_jax.model.llm import attention_mask, segment_positions

TOL = 1e-5


def mask_of(segments, slots=None, kv_segments=None):
  """attention_mask for one row of query segments (slots 0.. unless given) against kv_segments (default: itself)."""
  q = jnp.asarray([segments], jnp.int32)
  slot = jnp.arange(q.shape[1])[None] if slots is None else jnp.asarray([slots])
  kv = q if kv_segments is None else jnp.asarray([kv_segments], jnp.int32)
  return np.asarray(attention_mask(q, slot, kv))[0].astype(int)


# ------------------------------------------------------------------------------------------ attention_mask


def test_one_example_is_causal():
  np.testing.assert_array_equal(mask_of([1, 1, 1, 1]), [[1, 0, 0, 0],
                                                        [1, 1, 0, 0],
                                                        [1, 1, 1, 0],
                                                        [1, 1, 1, 1]])


def test_packed_examples_do_not_see_each_other_and_padding_sees_only_padding():
  """Two examples and a pad in one row: block-diagonal causal; the pad row is not empty (it sees itself)."""
  np.testing.assert_array_equal(mask_of([1, 1, 2, 2, 2, 0]), [[1, 0, 0, 0, 0, 0],
                                                              [1, 1, 0, 0, 0, 0],
                                                              [0, 0, 1, 0, 0, 0],
                                                              [0, 0, 1, 1, 0, 0],
                                                              [0, 0, 1, 1, 1, 0],
                                                              [0, 0, 0, 0, 0, 1]])


def test_left_padded_prompt_never_attends_to_its_padding():
  """The sampler's prefill: attention_mask [0 0 1 1 1] is the segment row; real tokens see real tokens only."""
  np.testing.assert_array_equal(mask_of([0, 0, 1, 1, 1]), [[1, 0, 0, 0, 0],
                                                           [1, 1, 0, 0, 0],
                                                           [0, 0, 1, 0, 0],
                                                           [0, 0, 1, 1, 0],
                                                           [0, 0, 1, 1, 1]])


def test_decode_step_sees_the_prompt_and_earlier_tokens_but_no_padding_or_empty_slots():
  """A cache of 8 slots: two left-padded prompts of 5 slots, one generated token each, now decoding at slot 6.

  The sampler writes the new token's segment 1 at its slot before building the mask; slot 7 is still empty (0).
  """
  kv = jnp.asarray([[0, 0, 1, 1, 1, 1, 1, 0],
                    [1, 1, 1, 1, 1, 1, 1, 0]], jnp.int32)
  got = attention_mask(jnp.ones((2, 1), jnp.int32), jnp.full((2, 1), 6), kv)
  np.testing.assert_array_equal(np.asarray(got).astype(int), [[[0, 0, 1, 1, 1, 1, 1, 0]],
                                                              [[1, 1, 1, 1, 1, 1, 1, 0]]])


def test_a_chunk_written_into_the_cache_sees_earlier_slots_of_its_segment():
  """Queries at slots 3, 4 (a prefill chunk after 3 cached tokens) see slots <= their own, not the future."""
  np.testing.assert_array_equal(mask_of([1, 1], slots=[3, 4], kv_segments=[1, 1, 1, 1, 1, 0]),
                                [[1, 1, 1, 1, 0, 0],
                                 [1, 1, 1, 1, 1, 0]])


# ------------------------------------------------------------------------------------------ segment_positions


@pytest.mark.parametrize("segments, positions", [
    ([1, 1, 1, 1], [0, 1, 2, 3]),  # one example
    ([0, 0, 1, 1, 1], [0, 0, 0, 1, 2]),  # left padding does not shift the prompt's positions
    ([1, 1, 2, 2, 0], [0, 1, 0, 1, 0]),  # packed examples restart at 0; padding is 0
    ([1, 1, 1, 2, 2, 2, 2, 3, 0, 0], [0, 1, 2, 0, 1, 2, 3, 0, 0, 0]),
], ids=["one", "left-padded", "packed", "three-packed-and-right-padded"])
def test_positions_restart_at_each_segment(segments, positions):
  got = segment_positions(jnp.asarray([segments], jnp.int32))
  np.testing.assert_array_equal(np.asarray(got), [positions])


def test_positions_are_per_row():
  segments = jnp.asarray([[0, 0, 1, 1, 1],
                          [1, 1, 2, 2, 0]], jnp.int32)
  np.testing.assert_array_equal(np.asarray(segment_positions(segments)), [[0, 0, 0, 1, 2],
                                                                          [0, 1, 0, 1, 0]])


# ------------------------------------------------------------------------------------------ end to end


def _ids(rng, n):
  return rng.integers(1, 200, n).astype(np.int32)  # below the image token (250)


@nnx.jit
def _logits(model, ids, segment_ids, pixel_values=None, image_sizes=None):
  """Logits [b, t, v]; positions default to segment_positions(segment_ids), as in training and the sampler."""
  return model(ids, pixel_values, image_sizes, segment_ids=segment_ids)


def _packed(model, examples, pad, **images):
  """Logits [t, v] of one row holding the examples as segments 1, 2, ... followed by `pad` padding tokens."""
  row = np.concatenate(list(examples) + [np.zeros(pad, np.int32)])
  seg = np.concatenate([np.full(len(x), k + 1) for k, x in enumerate(examples)] + [np.zeros(pad)]).astype(np.int32)
  return np.asarray(_logits(model, jnp.asarray(row)[None], jnp.asarray(seg)[None], **images))[0]


def _alone(model, ids, **images):
  return np.asarray(_logits(model, jnp.asarray(ids)[None], jnp.ones((1, len(ids)), jnp.int32), **images))[0]


@pytest.mark.parametrize("lengths", [(5, 7, 4), (50, 70, 8)], ids=["short", "two-query-blocks"])
def test_packed_row_logits_equal_each_example_alone(tiny_model, lengths):
  """Given examples a and b packed into one padded row, their logits are those of each run on its own.

  At 128 tokens causal attention runs in two query blocks of 64 (b straddles the boundary); alone, a and b
  run unblocked, so this also checks that blocking changes nothing. RoPE is relative, so shifting a segment's
  positions leaves these logits equal (to fp32 rounding): the positions are pinned by the tests above.
  """
  na, nb, npad = lengths
  rng = np.random.default_rng(0)
  a, b = _ids(rng, na), _ids(rng, nb)
  packed = _packed(tiny_model, [a, b], npad)
  np.testing.assert_allclose(packed[:na], _alone(tiny_model, a), atol=TOL, rtol=TOL)
  np.testing.assert_allclose(packed[na:na + nb], _alone(tiny_model, b), atol=TOL, rtol=TOL)


def test_left_padded_batch_logits_equal_each_prompt_alone(tiny_model):
  """The sampler's batch: a short prompt left-padded next to a long one; padding changes no real token's logits.

  As in the sampler, the attention mask (0 on padding) is the segment row and positions follow from it.
  """
  rng = np.random.default_rng(1)
  short, long = _ids(rng, 5), _ids(rng, 9)
  ids = np.stack([np.concatenate([np.zeros(4, np.int32), short]), long])
  mask = np.stack([np.r_[np.zeros(4), np.ones(5)], np.ones(9)]).astype(np.int32)
  out = np.asarray(_logits(tiny_model, jnp.asarray(ids), jnp.asarray(mask)))
  np.testing.assert_allclose(out[0, 4:], _alone(tiny_model, short), atol=TOL, rtol=TOL)
  np.testing.assert_allclose(out[1], _alone(tiny_model, long), atol=TOL, rtol=TOL)


def test_packed_row_with_an_image_equals_the_image_example_alone(tiny_model, tiny_cfg):
  """Given an image example packed before a text example, both keep their own logits (image features included)."""
  c = tiny_cfg
  v = c.vision
  h, w = 28, 56  # grid 1 x 2: 4 base + 2 rows x (4 + newline) = 14 image tokens
  n_img = int(anyres.num_image_tokens(h, w, c.image_grid_pinpoints, v.image_size, v.patches_per_side,
                                      c.tokens_per_tile))
  tiles = anyres.max_patches(c.image_grid_pinpoints, v.image_size)
  rng = np.random.default_rng(2)
  pixels = jnp.asarray(rng.normal(size=(1, tiles, 3, v.image_size, v.image_size)), jnp.float32)
  sizes = jnp.asarray([[h, w]], jnp.int32)
  a = np.concatenate([_ids(rng, 2), np.full(n_img, c.image_token_index, np.int32), _ids(rng, 3)])
  b = _ids(rng, 6)
  packed = _packed(tiny_model, [a, b], 3, pixel_values=pixels, image_sizes=sizes)
  np.testing.assert_allclose(packed[:len(a)], _alone(tiny_model, a, pixel_values=pixels, image_sizes=sizes),
                             atol=TOL, rtol=TOL)
  np.testing.assert_allclose(packed[len(a):len(a) + len(b)], _alone(tiny_model, b), atol=TOL, rtol=TOL)
