"""Tokenizers: load a Hugging Face tokenizer folder, train a small BPE offline, add the agents' tokens.

Real runs load the checkpoint's own tokenizer (`load_tokenizer(path)`). The CPU demo and the tests train a
byte-level BPE on their own text with `train_bpe` (milliseconds, no hub), with the chat template's special
tokens, `<image>`, a pad token and the agents' `<thoughts>`/`<output>` tokens.
"""

from __future__ import annotations

import os
from typing import Iterable

from insightv_jax.data.prompts import AGENT_TOKENS
from insightv_jax.data.templates import IMAGE_PLACEHOLDER, TEMPLATES
from insightv_jax.utils.inputs import InputError, is_hub_id, one_line

PAD = "<pad>"


def load_tokenizer(path: str):
  """A tokenizer folder written by `save_pretrained` (or a hub id "org/name" that names no local path, where a hub
  is reachable) -> a transformers tokenizer. A missing, empty or unreadable folder, or a hub id the hub does not
  give, is an `InputError` naming it."""
  from transformers import AutoTokenizer
  if not isinstance(path, str) or not path.strip():
    raise InputError("tokenizer path is empty: give the folder of a tokenizer written by save_pretrained "
                     "(e.g. --config.tokenizer=/path/to/tokenizer)")
  if is_hub_id(path):
    try:
      return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # offline, unknown repo, gated repo: all end here
      raise InputError(f"tokenizer {path!r} is no local folder, and the hub did not give it ({type(e).__name__}: "
                       f"{one_line(e)[:300]}); give a folder written by save_pretrained") from e
  local = os.path.expanduser(path)
  if not os.path.isdir(local):
    raise InputError(f"tokenizer folder {path!r} {'is a file' if os.path.exists(local) else 'does not exist'} "
                     "(expected a folder written by save_pretrained, e.g. --config.tokenizer=/path/to/tokenizer)")
  try:
    return AutoTokenizer.from_pretrained(local, local_files_only=True)
  except Exception as e:  # transformers / tokenizers raise many unrelated types for a bad folder
    raise InputError(f"tokenizer folder {path!r} cannot be loaded ({type(e).__name__}: {one_line(e)[:300]}); "
                     "expected the files save_pretrained writes (tokenizer.json, tokenizer_config.json)") from e


def train_bpe(texts: Iterable[str], vocab_size: int, template: str = "llama3", *, agent_tokens: bool = True):
  """A byte-level BPE `PreTrainedTokenizerFast` whose special tokens come last in the vocabulary.

  Returns the tokenizer; `<image>` is an added special token (its id is the model's image_token_index).
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  tpl = TEMPLATES[template]
  specials = list(dict.fromkeys(tpl.special_tokens + (IMAGE_PLACEHOLDER, PAD)
                                + (AGENT_TOKENS if agent_tokens else ())))
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD)
  fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s != PAD]})
  fast.bos_token = tpl.bos or None
  fast.eos_token = tpl.stop
  fast.chat_template = tpl.jinja
  return fast


def add_agent_tokens(tokenizer) -> int:
  """Adds `<thoughts>`, `</thoughts>`, `<output>`, `</output>` if missing; returns the new vocabulary size.

  Grow the model to match with `insightv_jax.model.resize.grow_vocab(model, len(tokenizer))`.
  """
  missing = [t for t in AGENT_TOKENS if t not in tokenizer.get_vocab()]
  if missing:
    tokenizer.add_tokens(missing, special_tokens=True)
  return len(tokenizer)


def add_image_token(tokenizer) -> int:
  """Adds `<image>` as a special token if missing and returns its id (the model's image_token_index).

  Original LLaVA-NeXT / Insight-V tokenizers have none: LLaVA writes the sentinel -200 into input_ids. The token
  is appended after every existing one, so an Insight-V tokenizer keeps its `<thoughts>`/`<output>` ids.
  `insightv-convert` calls this when it writes a checkpoint for our pipeline or for transformers.
  """
  if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
    tokenizer.add_tokens([IMAGE_PLACEHOLDER], special_tokens=True)
  return int(tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))


def add_model_tokens(tokenizer) -> int:
  """Adds what our pipeline needs as single tokens, if missing: `<image>` first (an original release's tokenizer is
  as long as its embedding table, so `<image>` gets the id the original layout assumes, the vocabulary size), then
  the agents' `<thoughts>` / `<output>` tags. Returns `<image>`'s id; grow the model to `len(tokenizer)`.
  """
  image_id = add_image_token(tokenizer)
  add_agent_tokens(tokenizer)
  return image_id


def fit_model_config(cfg, tokenizer):
  """The model config with `<image>`'s id as image_token_index and a vocabulary that covers the tokenizer."""
  import dataclasses
  image_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
  if image_id is None or image_id == tokenizer.unk_token_id:
    raise ValueError(f"the tokenizer has no {IMAGE_PLACEHOLDER} token; add it as a special token first")
  vocab = max(cfg.text.vocab_size, len(tokenizer))
  return cfg.replace(image_token_index=int(image_id), text=dataclasses.replace(cfg.text, vocab_size=vocab))
