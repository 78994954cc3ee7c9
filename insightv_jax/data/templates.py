"""Chat templates (LLaMA-3, ChatML, Vicuna, LLaVA-NeXT's conversation modes), loss masks and image tokens.

    tpl = TEMPLATES["llama3"]
    ids, mask = encode_chat(tokenizer, tpl, messages, image_token_counts=[n_img])

`encode_chat` renders the conversation with the template, tokenizes it once (so BPE merges are those of
the whole text), marks as trainable (`mask = 1`) exactly the tokens of the assistant replies and their
end-of-turn token, and expands each `<image>` placeholder to the number of image tokens its AnyRes grid
needs. The `jinja` strings are the same templates for `tokenizer.apply_chat_template` (with
`{% generation %}` tags so transformers can return the same assistant mask); the tests check that both
agree token for token.

Messages: [{"role": "system" | "user" | "assistant", "content": str}], `<image>` inside user content.

LLaVA-NeXT's conversation modes, by their names (`--version` of its train.py, `conv_mode` of its inference):
`llava_llama_3` is LLaMA-3 with LLaVA's system prompt (`insightv_compat.LLAVA_LLAMA3_SYSTEM`) when the
conversation has none, `qwen_1_5` is ChatML with "You are a helpful assistant.". Their ids are those of
LLaVA-NeXT's train.py `preprocess_llama3` / `preprocess_qwen` (one `apply_chat_template` per turn, the
`<|begin_of_text|>` of each turn but the first dropped); their masks are `apply_chat_template`'s assistant
masks, not train.py's labels (which also train on headers and separators: see `insightv_compat`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from insightv_jax.data import insightv_compat

IMAGE_PLACEHOLDER = "<image>"
# The template of a job whose config leaves it "" and whose model folder records none (checkpoints/model_card.py).
DEFAULT_TEMPLATE = "llama3"


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """name; bos: text at the very start; stop: end-of-turn text (also the generation stop string);
  default_system: the system turn added when a conversation has none; style: the layout (llama3 | chatml |
  vicuna; default: the name)."""

  name: str
  bos: str
  stop: str
  default_system: str | None
  jinja: str
  special_tokens: tuple[str, ...]
  style: str | None = None

  def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """-> (text, [(start, end) char spans of assistant replies incl. their stop text])."""
    pieces: list[tuple[str, bool]] = []
    msgs = list(messages)
    if self.default_system is not None and (not msgs or msgs[0]["role"] != "system"):
      msgs = [{"role": "system", "content": self.default_system}] + msgs
    for i, m in enumerate(msgs):
      role, content = m["role"], m["content"]
      if role not in ("system", "user", "assistant"):
        raise ValueError(f"message {i}: role {role!r} is not system/user/assistant")
      pieces.extend(_RENDER[self.style or self.name](i, role, content, self))
    if add_generation_prompt:
      pieces.append((_GEN_PROMPT[self.style or self.name], False))
    text, spans, pos = "", [], 0
    for piece, is_assistant in pieces:
      if is_assistant:
        spans.append((pos, pos + len(piece)))
      text += piece
      pos += len(piece)
    return text, spans


def _llama3(i, role, content, tpl):
  head = (tpl.bos if i == 0 else "") + f"<|start_header_id|>{role}<|end_header_id|>\n\n"
  if role == "assistant":
    return [(head, False), (content.strip() + tpl.stop, True)]
  return [(head + content.strip() + tpl.stop, False)]


def _chatml(i, role, content, tpl):
  head = f"<|im_start|>{role}\n"
  if role == "assistant":
    return [(head, False), (content + tpl.stop, True), ("\n", False)]
  return [(head + content + tpl.stop + "\n", False)]


def _vicuna(i, role, content, tpl):
  start = tpl.bos if i == 0 else ""
  if role == "system":
    return [(start + content + " ", False)]
  if role == "user":
    return [(start + "USER: " + content + " ", False)]
  return [("ASSISTANT: ", False), (content + tpl.stop, True)]


_RENDER = {"llama3": _llama3, "chatml": _chatml, "vicuna": _vicuna}
_GEN_PROMPT = {"llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n", "chatml": "<|im_start|>assistant\n",
               "vicuna": "ASSISTANT: "}

_LLAMA3_JINJA = (
    "{% for message in messages %}"
    "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

_CHATML_JINJA = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

_VICUNA_JINJA = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}")


def _default_system_jinja(system: str) -> str:
  """Jinja that puts `system` first when the conversation has no system turn."""
  if "'" in system or "\\" in system:
    raise ValueError(f"system prompt {system!r} would need escaping in a Jinja string literal")
  return ("{% if not messages or messages[0]['role'] != 'system' %}"
          f"{{% set messages = [{{'role': 'system', 'content': '{system}'}}] + messages %}}{{% endif %}}")


# LLaVA-NeXT llava/conversation.py conv_llava_llama_3 / conv_qwen ("qwen_1_5"), as llava/train/train.py tokenizes them
_LLAVA_LLAMA3_JINJA = _default_system_jinja(insightv_compat.LLAVA_LLAMA3_SYSTEM) + _LLAMA3_JINJA
_QWEN_1_5_JINJA = _default_system_jinja(insightv_compat.QWEN_SYSTEM) + _CHATML_JINJA
_LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_CHATML_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")

TEMPLATES: dict[str, ChatTemplate] = {
    "llama3": ChatTemplate("llama3", "<|begin_of_text|>", "<|eot_id|>", None, _LLAMA3_JINJA, _LLAMA3_SPECIALS),
    "chatml": ChatTemplate("chatml", "", "<|im_end|>", "You are a helpful assistant.", _CHATML_JINJA,
                           _CHATML_SPECIALS),
    "vicuna": ChatTemplate("vicuna", "<s>", "</s>", None, _VICUNA_JINJA, ("<s>", "</s>")),
    "llava_llama_3": ChatTemplate("llava_llama_3", "<|begin_of_text|>", "<|eot_id|>",
                                  insightv_compat.LLAVA_LLAMA3_SYSTEM, _LLAVA_LLAMA3_JINJA, _LLAMA3_SPECIALS,
                                  style="llama3"),
    "qwen_1_5": ChatTemplate("qwen_1_5", "", "<|im_end|>", insightv_compat.QWEN_SYSTEM, _QWEN_1_5_JINJA,
                             _CHATML_SPECIALS, style="chatml"),
}


def rendered_special_tokens(template: ChatTemplate) -> tuple[str, ...]:
  """The special tokens `template` writes into a conversation (its bos, turn markers and end of turn): a tokenizer
  used with it must hold each as ONE token, or the turns are split into pieces and the stop never generated."""
  text, _ = template.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                             {"role": "assistant", "content": "a"}], add_generation_prompt=True)
  return tuple(t for t in template.special_tokens if t in text)


def encode_chat(tokenizer, template: ChatTemplate, messages: Sequence[dict], *, image_token_id: int,
                image_token_counts: Sequence[int] = (), add_generation_prompt: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
  """-> (ids [t] int32, loss mask [t] int32: 1 on assistant reply tokens and their end-of-turn token).

  The k-th `<image>` placeholder becomes image_token_counts[k] copies of image_token_id (mask 0).
  """
  text, spans = template.render(messages, add_generation_prompt)
  ids, mask = encode_text(tokenizer, text, spans)
  where = np.flatnonzero(ids == image_token_id)
  if len(where) != len(image_token_counts):
    raise ValueError(f"conversation has {len(where)} {IMAGE_PLACEHOLDER} placeholders but "
                     f"{len(image_token_counts)} images")
  if len(where):
    repeats = np.ones(len(ids), np.int64)
    repeats[where] = np.asarray(image_token_counts, np.int64)
    ids, mask = np.repeat(ids, repeats), np.repeat(mask, repeats)
  return ids, mask


def encode_text(tokenizer, text: str, spans: Sequence[tuple[int, int]] = ()) -> tuple[np.ndarray, np.ndarray]:
  """Rendered text -> (ids [t] int32, mask [t] int32: 1 on the tokens that overlap a (start, end) char span)."""
  enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  ids = np.asarray(enc["input_ids"], np.int32)
  offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
  mask = np.zeros(len(ids), np.int32)
  for start, end in spans:
    mask |= ((offsets[:, 1] > start) & (offsets[:, 0] < end)).astype(np.int32)
  return ids, mask
