"""The KV-cache sampler: greedy output equals transformers' generate; sampling options and stops behave; group
sampling (n samples per prompt from one prefill) equals sampling the repeated prompts, row for row, through the
sampler, the agents and the local data-generation backend."""

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
from insightv_jax.infer.sampler import _draw, _filter_logits


def test_generate_is_the_documented_package_api():
  """DESIGN.md: `insightv_jax.infer.generate(model, input_ids, pixel_values, image_sizes, attention_mask, *,
  max_new_tokens, ...)`; the package exports the sampler and the agents."""
  params = inspect.signature(infer.generate).parameters
  positional = [n for n, p in params.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
  assert positional == ["model", "input_ids", "pixel_values", "image_sizes", "attention_mask"]
  assert params["max_new_tokens"].kind is inspect.Parameter.KEYWORD_ONLY
  assert params["max_new_tokens"].default is inspect.Parameter.empty
  assert params["num_samples"].kind is inspect.Parameter.KEYWORD_ONLY and params["num_samples"].default == 1
  assert set(infer.__all__) == {"generate", "truncate_at_stop_strings", "bucket_length", "Agent", "GenerationConfig",
                                "Example", "reason", "two_agents", "direct", "chain_of_thought"}
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


# ------------------------------------------------------------------------------------ filtering and draws


def reference_keep(logits, temperature, top_k, top_p):
  """NumPy (float64) top-k then top-p over a full sort, as HF's warpers: -> (kept [b, v] bool, margin [b]).

  top-k keeps every token >= the k-th largest; top-p keeps a sorted position iff the mass before it is < top_p,
  and every token >= the smallest kept value. margin: how far each row's decisive masses lie from top_p (a row
  within float32 rounding of its boundary may go either way)."""
  x = np.asarray(logits, np.float64) / temperature
  if 0 < top_k < x.shape[1]:  # top_k >= v keeps every token
    x = np.where(x < np.sort(x, -1)[:, -top_k][:, None], -np.inf, x)
  keep = np.isfinite(x)
  margin = np.full(x.shape[0], np.inf)
  if top_p < 1.0:
    srt = -np.sort(-x, -1)
    p = np.exp(srt - srt[:, :1])
    p /= p.sum(-1, keepdims=True)
    before = np.cumsum(p, -1) - p
    cutoff = np.min(np.where(before < top_p, srt, np.inf), -1, keepdims=True)
    keep &= x >= cutoff
    margin = np.min(np.abs(before - top_p), -1)
  return keep, margin


@pytest.mark.parametrize("top_k,top_p", [(0, 0.95), (0, 0.5), (0, 0.05), (7, 0.9), (40, 0.95), (40, 1.0), (0, 1.0),
                                         (500, 1.0), (1, 0.3)])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_filtering_keeps_the_sorted_reference_set(top_k, top_p, ties):
  """Random logits (ties: values on a 0.25 grid, so the k-th value and the top-p cutoff are shared by several
  tokens), temperature 0.7: the kept set equals the full-sort reference row for row (rows within 1e-5 of the
  top-p boundary are left out); kept logits are logits / temperature, the rest -inf; top_p=1.0 with top_k=0 (or
  top_k >= v) keeps everything."""
  rng = np.random.default_rng(top_k * 100 + int(top_p * 100) + ties)
  logits = rng.normal(size=(48, 301)).astype(np.float32) * rng.uniform(0.5, 6, (48, 1)).astype(np.float32)
  if ties:
    logits = np.round(logits * 4) / 4
  logits[0] = 1.5  # a flat row: everything tied
  want, margin = reference_keep(logits, 0.7, top_k, top_p)
  got = np.asarray(jax.jit(_filter_logits, static_argnums=(1, 2, 3))(jnp.asarray(logits), 0.7, top_k, top_p))
  rows = margin > 1e-5
  assert rows.sum() >= 40
  np.testing.assert_array_equal(np.isfinite(got)[rows], want[rows])
  np.testing.assert_allclose(got[np.isfinite(got)], (logits / np.float32(0.7))[np.isfinite(got)], rtol=1e-6)
  assert np.isfinite(got[0]).all() and np.isneginf(got[~np.isfinite(got)]).all()
  if top_p == 1.0 and (top_k == 0 or top_k >= logits.shape[1]):
    assert np.isfinite(got).all()
  if ties and 0 < top_k < logits.shape[1] and top_p == 1.0:
    assert (np.isfinite(got).sum(-1) > top_k).any()  # ties at the k-th value are all kept


@pytest.mark.parametrize("v,top_k,top_p", [(10, 0, 0.8), (37, 12, 0.95), (64, 0, 1.0)])
def test_draws_follow_the_filtered_distribution(v, top_k, top_p):
  """20,000 rows with their own seeds draw from one row of logits (v = 10 and 37: the last draw block is padded):
  excluded tokens never come out, and the counts of the kept ones pass a chi-square test against softmax over
  the kept logits (p > 1e-4); other steps of the same seeds draw other tokens."""
  rng = np.random.default_rng(v)
  logits = (rng.normal(size=(1, v)) * 1.5).astype(np.float32)
  keep, _ = reference_keep(logits, 1.0, top_k, top_p)
  p = np.where(keep[0], np.exp(logits[0].astype(np.float64) - logits.max()), 0.0)
  p /= p.sum()
  n = 20_000
  seeds = jnp.arange(n, dtype=jnp.uint32) * 7 + 1
  sample = jax.jit(lambda x, s, i: _draw(_filter_logits(x, 1.0, top_k, top_p), s, i))
  tokens = np.asarray(sample(jnp.broadcast_to(jnp.asarray(logits), (n, v)), seeds, 3))
  counts = np.bincount(tokens, minlength=v)
  assert counts.shape == (v,) and counts[~keep[0]].sum() == 0
  expected = n * p[keep[0]]
  chi2 = float(np.sum((counts[keep[0]] - expected) ** 2 / expected))
  df = int(keep[0].sum()) - 1
  critical = df * (1 - 2 / (9 * df) + 3.719 * np.sqrt(2 / (9 * df))) ** 3  # Wilson-Hilferty, p = 1e-4
  assert chi2 < critical, (chi2, critical, counts, expected)
  other = np.asarray(sample(jnp.broadcast_to(jnp.asarray(logits), (n, v)), seeds, 4))
  assert (other != tokens).mean() > 0.3


# ------------------------------------------------------------------------------------------ group sampling


def image_batch(model):
  """Three left-padded prompts of different lengths, each with its own image."""
  images = [random_image(40, 90, 1), random_image(70, 30, 2), random_image(50, 50, 3)]
  ids, mask, pv, sizes = make_batch(model.cfg, images, seed=4, extra=(3, 9, 1))
  return ids, mask, pv, sizes


def repeated(n, ids, mask, pv, sizes):
  return tuple(np.repeat(x, n, axis=0) for x in (ids, mask, pv, sizes))


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_group_sampling_equals_sampling_the_repeated_prompts(checkpoint, pair, scan):
  """Given 3 image prompts and 4 samples each, when generate prefills each prompt once (num_samples=4), then
  every row equals the row generated from the prompts repeated 4 times with the same per-row seed (both cache
  layouts), and one int seed gives the repeated prompts' streams too."""
  model = load_llava_next(checkpoint[1], scan_layers=True) if scan else pair[1]
  ids, mask, pv, sizes = image_batch(model)
  n = 4
  kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95)
  seeds = np.arange(3 * n) * 7 + 3
  grouped = np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, seed=seeds, num_samples=n,
                                **kw))
  r_ids, r_mask, r_pv, r_sizes = repeated(n, ids, mask, pv, sizes)
  flat = np.asarray(generate(model, r_ids, jnp.asarray(r_pv), jnp.asarray(r_sizes), r_mask, seed=seeds, **kw))
  assert grouped.shape == (3 * n, 16)
  np.testing.assert_array_equal(grouped, flat)
  assert len({tuple(row) for row in grouped}) > 3  # the samples of a prompt differ
  one_int = np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, seed=9, num_samples=n, **kw))
  np.testing.assert_array_equal(one_int, np.asarray(generate(model, r_ids, jnp.asarray(r_pv), jnp.asarray(r_sizes),
                                                             r_mask, seed=9, **kw)))
  # seeds as [b, n]: row p * n + s
  np.testing.assert_array_equal(grouped, np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask,
                                                             seed=seeds.reshape(3, n), num_samples=n, **kw)))
  with pytest.raises(ValueError, match="one per output row"):
    generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, seed=[1, 2, 3], num_samples=n, **kw)


def test_greedy_group_gives_identical_rows_equal_to_one_sample(pair):
  """Greedy with num_samples=3: the 3 rows of a prompt are the same, and equal the num_samples=1 output."""
  _, model = pair
  ids, mask, pv, sizes = image_batch(model)
  one = np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, max_new_tokens=12))
  three = np.asarray(generate(model, ids, jnp.asarray(pv), jnp.asarray(sizes), mask, max_new_tokens=12,
                              num_samples=3))
  np.testing.assert_array_equal(three, np.repeat(one, 3, axis=0))


def test_group_rows_stop_on_their_own_eos_and_pad_after(pair):
  """Text prompts, 3 samples each at temperature 1: a token that some rows sample is made an eos id; each row
  stops at its own first eos (pad_id after it) and matches the run without eos ids up to there; per-prompt eos
  rows [b, k] apply to that prompt's samples only."""
  _, model = pair
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 200, (2, 8))
  mask = np.ones_like(ids)
  mask[1, :3] = 0  # left padding
  kw = dict(max_new_tokens=10, temperature=1.0, seed=list(range(6)), num_samples=3)
  free = np.asarray(generate(model, ids, attention_mask=mask, **kw))
  stop = int(free[1, 2])
  stopped = np.asarray(generate(model, ids, attention_mask=mask, eos_ids=(stop,), pad_id=255, **kw))
  for row, out in zip(free, stopped):
    hits = np.flatnonzero(row == stop)
    if hits.size:
      first = hits[0]
      np.testing.assert_array_equal(out[:first + 1], row[:first + 1])
      assert (out[first + 1:] == 255).all()
    else:
      np.testing.assert_array_equal(out, row)
  per_prompt = np.asarray(generate(model, ids, attention_mask=mask, eos_ids=np.asarray([[-1], [stop]]), pad_id=255,
                                   **kw))
  np.testing.assert_array_equal(per_prompt[:3], free[:3])  # prompt 0 has no eos
  np.testing.assert_array_equal(per_prompt[3:], stopped[3:])


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
  from flax import nnx

  from insightv_jax.data.tokenizer import fit_model_config, train_bpe
  from insightv_jax.model.config import LlavaConfig
  from insightv_jax.model.llava import LlavaNext
  tok = train_bpe(["How many red cells are in the grid? Count them step by step."] * 20, 300, "llama3")
  cfg = fit_model_config(LlavaConfig.from_hf(tiny_hf_config("llama", "clip").to_dict()), tok)
  model = LlavaNext(cfg, rngs=nnx.Rngs(3))
  return infer.Agent(model, tok, "llama3", infer.GenerationConfig(max_new_tokens=12, temperature=1.0, batch_size=4))


def conversations():
  convs = [[{"role": "user", "content": "<image>\nHow many red cells?"}],
           [{"role": "user", "content": "Count them step by step."}],
           [{"role": "user", "content": "<image>\nHow many cells are in the grid?"}]]
  return convs, [random_image(40, 60, 8), None, random_image(56, 56, 9)]


def test_agent_samples_n_replies_per_conversation_as_the_repeated_conversations(agent):
  """Agent.complete(..., num_samples=3): prompt-major replies equal those of the conversations repeated 3 times
  with the same seeds, although the generate calls batch different rows (4 per call vs 1 prompt x 3)."""
  convs, images = conversations()
  seeds = [11 * i + 1 for i in range(9)]
  grouped = agent.complete(convs, images, seeds=seeds, num_samples=3)
  flat = agent.complete([c for c in convs for _ in range(3)], [im for im in images for _ in range(3)], seeds=seeds)
  assert grouped == flat and len(grouped) == 9
  assert len(set(grouped)) > 3
  default = agent.complete(convs, images, num_samples=3)
  assert default == agent.complete([c for c in convs for _ in range(3)], [im for im in images for _ in range(3)])


def test_local_backend_prefills_a_question_once_and_replies_as_before(agent, monkeypatch):
  """LocalBackend: 3 paths of one question (same conversation and image), 2 of another and a lone request come
  back exactly as the ungrouped agent call (each request its own seed) would give them; the grouped requests go
  through complete(..., num_samples=n)."""
  import io

  from data_gen.backends import ChatRequest, LocalBackend
  from insightv_jax import infer as infer_pkg

  png = []
  for im in (random_image(40, 60, 8), random_image(56, 56, 9)):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    png.append(buf.getvalue())
  ask = lambda text, image, seed: ChatRequest(messages=({"role": "user", "content": text},), image=image,
                                              temperature=1.0, top_p=1.0, max_tokens=12, seed=seed)
  reqs = ([ask("How many red cells?", png[0], 100 + k) for k in range(3)]
          + [ask("How many cells are in the grid?", png[1], 200 + k) for k in range(2)]
          + [ask("Count them step by step.", None, 300)])
  calls = []
  complete = infer_pkg.Agent.complete

  def spy(self, convs, images, **kw):
    calls.append((len(convs), kw.get("num_samples", 1)))
    return complete(self, convs, images, **kw)

  monkeypatch.setattr(infer_pkg.Agent, "complete", spy)
  got = LocalBackend(agent).chat(reqs)
  assert sorted(calls) == [(1, 1), (1, 2), (1, 3)]
  monkeypatch.setattr(infer_pkg.Agent, "complete", complete)
  from insightv_jax.data.images import decode
  convs = [[{"role": "user", "content": ("<image>\n" if r.image else "") + r.messages[0]["content"]}] for r in reqs]
  want = agent.complete(convs, [decode(r.image) if r.image else None for r in reqs], seeds=[r.seed for r in reqs])
  assert got == want
