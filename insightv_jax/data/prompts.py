"""The agents' prompts and tags: what the reasoning agent, the summary agent and the baselines are asked.

    msgs = reasoning_messages(question)              # inference prompt of the reasoning agent
    msgs = summary_messages(question, chain, answer, "sound")   # a summary-agent training example
    ids, mask = templates.encode_chat(tokenizer, template, msgs, ...)

Messages are chat-template messages (`templates.py`) with the `<image>` placeholder in the user turn.
The chain is wrapped in `<thoughts> ... </thoughts>`, the answer in `<output> ... </output>` (Insight-V's
special tokens; `AGENT_TOKENS` are added to the tokenizer).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from insightv_jax.data import insightv_compat as compat
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


def reasoning_messages(question: str, chain: str | None = None) -> list[dict]:
  """Reasoning agent: image + question -> <thoughts> chain </thoughts> (chain=None for inference)."""
  msgs = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}\n\n{REASONING_INSTRUCTION}"}]
  if chain is not None:
    msgs.append({"role": "assistant", "content": f"{THOUGHTS_OPEN}\n{chain}\n{THOUGHTS_CLOSE}"})
  return msgs


JUDGEMENTS = ("sound", "flawed")


def summary_messages(question: str, chain: str, answer: str | None = None, judgement: str | None = None
                     ) -> list[dict]:
  """Summary agent: image + question + chain -> [judgement line] <output> answer </output>.

  answer=None builds the inference prompt. judgement ("sound" | "flawed" | None) is the agent's verdict on
  the chain, trained from the chain's known quality; plain perception data has no chain and no verdict.
  """
  body = f"{IMAGE_PLACEHOLDER}\n{question}\n\n{SUMMARY_INSTRUCTION}\n{THOUGHTS_OPEN}\n{chain}\n{THOUGHTS_CLOSE}"
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
    msgs.append({"role": "assistant", "content": f"{THOUGHTS_OPEN}\n{chain}\n{THOUGHTS_CLOSE}"
                                                 f"{OUTPUT_OPEN}{answer}{OUTPUT_CLOSE}"})
  return msgs


def extract_tag(text: str, open_tag: str, close_tag: str) -> str | None:
  """The text between the last open_tag and the following close_tag (or the end); None if absent."""
  i = text.rfind(open_tag)
  if i < 0:
    return None
  rest = text[i + len(open_tag):]
  j = rest.find(close_tag)
  return (rest if j < 0 else rest[:j]).strip()


# ----------------------------------------------------------------------------------------------- prompt presets
# One switch for how both agents are prompted: "ours" (the functions above) or "insightv" (the exact text of
# Insight-V's released inference scripts, `insightv_compat`), so a converted Insight-V checkpoint reads what it
# was trained on.


@dataclasses.dataclass(frozen=True)
class PromptPreset:
  """How the agents and the baselines are prompted and how their chains are written and read.

      preset = get_preset("insightv")
      msgs = preset.reasoning_messages(question)          # the reasoning agent's prompt
      chain = preset.unwrap_chain(reply)                  # its reply -> the chain
      msgs = preset.summary_messages(question, chain)     # the summary agent's prompt

  reasoning_messages(question, chain=None), summary_messages(question, chain, answer=None, judgement=None),
  direct_messages(question, answer=None), cot_messages(question, chain=None, answer=None): chat messages (a
  training example when the reply is given); wrap_chain: chain -> the tagged block the agents read;
  unwrap_chain: a reply -> its chain; format_chain: steps -> chain text.
  """

  name: str
  reasoning_messages: Callable[..., list[dict]]
  summary_messages: Callable[..., list[dict]]
  direct_messages: Callable[..., list[dict]]
  cot_messages: Callable[..., list[dict]]
  wrap_chain: Callable[[str], str]
  unwrap_chain: Callable[[str], str]
  format_chain: Callable[[Sequence], str]


def wrap_chain(chain: str) -> str:
  """Our chain block, as reasoning_messages / summary_messages write it."""
  return f"{THOUGHTS_OPEN}\n{chain}\n{THOUGHTS_CLOSE}"


def chain_of_reply(reply: str) -> str:
  """The text inside <thoughts> (stripped), or the whole reply if the tag is missing."""
  inner = extract_tag(reply, THOUGHTS_OPEN, THOUGHTS_CLOSE)
  return inner if inner is not None else reply


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


PROMPT_PRESETS: dict[str, PromptPreset] = {
    "ours": PromptPreset("ours", reasoning_messages, summary_messages, direct_messages, cot_messages, wrap_chain,
                         chain_of_reply, format_chain),
    # Insight-V released no chain-of-thought baseline prompt: that baseline keeps ours.
    "insightv": PromptPreset("insightv", _insightv_reasoning, _insightv_summary, _insightv_direct, cot_messages,
                             compat.wrap_chain, compat.unwrap_chain, compat.format_chain),
}


def get_preset(preset: str | PromptPreset) -> PromptPreset:
  """A preset by name ("ours" | "insightv"); a PromptPreset passes through."""
  if isinstance(preset, PromptPreset):
    return preset
  if preset not in PROMPT_PRESETS:
    raise ValueError(f"unknown prompt preset {preset!r}; choose from {sorted(PROMPT_PRESETS)}")
  return PROMPT_PRESETS[preset]
