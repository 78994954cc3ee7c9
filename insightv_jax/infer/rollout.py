"""GRPO rollouts: each question prompted exactly as `infer.Agent` prompts it, G replies sampled from one prefill.

    prompt = build_prompt(tokenizer, "llama3", "ours", "reasoning", question, image=pil, proc=proc,
                          image_token_id=cfg.image_token_index)          # Prompt: ids [P], the image slot
    out = sample_groups(model, tokenizer, "llama3", [prompt, ...], num_samples=G, max_new_tokens=64,
                        temperature=1.0, top_p=1.0, seeds=seeds)          # seeds: one per reply, prompt-major
    out.groups   # [data.group_rows.Group]: prompt ids, G reply ids (up to and including the stop token), image
    out.texts    # [n_prompts * G] reply texts as the agents decode them (what the rewards read)

The prompt ids are `prompts.prompt_ids(...)`: the conversation of `preset.messages(role, question, chain)` through
`prompts.encode(..., prompt=True)`, what `Agent.complete` sends (tests/test_train_grpo_loop.py checks the replies
equal the Agent's with the same seeds). The batching, the reply cut and the decoding are `infer.replies`', which
`Agent.complete` runs too: a reply is kept up to and including its first stop id (the template's end-of-turn and
the role's stop tags, `agents.REASONING_STOP_TOKENS` by default), or all max_new_tokens when it never stops (a
sampled `<image>` token ends it before that token); its text is decoded with special tokens kept, cut at the
template's stop string and stripped. Each call holds `prompts_per_call` prompts (the last padded with filler
rows), so one compiled sampler serves every call of a run.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from insightv_jax.data import prompts, templates
from insightv_jax.data.group_rows import Group
from insightv_jax.data.images import ImageProcessorConfig, preprocess
from insightv_jax.infer import replies as replies_lib
from insightv_jax.infer.agents import REASONING_STOP_TOKENS


@dataclasses.dataclass(frozen=True)
class Prompt:
  """ids [P] int32 (image placeholders expanded to the image's token count); image: `images.preprocess` output
  (tiles [t, 3, s, s], (H, W)) or None."""

  ids: np.ndarray
  image: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Rollout:
  """groups: one `Group` per prompt; texts: [n_prompts * G] decoded replies, prompt-major; tokens: sampled reply
  tokens (stop tokens included)."""

  groups: list[Group]
  texts: list[str]
  tokens: int


def build_prompt(tokenizer, template: str, preset: str | prompts.PromptPreset, role: str, question: str,
                 chain: str | None = None, *, image=None, proc: ImageProcessorConfig, image_token_id: int) -> Prompt:
  """The prompt of agent `role` about `question` (already `prompts.format_question`-ed), with its PIL image."""
  counts, slot = [], None
  if image is not None:
    tiles, (h, w) = preprocess(image, proc)
    slot = (tiles, (h, w))
    counts = [proc.num_image_tokens(h, w)]
  ids = prompts.prompt_ids(tokenizer, template, preset, role, question, chain, image_token_id=image_token_id,
                           image_token_counts=counts)
  return Prompt(np.asarray(ids, np.int32), slot)


def stop_ids(tokenizer, template: str, stop_tokens: Sequence[str] = REASONING_STOP_TOKENS) -> list[int]:
  """The ids that end a reply of the role whose stop tags are `stop_tokens` (`replies.stop_ids`)."""
  return replies_lib.stop_ids(tokenizer, template, stop_tokens)


def reply_text(tokenizer, template: str, ids: np.ndarray) -> str:
  """A reply's ids -> its text as the agents decode it (`replies.reply_text` at the template's stop)."""
  return replies_lib.reply_text(tokenizer, ids, [templates.TEMPLATES[template].stop])


def sample_groups(model, tokenizer, template: str, prompt_list: Sequence[Prompt], *, num_samples: int,
                  max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                  seeds: Sequence[int], eos_ids: Sequence[int] | None = None, prompts_per_call: int | None = None,
                  proc: ImageProcessorConfig | None = None) -> Rollout:
  """num_samples replies per prompt, each prompt prefilled once (`generate(num_samples=...)`).

  seeds: one per reply (len(prompt_list) * num_samples, prompt-major). prompts_per_call: prompts per generate call
  (default: all); the last call is padded with one-token filler prompts to keep the compiled shape.
  """
  n = int(num_samples)
  if len(seeds) != len(prompt_list) * n:
    raise ValueError(f"{len(seeds)} seeds for {len(prompt_list)} prompts x {n} samples")
  eos_ids = list(eos_ids) if eos_ids is not None else stop_ids(tokenizer, template)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  per_call = prompts_per_call or len(prompt_list)
  groups, texts, count = [], [], 0
  for start in range(0, len(prompt_list), per_call):
    chunk = prompt_list[start:start + per_call]
    out = replies_lib.sample_replies(model, [p.ids for p in chunk], [p.image for p in chunk], rows=per_call,
                                     num_samples=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_p=top_p, top_k=top_k, eos_ids=eos_ids, pad_id=pad_id,
                                     seeds=seeds[start * n:(start + len(chunk)) * n], proc=proc)
    for i, p in enumerate(chunk):
      replies = out[i * n:(i + 1) * n]
      count += sum(len(r) for r in replies)
      texts += [reply_text(tokenizer, template, r) for r in replies]
      groups.append(Group(p.ids, replies, [p.image] if p.image is not None else []))
  return Rollout(groups, texts, count)
