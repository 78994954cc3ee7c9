"""One generate call over a batch of prompts, and the replies cut out of it: what `Agent.complete` and GRPO
rollouts (`rollout.sample_groups`) both run, so an agent's reply and a rollout reply are the same reply.

    eos = stop_ids(tokenizer, "llama3", agents.REASONING_STOP_TOKENS)     # the ids that end a reply
    out = sample_replies(model, [ids_0, ids_1], [slot_0, None], rows=4, num_samples=2, max_new_tokens=64,
                         temperature=1.0, eos_ids=eos, pad_id=0, seeds=[1, 2, 3, 4])
    out[i * 2 + s]                                                        # reply ids [n] of sample s of prompt i
    text = reply_text(tokenizer, out[0], [templates.TEMPLATES["llama3"].stop])

A batch is prompt ids [P_i] (image placeholders already expanded), each with its image slot (`images.preprocess`
output, or None), left-padded to a 64-token bucket (`sampler.bucket_length`) and padded to `rows` prompts with
one-token filler rows, so one compiled sampler serves every call with the same rows and bucket. A reply is kept
up to and including its first stop id, or all max_new_tokens when it never stops; a sampled `<image>` token (an
untrained model may draw it; it has no embedding of its own: its position takes image features) ends the reply
before it, as if it had stopped there. With a model sharded over several processes, every process sends the same
prompts and seeds (the sampler is one SPMD program) and gets every reply.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from insightv_jax.data import templates
from insightv_jax.data.images import ImageProcessorConfig, stack_batch
from insightv_jax.infer.sampler import bucket_length, generate, truncate_at_stop_strings


def stop_ids(tokenizer, template: str | templates.ChatTemplate, stop_tokens: Sequence[str]) -> list[int]:
  """The ids that end a reply: the template's end-of-turn and `stop_tokens` (those the tokenizer holds)."""
  template = templates.TEMPLATES[template] if isinstance(template, str) else template
  return sorted({i for i in (tokenizer.convert_tokens_to_ids(s) for s in (template.stop, *stop_tokens))
                 if i is not None and i != tokenizer.unk_token_id})


def cut_at_stop(row: np.ndarray, eos_ids: Sequence[int], image_token_id: int | None = None) -> np.ndarray:
  """Sampled tokens [max_new] -> the reply up to and including its first stop id (all of it if none); a sampled
  image token ends the reply before it."""
  row = np.asarray(row, np.int32)
  if image_token_id is not None:
    bad = np.flatnonzero(row == image_token_id)
    row = row[:bad[0]] if len(bad) else row
  hit = np.flatnonzero(np.isin(row, np.asarray(eos_ids, np.int32)))
  return row[:hit[0] + 1] if len(hit) else row


def reply_text(tokenizer, ids: np.ndarray, stop_strings: Sequence[str]) -> str:
  """A reply's ids -> its text as the agents read it (special tokens kept, cut at the first stop string,
  stripped)."""
  text = tokenizer.decode([int(x) for x in ids], skip_special_tokens=False)
  return truncate_at_stop_strings(text, stop_strings).strip()


def sample_replies(model, prompt_ids: Sequence[np.ndarray], slots: Sequence[tuple | None], *, rows: int,
                   num_samples: int, max_new_tokens: int, temperature: float, top_p: float = 1.0, top_k: int = 0,
                   eos_ids: Sequence[int], pad_id: int, seeds: Sequence[int],
                   proc: ImageProcessorConfig | None = None) -> list[np.ndarray]:
  """One `generate` call: len(prompt_ids) <= rows prompts, num_samples replies each from one prefill ->
  [len(prompt_ids) * num_samples] reply ids (`cut_at_stop`), prompt-major. seeds: one per reply."""
  n, k = int(num_samples), len(prompt_ids)
  if not 0 < k <= rows:
    raise ValueError(f"{k} prompts for a call of {rows} rows")
  if len(seeds) != k * n:
    raise ValueError(f"{len(seeds)} seeds for {k} prompts x {n} samples")
  proc = proc or ImageProcessorConfig.for_model(model.cfg)
  t = bucket_length(max(len(x) for x in prompt_ids))
  ids = np.full((rows, t), pad_id, np.int32)
  mask = np.zeros((rows, t), np.int32)
  for r, x in enumerate(prompt_ids):
    ids[r, t - len(x):] = x
    mask[r, t - len(x):] = 1
  mask[k:, -1] = 1  # filler rows: one token so no row is empty
  pv, sz = stack_batch(list(slots) + [None] * (rows - k), num_tiles=proc.num_tiles, tile=proc.tile)
  toks = generate(model, ids, jnp.asarray(pv), jnp.asarray(sz), mask, max_new_tokens=max_new_tokens,
                  temperature=temperature, top_p=top_p, top_k=top_k, eos_ids=eos_ids, pad_id=pad_id,
                  seed=list(seeds) + [0] * ((rows - k) * n), num_samples=n)
  if not toks.is_fully_addressable:  # a model sharded over several processes, each sending the same prompts
    toks = multihost_utils.process_allgather(toks, tiled=True)
  toks = np.asarray(toks)
  return [cut_at_stop(toks[r], eos_ids, model.cfg.image_token_index) for r in range(k * n)]
