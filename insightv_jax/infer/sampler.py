"""Batched generation with a KV cache: one jitted prefill (with images) + a `lax.while_loop` decode.

    tokens = generate(model, input_ids, pixel_values, image_sizes, attention_mask, max_new_tokens=128,
                      temperature=0.7, top_p=0.95, eos_ids=(eot_id,), pad_id=0, seed=0)   # [b, max_new_tokens]
    tokens = generate(..., num_samples=4, seed=seeds)   # [b * 4, max_new_tokens]: 4 samples per prompt

Prompts are left-padded ([b, t], attention_mask 0 on padding), so every row's next token is written at the
same cache slot; positions continue each row's own count. Rows stop independently on any of their eos ids
(`eos_ids` is a sequence shared by all rows, or an int array [b, k] per prompt or [b * n, k] per output row,
-1 = unused); after a row stops, its outputs are `pad_id`. The loop ends when every row has stopped or after
max_new_tokens. Greedy when temperature == 0; otherwise temperature, then top-k (0 = off), then top-p
(1.0 = off) sampling. The sampled step avoids the two costs that made it ~35x a greedy step's on CPU at 64 rows
x 8k vocabulary: no sort over the vocabulary (`_filter_logits`: `lax.top_k`, or a 32-step bisection for the
top-p cutoff, the same kept set as the sorted cumsum) and ~2 sqrt(v) Gumbel numbers per row instead of v
(`_draw`: a block of tokens, then a token in it; the same distribution as one categorical draw).

Group sampling (`num_samples=n`): each prompt is prefilled ONCE, then its KV cache, last logits and next
position are repeated n times along the batch inside the compiled program, and the b * n rows decode
together. Output rows are prompt-major: row p * n + s is sample s of prompt p. The result equals generating
from the prompts repeated n times (`np.repeat(input_ids, n, axis=0)`, images and masks likewise) with the same
seeds; only the prefill work is divided by n. num_samples=1 is the plain path (bit-identical to before).

Seeds are per OUTPUT row: `seed` is one int, from which the b * n rows get distinct streams (row r draws from
seed + r * 0x9E3779B9, the same streams as the repeated prompts with that int), or one int per output row
(b * n of them, row p * n + s; a [b, n] array is read in that order). A row's sample depends only on its own
seed and prompt, never on its batch mates or on n, so data generation is reproducible under any batching
and grouping. Stop strings are applied to decoded text by `truncate_at_stop_strings`. The decode loop's carry
is a `DecodeState` (step, logits, cache, tokens, done, positions).

One compiled program per (batch, prompt length, max_new_tokens, num_samples, sampling mode) shape: callers
bucket prompt lengths (`bucket_length`) to keep the number of compilations small.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from insightv_jax.model.llava import LlavaNext
from insightv_jax.model.llm import KVCache, segment_positions


def bucket_length(n: int, multiple: int = 64) -> int:
  """n rounded up to a multiple of `multiple` (at least one multiple): 1 -> 64, 64 -> 64, 65 -> 128."""
  return max(multiple, -(-n // multiple) * multiple)


class DecodeState(NamedTuple):
  """The decode loop's carry (b batch, v vocab). Step i samples from `logits`, writes `tokens[:, i]` and feeds
  that token back through the model at cache slot t + i (t: the padded prompt length).

  step:      [] int32, the index of the next token to write (0 after the prefill).
  logits:    [b, v] the model's logits for the next token of each row.
  cache:     the model's KV cache (`language_model.init_cache(b, t + max_new_tokens)`), filled up to t + step;
             with num_samples=n, b here is the number of output rows (prompts x n).
  tokens:    [b, max_new_tokens] int32, the output so far; pad_id where not written yet or after a row stopped.
  done:      [b] bool, the row has emitted one of its eos ids.
  positions: [b] int32, each row's position for its next token (left padding is not counted).
  """

  step: jax.Array
  logits: jax.Array
  cache: Any
  tokens: jax.Array
  done: jax.Array
  positions: jax.Array


def _order_keys(x: jax.Array) -> jax.Array:
  """float32 [...] -> uint32 [...] whose unsigned order is the floats' order (-inf lowest, NaN aside)."""
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _top_p_from_sorted(logits, values, top_p: float):
  """[b, v] logits (-inf outside top-k) and their top-k values [b, k] (descending) -> the top-p cutoff [b, 1].

  The mass before each sorted position is an exclusive cumsum over the k values; the normaliser is summed over
  every kept token of the full row (ties at the k-th value beyond position k included)."""
  m = values[:, :1]
  z = jnp.sum(jnp.exp(logits - m), -1, keepdims=True)
  e = jnp.exp(values - m)
  before = jnp.cumsum(e, -1) - e
  return jnp.min(jnp.where(before < top_p * z, values, jnp.inf), -1, keepdims=True)


def _top_p_by_bisection(logits, top_p: float):
  """[b, v] logits (may hold -inf) -> the top-p cutoff [b, 1] without a sort.

  A token is kept iff the mass of the tokens strictly above it is < top_p (what the sorted cumsum keeps: the first
  token past the nucleus too; ties at the cutoff all kept). That mass falls as the token's value rises, so the
  cutoff is the smallest key k (`_order_keys`) with mass(key > k) < top_p: 32 halvings of the key range find it
  exactly, each one pass of compare + masked sum over [b, v] (a full-vocabulary sort costs ~20 such passes on CPU).
  """
  m = jnp.max(logits, -1, keepdims=True)
  e = jnp.exp(logits - m)  # -inf -> 0
  target = top_p * jnp.sum(e, -1, keepdims=True)
  key = _order_keys(logits)
  lo = jnp.min(key, -1, keepdims=True) - 1  # mass(key > lo) = all >= target; keys of floats are >= 0x7FFFFF
  hi = jnp.max(key, -1, keepdims=True)  # mass(key > hi) = 0 < target

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    below = jnp.sum(jnp.where(key > mid, e, 0.0), -1, keepdims=True) < target
    return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

  _, hi = jax.lax.fori_loop(0, 32, halve, (lo, hi))
  return jnp.min(jnp.where(key >= hi, logits, jnp.inf), -1, keepdims=True)


def _filter_logits(logits, temperature: float, top_k: int, top_p: float):
  """[b, v] logits -> fp32 logits / temperature with tokens outside top-k, then outside top-p, set to -inf.

  top-k keeps every token >= the k-th largest value; top-p then keeps the smallest set of most likely tokens whose
  mass reaches top_p (a token is kept iff the mass strictly above it is < top_p; ties at the cutoff are kept).
  No sort over the vocabulary: `lax.top_k` for top-k (its sorted values then give the top-p cutoff too), else the
  cutoff is found by bisection (`_top_p_by_bisection`)."""
  logits = logits.astype(jnp.float32) / temperature
  values = None
  if top_k and top_k < logits.shape[-1]:
    values = jax.lax.top_k(logits, top_k)[0]
    logits = jnp.where(logits < values[:, -1:], -jnp.inf, logits)
  if top_p < 1.0:
    cutoff = _top_p_by_bisection(logits, top_p) if values is None else _top_p_from_sorted(logits, values, top_p)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def _block_size(v: int) -> int:
  """The draw's block of tokens: the smallest power of two >= sqrt(v) (v = 8192 -> 64 blocks of 128)."""
  return 1 << math.ceil(math.log2(max(v, 1)) / 2)


def _draw(logits, seeds, step):
  """[b, v] fp32 logits (-inf = excluded), [b] uint32 seeds, [] step -> [b] int32 tokens ~ softmax(logits).

  Two Gumbel-max draws per row instead of one over the vocabulary: a block of `_block_size(v)` tokens with
  probability (its mass / the row's), then a token within it with probability (its mass / the block's); the product
  is the token's probability. Each row draws from its own stream fold_in(key(seed), step), so ~2 sqrt(v) Gumbel
  numbers per row and step (the random bits of v numbers per row cost more than the rest of the step)."""
  b, v = logits.shape
  bs = _block_size(v)
  nb = -(-v // bs)
  blocks = jnp.pad(logits, ((0, 0), (0, nb * bs - v)), constant_values=-jnp.inf).reshape(b, nb, bs)
  m = jnp.max(logits, -1)[:, None, None]
  log_mass = jnp.log(jnp.sum(jnp.exp(blocks - m), -1))  # [b, nb], -inf for an excluded block

  def row(seed, log_mass, blocks):
    k_block, k_token = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
    block = jax.random.categorical(k_block, log_mass)
    return block * bs + jax.random.categorical(k_token, jax.lax.dynamic_index_in_dim(blocks, block, 0, False))

  return jax.vmap(row)(seeds, log_mass, blocks).astype(jnp.int32)


def _repeat_rows(cache: KVCache, n: int) -> KVCache:
  """Each row of a cache n times, prompt-major (row p -> rows p * n .. p * n + n - 1); per-layer buffers
  [b, k, s, e] or a stacked [l, b, k, s, e] buffer (batch on axis 1)."""
  if isinstance(cache.k, tuple):
    rep = lambda xs: tuple(jnp.repeat(x, n, axis=0) for x in xs)
  else:
    rep = lambda x: jnp.repeat(x, n, axis=1)
  return KVCache(rep(cache.k), rep(cache.v), jnp.repeat(cache.segment_ids, n, axis=0))


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature", "top_k", "top_p",
                                             "pad_id", "num_samples"))
def _generate(graphdef, params, input_ids, pixel_values, image_sizes, attention_mask, eos, seeds, *,
              max_new_tokens: int, temperature: float, top_k: int, top_p: float, pad_id: int, num_samples: int = 1):
  model: LlavaNext = nnx.merge(graphdef, params)
  b, t = input_ids.shape
  cache = model.language_model.init_cache(b, t + max_new_tokens)
  seg = attention_mask.astype(jnp.int32)
  h, cache = model.hidden_states(input_ids, pixel_values, image_sizes, segment_ids=seg,
                                 positions=segment_positions(seg), cache=cache, cache_index=0)
  logits = model.logits(h[:, -1:])[:, 0]
  positions = seg.sum(-1)  # each row's own next position
  if num_samples > 1:  # one prefill per prompt, n decoding copies of it (prompt-major)
    cache = _repeat_rows(cache, num_samples)
    logits, positions = jnp.repeat(logits, num_samples, axis=0), jnp.repeat(positions, num_samples, axis=0)
    b = b * num_samples

  def pick(logits, i):
    if temperature == 0.0:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return _draw(_filter_logits(logits, temperature, top_k, top_p), seeds, i)  # each row its own stream

  def cond(state: DecodeState):
    return (state.step < max_new_tokens) & ~jnp.all(state.done)

  def body(state: DecodeState) -> DecodeState:
    i = state.step
    tok = jnp.where(state.done, pad_id, pick(state.logits, i))
    tokens = state.tokens.at[:, i].set(tok)
    done = state.done | jnp.any(tok[:, None] == eos, axis=-1)
    h, cache = model.hidden_states(tok[:, None], segment_ids=jnp.ones((b, 1), jnp.int32),
                                   positions=state.positions[:, None], cache=state.cache, cache_index=t + i)
    return DecodeState(step=i + 1, logits=model.logits(h)[:, 0], cache=cache, tokens=tokens, done=done,
                       positions=state.positions + 1)

  start = DecodeState(step=jnp.int32(0), logits=logits, cache=cache,
                      tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32), done=jnp.zeros((b,), bool),
                      positions=positions)
  return jax.lax.while_loop(cond, body, start).tokens


def generate(model: LlavaNext, input_ids, pixel_values=None, image_sizes=None, attention_mask=None, *,
             max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             eos_ids: Sequence[int] | np.ndarray = (), pad_id: int = 0, seed: int | Sequence[int] = 0,
             num_samples: int = 1) -> jax.Array:
  """-> generated tokens [b * num_samples, max_new_tokens] (pad_id after each row's stop token), prompt-major.

  See the module doc: num_samples continuations per prompt from one prefill; seeds are per output row.
  """
  input_ids = jnp.asarray(input_ids, jnp.int32)
  b = input_ids.shape[0]
  n = int(num_samples)
  if n < 1:
    raise ValueError(f"num_samples={num_samples}; expected >= 1")
  rows = b * n
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  eos = np.asarray(eos_ids, np.int32)
  if eos.ndim == 1:
    eos = np.broadcast_to(eos, (rows, eos.shape[0]))
  if eos.shape[-1] == 0:
    eos = np.full((rows, 1), -1, np.int32)
  if eos.shape[0] == b and n > 1:  # one row of eos ids per prompt: shared by its samples
    eos = np.repeat(eos, n, axis=0)
  if eos.shape[0] != rows:
    raise ValueError(f"eos_ids has {eos.shape[0]} rows for a batch of {b} prompts x {n} samples")
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
    raise ValueError(f"bad sampling parameters: temperature={temperature}, top_p={top_p}, top_k={top_k}")
  seeds = np.asarray(seed, np.uint32)
  seeds = np.broadcast_to(seeds, (rows,)) if seeds.ndim == 0 else seeds.reshape(-1)
  if seeds.shape != (rows,):
    raise ValueError(f"seed: one int or one per output row ({b} prompts x {n} samples = {rows}), got shape "
                     f"{np.shape(seed)}")
  if np.ndim(seed) == 0:  # one seed for the batch: distinct streams per row
    seeds = (seeds + np.arange(rows, dtype=np.uint32) * np.uint32(0x9E3779B9)).astype(np.uint32)
  graphdef, params = nnx.split(model)
  return _generate(graphdef, params, input_ids, pixel_values, image_sizes, jnp.asarray(attention_mask),
                   jnp.asarray(eos), jnp.asarray(seeds), max_new_tokens=max_new_tokens,
                   temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), pad_id=int(pad_id),
                   num_samples=n)


def truncate_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
  """Cuts decoded text at the first occurrence of any stop string (the stop string itself is dropped)."""
  cut = len(text)
  for s in stop_strings:
    i = text.find(s)
    if 0 <= i < cut:
      cut = i
  return text[:cut]
