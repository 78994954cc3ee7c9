"""Batched generation with a KV cache: one jitted prefill (with images) + a `lax.while_loop` decode.

    tokens = generate(model, input_ids, pixel_values, image_sizes, attention_mask, max_new_tokens=128,
                      temperature=0.7, top_p=0.95, eos_ids=(eot_id,), pad_id=0, seed=0)   # [b, max_new_tokens]
    tokens = generate(..., num_samples=4, seed=seeds)   # [b * 4, max_new_tokens]: 4 samples per prompt

Prompts are left-padded ([b, t], attention_mask 0 on padding), so every row's next token is written at the
same cache slot; positions continue each row's own count. Rows stop independently on any of their eos ids
(`eos_ids` is a sequence shared by all rows, or an int array [b, k] per prompt or [b * n, k] per output row,
-1 = unused); after a row stops, its outputs are `pad_id`. The loop ends when every row has stopped or after
max_new_tokens. Greedy when temperature == 0; otherwise temperature, then top-k (0 = off), then top-p
(1.0 = off) sampling.

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


def _filter_logits(logits, temperature: float, top_k: int, top_p: float):
  """[b, v] logits -> fp32 logits / temperature with tokens outside top-k, then outside top-p, set to -inf."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    cum = jnp.cumsum(probs, axis=-1)
    keep = cum - probs < top_p  # always keeps the most likely token
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


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
    filtered = _filter_logits(logits, temperature, top_k, top_p)
    draw = lambda s, row: jax.random.categorical(jax.random.fold_in(jax.random.key(s), i), row)
    return jax.vmap(draw)(seeds, filtered).astype(jnp.int32)  # each row its own stream

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
