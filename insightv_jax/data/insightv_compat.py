"""Insight-V's and LLaVA-NeXT's own prompt text, copied exactly (typos included) for their released checkpoints.

A released Insight-V agent was trained and evaluated on these strings; prompted with ours it would read text it
never saw. `prompts.PROMPT_PRESETS["insightv"]` and the `llava_llama_3` / `qwen_1_5` chat templates are built
from this module. Every constant names the file it was copied from:

    Insight-V   dongyh20/Insight-V (5e9c6f9): infer_two_models.py, infer_reason_model.py, infer_summary_model.py,
                llava/constants.py
    LLaVA-NeXT  LLaVA-VL/LLaVA-NeXT: llava/conversation.py, llava/train/train.py
    VLMEvalKit  open-compass/VLMEvalKit: vlmeval/vlm/insight_v.py (the wrapper behind Insight-V's published numbers)

What infer_two_models.py sends, for a question Q (no `<image>`) and the reasoning agent's reply R:

    reasoning agent, user turn   "<image>\\n" + Q + REASONING_SUFFIX
    chain                        R.split("<thoughts>")[-1].split("</thoughts>")[0]      (not stripped)
    summary agent, user turn     SUMMARY_INSTRUCTION + "\\n\\nQUESTION: " + "<image>\\n" + Q
                                 + "\\n\\nREASON PROCESS: " + "<thoughts>\\n" + chain + "</thoughts>\\n"

both in a LLaMA-3 chat with LLAVA_LLAMA3_SYSTEM as the system turn (templates.TEMPLATES["llava_llama_3"]).

Known differences we do not copy (token level, not text):
- infer_two_models.py's `preprocess_llama3` encodes the generation prompt with `tokenizer.encode(...)`, which on
  the LLaMA-3 tokenizer prepends a second `<|begin_of_text|>` before `<|start_header_id|>assistant`. Training
  (LLaVA-NeXT's train.py) never had it; our template renders the prompt the model was trained on.
- VLMEvalKit's wrapper puts the whole rendered `llava_llama_3` prompt inside the user turn of a second LLaMA-3
  chat, and its summary question carries no `<image>`.
- LLaVA-NeXT's train.py also trains on the assistant header and on every `<|begin_of_text|>`, `<|start_header_id|>`,
  `<|end_header_id|>`, `<|eot_id|>` (Qwen: `<|im_start|>`, `<|im_end|>`, "\\n") token of the conversation; our loss
  mask is the assistant replies and their end-of-turn token (`apply_chat_template`'s assistant mask).

This module imports nothing from the package (the templates and the prompts both read it).
"""

from __future__ import annotations

from typing import Sequence

# Insight-V llava/constants.py: DEFAULT_IMAGE_TOKEN, THINK_START_TOKEN, THINK_END_TOKEN.
IMAGE_TOKEN = "<image>"
THINK_START, THINK_END = "<thoughts>", "</thoughts>"

# Insight-V infer_two_models.py (and infer_reason_model.py, infer_summary_model.py): preprocess_llama3's default
# system_message. The same text is LLaVA-NeXT llava/conversation.py conv_llava_llama_3.system and the default of
# llava/train/train.py preprocess_llama3.
LLAVA_LLAMA3_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.")

# LLaVA-NeXT llava/conversation.py conv_qwen ("qwen_1_5", "qwen_2") and llava/train/train.py preprocess_qwen's
# default system_message.
QWEN_SYSTEM = "You are a helpful assistant."

# Insight-V infer_two_models.py (reason_question) and infer_reason_model.py: appended to the question.
REASONING_SUFFIX = "\n\nPerform step-by-step reasoning of the problem. Only provide the reasoning process."

# Insight-V infer_two_models.py (summary_question) and infer_summary_model.py, up to "QUESTION: ". Exact, with
# "shold" and the two spaces in "QUESTION  without".
SUMMARY_INSTRUCTION = (
    "I will give you a reasoning process of the question. You should determine whether the reasoning process is "
    "correct about the question. If it is correct, please summarize the answer based on the reasoning process. If "
    "it is incorrect, answer the question and ignore the reasoning process. You shold directly give the "
    "summarization or answer as you are directly answer the QUESTION  without saying your judgement about the "
    "reasoning process.")

# Insight-V infer_two_models.py summary_question: the labels around the question and the chain.
QUESTION_LABEL = "\n\nQUESTION: "
REASON_PROCESS_LABEL = "\n\nREASON PROCESS: "

# Insight-V infer_two_models.py: the chain goes into the summary prompt as "<thoughts>\n" + chain + "</thoughts>\n".
CHAIN_OPEN = THINK_START + "\n"
CHAIN_CLOSE = THINK_END + "\n"


def with_image(question: str) -> str:
  """infer_two_models.py's origin_question: the image token on its own line, then the question."""
  return f"{IMAGE_TOKEN}\n{question}"


def reasoning_prompt(question: str) -> str:
  """The reasoning agent's user turn (infer_two_models.py reason_question)."""
  return with_image(question) + REASONING_SUFFIX


def wrap_chain(chain: str) -> str:
  """The chain as the summary prompt shows it (infer_two_models.py): "<thoughts>\\n" + chain + "</thoughts>\\n"."""
  return CHAIN_OPEN + chain + CHAIN_CLOSE


def unwrap_chain(reply: str) -> str:
  """The reasoning agent's reply -> its chain, as infer_two_models.py cuts it (no stripping; the whole reply
  after the last <thoughts> when </thoughts> is missing)."""
  return reply.split(THINK_START)[-1].split(THINK_END)[0]


def summary_prompt(question: str, chain: str) -> str:
  """The summary agent's user turn (infer_two_models.py summary_question); chain as unwrap_chain returns it."""
  return SUMMARY_INSTRUCTION + QUESTION_LABEL + with_image(question) + REASON_PROCESS_LABEL + wrap_chain(chain)


def format_chain(steps: Sequence) -> str:
  """Steps (objects with title/content, or (title, content) pairs) -> one "Title: content" line per step.

  The layout of the chain in Insight-V infer_summary_model.py (its reason_chain example); the generator's steps
  are JSON {"title", "content"} objects (data_generation/data_generation.py).
  """
  lines = []
  for s in steps:
    title, content = (s.title, s.content) if hasattr(s, "title") else s
    lines.append(f"{title}: {content}")
  return "\n".join(lines)
