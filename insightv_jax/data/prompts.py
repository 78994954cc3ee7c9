"""The agents' prompts and tags: what the reasoning agent, the summary agent and the baselines are asked.

Every place that prompts or trains an agent (the loader, `infer.Agent`, the data-generation and iterative-DPO
samplers, RL rollouts) goes through ONE preset and ONE encoder, so a prompt sampled from is the prompt trained on:

    preset = get_preset(config.prompts)                       # "ours" | "insightv": the one config field
    msgs = preset.messages("reasoning", question)             # a prompt: the conversation up to the reply
    msgs = preset.messages("summary", question, chain, answer="3", judgement="sound")   # a training example
    ids, mask = encode(tokenizer, template, msgs, image_token_id=i, image_token_counts=[n])
    ids = prompt_ids(tokenizer, template, preset, "reasoning", question, image_token_id=i,
                     image_token_counts=[n])                  # [t]: the ids an agent is prompted with

`encode` is the only tokenization of an agent's conversation: a training example (its last message the reply)
gives ids and the reply's loss mask; a prompt gives the ids up to the reply with the generation prompt. The ids
of a training example before its first trained token equal the prompt's ids (tests/test_prompt_parity.py).

Messages are chat-template messages (`templates.py`) with the `<image>` placeholder in the user turn.
"ours": the chain is wrapped in `<thoughts> ... </thoughts>`, the answer in `<output> ... </output>` (Insight-V's
special tokens; `AGENT_TOKENS` are added to the tokenizer); "insightv": Insight-V's released prompts
(`insightv_compat`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

import numpy as np

from insightv_jax.data import insightv_compat as compat
from insightv_jax.data import templates
from insightv_jax.data.templates import IMAGE_PLACEHOLDER

THOUGHTS_OPEN, THOUGHTS_CLOSE = "<thoughts>", "</thoughts>"
OUTPUT_OPEN, OUTPUT_CLOSE = "<output>", "</output>"
AGENT_TOKENS = (THOUGHTS_OPEN, THOUGHTS_CLOSE, OUTPUT_OPEN, OUTPUT_CLOSE)

REASONING_INSTRUCTION = (
    "Reason about the image step by step, inside <thoughts> and </thoughts>. Do not give the final answer.")

SUMMARY_INSTRUCTION = (
    "Another model's reasoning is below and may contain mistakes. Judge it: use it if it is sound, otherwise "
    "rely on the image. Then give only the final answer inside <output> and </output>.")

DIRECT_INSTRUCTION = "Answer the question. Give only the final answer inside <output> and </output>."

COT_INSTRUCTION = (
    "Think step by step inside <thoughts> and </thoughts>, then give only the final answer inside <output> "
    "and </output>.")


def format_question(question: str, choices: Sequence[str] | None = None) -> str:
  if not choices:
    return question
  options = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(choices))
  return f"{question}\n{options}\nAnswer with the option's letter."


def format_chain(steps: Sequence) -> str:
  """Steps (objects with title/content, or (title, content) pairs) -> the chain text agents read/write."""
  lines = []
  for i, s in enumerate(steps, 1):
    title, content = (s.title, s.content) if hasattr(s, "title") else s
    lines.append(f"Step {i}: {title}\n{content}")
  return "\n\n".join(lines)


def wrap_chain(chain: str) -> str:
  """Our chain block, as the reasoning agent writes it and the summary agent reads it."""
  return f"{THOUGHTS_OPEN}\n{chain}\n{THOUGHTS_CLOSE}"


def reasoning_messages(question: str, chain: str | None = None) -> list[dict]:
  """Reasoning agent: image + question -> <thoughts> chain </thoughts> (chain=None for inference)."""
  msgs = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}\n\n{REASONING_INSTRUCTION}"}]
  if chain is not None:
    msgs.append({"role": "assistant", "content": wrap_chain(chain)})
  return msgs


JUDGEMENTS = ("sound", "flawed")


def summary_messages(question: str, chain: str, answer: str | None = None, judgement: str | None = None
                     ) -> list[dict]:
  """Summary agent: image + question + chain -> [judgement line] <output> answer </output>.

  answer=None builds the inference prompt. judgement ("sound" | "flawed" | None) is the agent's verdict on
  the chain, trained from the chain's known quality; plain perception data has no chain and no verdict.
  """
  body = f"{IMAGE_PLACEHOLDER}\n{question}\n\n{SUMMARY_INSTRUCTION}\n{wrap_chain(chain)}"
  msgs = [{"role": "user", "content": body}]
  if answer is not None:
    verdict = f"Judgement: the reasoning is {judgement}.\n" if judgement else ""
    msgs.append({"role": "assistant", "content": f"{verdict}{OUTPUT_OPEN}{answer}{OUTPUT_CLOSE}"})
  return msgs


def parse_judgement(reply: str) -> str | None:
  for j in JUDGEMENTS:
    if f"the reasoning is {j}" in reply:
      return j
  return None


def direct_messages(question: str, answer: str | None = None) -> list[dict]:
  """Single-model baseline: image + question -> <output> answer </output>."""
  msgs = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}\n\n{DIRECT_INSTRUCTION}"}]
  if answer is not None:
    msgs.append({"role": "assistant", "content": f"{OUTPUT_OPEN}{answer}{OUTPUT_CLOSE}"})
  return msgs


def cot_messages(question: str, chain: str | None = None, answer: str | None = None) -> list[dict]:
  """Single-model chain-of-thought baseline: chain and answer in one reply."""
  msgs = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}\n\n{COT_INSTRUCTION}"}]
  if chain is not None and answer is not None:
    msgs.append({"role": "assistant", "content": f"{wrap_chain(chain)}{OUTPUT_OPEN}{answer}{OUTPUT_CLOSE}"})
  return msgs


def extract_tag(text: str, open_tag: str, close_tag: str) -> str | None:
  """The text between the last open_tag and the following close_tag (or the end); None if absent."""
  i = text.rfind(open_tag)
  if i < 0:
    return None
  rest = text[i + len(open_tag):]
  j = rest.find(close_tag)
  return (rest if j < 0 else rest[:j]).strip()


_STEP_BLOCK = re.compile(r"Step \d+: (.+?)\n(.+?)(?=\n\nStep \d+: |\Z)", re.DOTALL)


def parse_steps(chain: str) -> list[tuple[str, str]]:
  """format_chain's text -> its (title, content) steps, stripped; steps with an empty title or content dropped."""
  return [(t.strip(), c.strip()) for t, c in _STEP_BLOCK.findall(chain.strip()) if t.strip() and c.strip()]


def chain_of_reply(reply: str) -> str:
  """The text inside <thoughts> (stripped), or the whole reply if the tag is missing."""
  inner = extract_tag(reply, THOUGHTS_OPEN, THOUGHTS_CLOSE)
  return inner if inner is not None else reply


# ----------------------------------------------------------------------------------------------- prompt presets
# One switch for how both agents are prompted: "ours" (the functions above) or "insightv" (the exact text of
# Insight-V's released inference scripts, `insightv_compat`), so a converted Insight-V checkpoint reads what it
# was trained on. Chosen by the `prompts` field of every config that prompts or trains an agent.

ROLES = ("reasoning", "summary", "direct", "cot")


@dataclasses.dataclass(frozen=True)
class PromptPreset:
  """How the agents and the baselines are prompted and how their chains are written and read.

      preset = get_preset("insightv")
      msgs = preset.messages("reasoning", question)       # the reasoning agent's prompt
      chain = preset.unwrap_chain(reply)                  # its reply -> the chain
      msgs = preset.messages("summary", question, chain)  # the summary agent's prompt

  `messages(role, ...)` is the one way to an agent's conversation; the per-role builders behind it:
  reasoning_messages(question, chain=None), summary_messages(question, chain, answer=None, judgement=None),
  direct_messages(question, answer=None), cot_messages(question, chain=None, answer=None): chat messages (a
  training example when the reply is given); wrap_chain: chain -> the tagged block the agents read;
  unwrap_chain: a reply -> its chain; format_chain: steps -> chain text; parse_steps: chain text -> (title,
  content) steps (format_chain's inverse).
  """

  name: str
  reasoning_messages: Callable[..., list[dict]]
  summary_messages: Callable[..., list[dict]]
  direct_messages: Callable[..., list[dict]]
  cot_messages: Callable[..., list[dict]]
  wrap_chain: Callable[[str], str]
  unwrap_chain: Callable[[str], str]
  format_chain: Callable[[Sequence], str]
  parse_steps: Callable[[str], list[tuple[str, str]]]

  def messages(self, role: str, question: str, chain: str | None = None, *, answer: str | None = None,
               judgement: str | None = None) -> list[dict]:
    """The conversation of agent `role` (ROLES) about `question` (formatted with its options: format_question):
    the prompt, or a training example when the reply is given.

      reasoning  question -> chain                       (chain: the reply)
      summary    question + chain -> [judgement] answer  (chain: part of the prompt; answer: the reply)
      direct     question -> answer                      (chain must be None)
      cot        question -> chain + answer in one reply (both, or neither for the prompt)
    """
    if role == "reasoning":
      _no(answer=answer, judgement=judgement, role=role)
      return self.reasoning_messages(question, chain)
    if role == "summary":
      if chain is None:
        raise ValueError("the summary agent's conversation needs the chain it reads ('' for none)")
      return self.summary_messages(question, chain, answer, judgement)
    if role == "direct":
      _no(chain=chain, judgement=judgement, role=role)
      return self.direct_messages(question, answer)
    if role == "cot":
      _no(judgement=judgement, role=role)
      if (chain is None) != (answer is None):
        raise ValueError("a chain-of-thought training example needs both the chain and the answer")
      return self.cot_messages(question, chain, answer)
    raise ValueError(f"unknown agent role {role!r}; expected one of {ROLES}")


def _no(*, role: str, **given):
  extra = sorted(k for k, v in given.items() if v is not None)
  if extra:
    raise ValueError(f"the {role} agent's conversation takes no {', '.join(extra)}")


def _insightv_reasoning(question: str, chain: str | None = None) -> list[dict]:
  # The reply layout of Insight-V's reasoning data is not released; we train on the block its summary prompt shows.
  msgs = [{"role": "user", "content": compat.reasoning_prompt(question)}]
  if chain is not None:
    msgs.append({"role": "assistant", "content": compat.wrap_chain(chain)})
  return msgs


def _insightv_summary(question: str, chain: str, answer: str | None = None, judgement: str | None = None
                      ) -> list[dict]:
  # The released prompt asks for the answer without a verdict on the chain: `judgement` is not written.
  del judgement
  msgs = [{"role": "user", "content": compat.summary_prompt(question, chain)}]
  if answer is not None:
    msgs.append({"role": "assistant", "content": answer})
  return msgs


def _insightv_direct(question: str, answer: str | None = None) -> list[dict]:
  # LLaVA's plain prompt (infer_two_models.py's origin_question): the question carries its own answer format.
  msgs = [{"role": "user", "content": compat.with_image(question)}]
  if answer is not None:
    msgs.append({"role": "assistant", "content": answer})
  return msgs


def _insightv_parse_steps(chain: str) -> list[tuple[str, str]]:
  """compat.format_chain's "Title: content" lines -> steps (lines without ": " are not steps)."""
  steps = []
  for line in chain.strip().splitlines():
    title, sep, content = line.partition(": ")
    if sep and title.strip() and content.strip():
      steps.append((title.strip(), content.strip()))
  return steps


# the preset a config that names none gets (and a model folder that records none): the one home of that default
DEFAULT_PRESET = "ours"

PROMPT_PRESETS: dict[str, PromptPreset] = {
    "ours": PromptPreset("ours", reasoning_messages, summary_messages, direct_messages, cot_messages, wrap_chain,
                         chain_of_reply, format_chain, parse_steps),
    # Insight-V released no chain-of-thought baseline prompt: that baseline keeps ours.
    "insightv": PromptPreset("insightv", _insightv_reasoning, _insightv_summary, _insightv_direct, cot_messages,
                             compat.wrap_chain, compat.unwrap_chain, compat.format_chain, _insightv_parse_steps),
}


def get_preset(preset: str | PromptPreset) -> PromptPreset:
  """A preset by name ("ours" | "insightv"); a PromptPreset passes through."""
  if isinstance(preset, PromptPreset):
    return preset
  if preset not in PROMPT_PRESETS:
    raise ValueError(f"unknown prompt preset {preset!r}; choose from {sorted(PROMPT_PRESETS)}")
  return PROMPT_PRESETS[preset]


# ------------------------------------------------------------------------------------------------ token ids

def strip_image(messages: Sequence[dict]) -> list[dict]:
  """The conversation without its `<image>` placeholder lines: a prompt without an image, or a backend request
  (`data_gen.backends.ChatRequest`: the text, the image travelling beside it with the first user message)."""
  return [dict(m, content=m["content"].replace(IMAGE_PLACEHOLDER + "\n", "")) for m in messages]


def place_image(messages: Sequence[dict], n_images: int) -> list[dict]:
  """A prompt as the model reads it: no image -> no placeholder (strip_image); an image and no placeholder in the
  text (a backend request) -> the placeholder opens the first user turn, where every preset's reasoning prompt
  has it; otherwise unchanged."""
  if not n_images:
    return strip_image(messages)
  msgs = [dict(m) for m in messages]
  if not any(IMAGE_PLACEHOLDER in m["content"] for m in msgs):
    first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[first]["content"] = f"{IMAGE_PLACEHOLDER}\n{msgs[first]['content']}"
  return msgs


def encode(tokenizer, template: str | templates.ChatTemplate, messages: Sequence[dict], *, image_token_id: int,
           image_token_counts: Sequence[int] = (), prompt: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """An agent's conversation -> (ids [t] int32, loss mask [t] int32): the one tokenization of agent prompts.

  prompt=True: a prompt up to the reply (`infer.Agent`, and through it the samplers): `place_image`, then the
  template's generation prompt; the mask is all 0.
  prompt=False: a training example (the loader); the mask is 1 on the replies and their end-of-turn token. A
  one-reply conversation is the prompt's ids (as prompt=True gives them, without `place_image`) followed by the
  reply's own tokens: the model trains on exactly the ids it is prompted with, whatever the tokenizer does across
  the boundary (a byte-level BPE may merge "\n\n" at the end of a prompt but split it before a reply's word).
  Conversations with several replies (LLaVA JSON) are tokenized as one text.
  The k-th `<image>` becomes image_token_counts[k] image tokens.
  """
  tpl = templates.TEMPLATES[template] if isinstance(template, str) else template
  if prompt:
    return templates.encode_chat(tokenizer, tpl, place_image(messages, len(image_token_counts)),
                                 image_token_id=image_token_id, image_token_counts=image_token_counts,
                                 add_generation_prompt=True)
  *head, reply = messages
  if reply["role"] != "assistant" or any(m["role"] == "assistant" for m in head):
    return templates.encode_chat(tokenizer, tpl, messages, image_token_id=image_token_id,
                                 image_token_counts=image_token_counts)
  ids, mask = templates.encode_chat(tokenizer, tpl, head, image_token_id=image_token_id,
                                    image_token_counts=image_token_counts, add_generation_prompt=True)
  text, spans = tpl.render(messages)
  head_text, _ = tpl.render(head, add_generation_prompt=True)
  if not text.startswith(head_text):
    raise ValueError(f"template {tpl.name!r}: the conversation does not start with its prompt")
  n = len(head_text)
  reply_ids, reply_mask = templates.encode_text(tokenizer, text[n:], [(a - n, b - n) for a, b in spans if b > n])
  if (reply_ids == image_token_id).any():
    raise ValueError(f"a reply holds an {IMAGE_PLACEHOLDER} placeholder")
  return np.concatenate([ids, reply_ids]), np.concatenate([mask, reply_mask])


def prompt_ids(tokenizer, template: str | templates.ChatTemplate, preset: str | PromptPreset, role: str,
               question: str, chain: str | None = None, *, image_token_id: int,
               image_token_counts: Sequence[int] = ()) -> np.ndarray:
  """The ids [t] agent `role` is prompted with about `question` (summary: and `chain`), up to its reply: what
  `infer.Agent` sends and what the loader's training example holds before the reply (RL rollouts start here)."""
  msgs = get_preset(preset).messages(role, question, chain)
  return encode(tokenizer, template, msgs, image_token_id=image_token_id, image_token_counts=image_token_counts,
                prompt=True)[0]
