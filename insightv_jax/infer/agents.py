"""The two agents and the single-model baselines, run in batches through the KV-cache sampler.

    reasoner = Agent(model_r, tokenizer, "llama3", GenerationConfig(max_new_tokens=512))
    summarizer = Agent(model_s, tokenizer, "llama3", GenerationConfig(max_new_tokens=32))
    outputs = two_agents(reasoner, summarizer, examples)  # [{"chain", "reply", "judgement"}, ...]
    outputs = direct(model_agent, examples)                # baseline: answer directly
    outputs = chain_of_thought(model_agent, examples)      # baseline: chain and answer from one model

Either agent may be the same model. An `Example` is (id, question text with its options, PIL image). Each agent
is prompted by its preset (`prompts.PROMPT_PRESETS`, the `prompts` field of the configs): "ours", or "insightv"
for a released Insight-V checkpoint (its own prompts, with the `llava_llama_3` template). Conversations come from
`preset.messages(role, ...)` and are tokenized by `prompts.encode(..., prompt=True)`, exactly as the loader
tokenizes the training examples:

    reasoner = Agent(model_r, tokenizer, "llava_llama_3", GenerationConfig(max_new_tokens=1024), preset="insightv")
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Sequence

from PIL import Image

from insightv_jax.data import prompts, templates
from insightv_jax.data.images import ImageProcessorConfig, preprocess
from insightv_jax.infer import replies as replies_lib

# The tags that end each role's reply besides the template's end-of-turn (`Agent(stop_tokens=...)`): a reasoning
# reply ends with its chain (</thoughts>); a chain-of-thought reply must not, its <output> follows the chain.
REASONING_STOP_TOKENS = (prompts.THOUGHTS_CLOSE, prompts.OUTPUT_CLOSE)
COT_STOP_TOKENS = (prompts.OUTPUT_CLOSE,)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """max_new_tokens, temperature (0 = greedy), top_p, top_k, batch_size (rows per generate call: prompts, or
  prompts x samples when `Agent.complete` asks several samples per prompt), seed."""

  max_new_tokens: int = 256
  temperature: float = 0.0
  top_p: float = 1.0
  top_k: int = 0
  batch_size: int = 8
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Example:
  id: str
  question: str  # already formatted with its options (prompts.format_question)
  image: Image.Image | None


class Agent:
  """A model + tokenizer + chat template that answers batches of conversations."""

  def __init__(self, model, tokenizer, template: str, gen: GenerationConfig = GenerationConfig(),
               stop_tokens: Sequence[str] = REASONING_STOP_TOKENS,
               preset: str | prompts.PromptPreset = prompts.DEFAULT_PRESET):
    """stop_tokens: tags that end a reply besides the template's end-of-turn (a chain-of-thought reply must
    not stop at </thoughts>, its answer follows). preset: how `reason` / `two_agents` / the baselines prompt
    this agent ("ours" | "insightv", or a `prompts.PromptPreset`)."""
    self.model, self.tokenizer, self.gen = model, tokenizer, gen
    self.prompts = prompts.get_preset(preset)
    self.template = templates.TEMPLATES[template]
    self.proc = ImageProcessorConfig.for_model(model.cfg)
    self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    self.eos_ids = replies_lib.stop_ids(tokenizer, self.template, stop_tokens)
    self.stop_strings = [self.template.stop]

  def with_generation(self, **changes) -> Agent:
    """The same agent with other generation settings (shares the model and tokenizer)."""
    other = copy.copy(self)
    other.gen = dataclasses.replace(self.gen, **changes)
    return other

  def complete(self, conversations: Sequence[list[dict]], images: Sequence[Image.Image | None], *,
               seed_offset: int = 0, seeds: Sequence[int] | None = None, num_samples: int = 1) -> list[str]:
    """Generates num_samples replies per conversation (each has at most one <image>, matched with `images`; a
    conversation without the placeholder gets it at the start of its first user turn: `prompts.place_image`).

    Returns len(conversations) * num_samples replies, prompt-major: reply i * num_samples + s is sample s of
    conversation i. With num_samples > 1 each conversation is prefilled once and its samples decode from
    copies of its KV cache (`generate(..., num_samples=n)`); a reply equals the one the same conversation
    repeated would get with the same seed. seeds: one sampling seed per reply (default: gen.seed + seed_offset
    + reply index). Each generate call decodes gen.batch_size rows: max(1, batch_size // num_samples)
    conversations x num_samples.
    """
    n = int(num_samples)
    if n < 1:
      raise ValueError(f"num_samples={num_samples}; expected >= 1")
    if seeds is None:
      seeds = [self.gen.seed + seed_offset + i for i in range(len(conversations) * n)]
    if len(seeds) != len(conversations) * n:
      raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations x {n} samples")
    out: list[str] = []
    bs = max(1, self.gen.batch_size // n)  # conversations per generate call
    for start in range(0, len(conversations), bs):
      out.extend(self._batch(conversations[start:start + bs], images[start:start + bs],
                             seeds[start * n:(start + bs) * n], n, bs))
    return out

  def _batch(self, convs, images, seeds: Sequence[int], n: int, prompts_per_call: int) -> list[str]:
    """One generate call (`replies.sample_replies`, as GRPO rollouts run it): prompts left-padded to a length
    bucket, padded to `prompts_per_call` prompts (one compiled program per prompt-length bucket), n samples each;
    each reply cut after its first stop id (a sampled <image> ends it before that token)."""
    encoded, slots = [], []  # slots: `preprocess` outputs, None = no image (stack_batch's empty slot)
    for conv, image in zip(convs, images):
      counts = []
      if image is not None:
        tiles, (h, w) = preprocess(image, self.proc)
        slots.append((tiles, (h, w)))
        counts.append(self.proc.num_image_tokens(h, w))
      else:
        slots.append(None)
      ids, _ = prompts.encode(self.tokenizer, self.template, conv, image_token_id=self.model.cfg.image_token_index,
                              image_token_counts=counts, prompt=True)
      encoded.append(ids)
    g = self.gen
    out = replies_lib.sample_replies(self.model, encoded, slots, rows=prompts_per_call, num_samples=n,
                                     max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                                     top_k=g.top_k, eos_ids=self.eos_ids, pad_id=self.pad_id, seeds=seeds,
                                     proc=self.proc)
    return [replies_lib.reply_text(self.tokenizer, r, self.stop_strings) for r in out]


def reason(reasoner: Agent, examples: Sequence[Example], *, seed_offset: int = 0) -> list[str]:
  """The reasoning agent's chains, cut out of its replies by its preset ("ours": the text inside <thoughts>,
  or the whole reply if the tag is missing)."""
  p = reasoner.prompts
  replies = reasoner.complete([p.messages("reasoning", e.question) for e in examples], [e.image for e in examples],
                              seed_offset=seed_offset)
  return [p.unwrap_chain(r) for r in replies]


def two_agents(reasoner: Agent, summarizer: Agent, examples: Sequence[Example]) -> list[dict]:
  """Insight-V: the reasoner writes a chain, the summarizer judges it and answers (`judgement`: its verdict).

  Each agent is prompted by its own preset (the reasoner's cuts the chain, the summarizer's shows it).
  """
  chains = reason(reasoner, examples)
  replies = summarizer.complete([summarizer.prompts.messages("summary", e.question, c)
                                 for e, c in zip(examples, chains)], [e.image for e in examples])
  return [{"chain": c, "reply": r, "judgement": prompts.parse_judgement(r)} for c, r in zip(chains, replies)]


def two_agent(reasoner: Agent, summarizer: Agent, examples: Sequence[Example]) -> list[dict]:
  """Deprecated spelling of `two_agents` (removed in the next release)."""
  warnings.warn("infer.two_agent is deprecated; use infer.two_agents", DeprecationWarning, stacklevel=2)
  return two_agents(reasoner, summarizer, examples)


def direct(agent: Agent, examples: Sequence[Example]) -> list[dict]:
  """Baseline: one model answers each question directly (no chain)."""
  replies = agent.complete([agent.prompts.messages("direct", e.question) for e in examples],
                           [e.image for e in examples])
  return [{"chain": "", "reply": r, "judgement": None} for r in replies]


def chain_of_thought(agent: Agent, examples: Sequence[Example]) -> list[dict]:
  """Baseline: one model writes its chain and its answer in one reply (`chain`: the text inside <thoughts>)."""
  replies = agent.complete([agent.prompts.messages("cot", e.question) for e in examples],
                           [e.image for e in examples])
  return [{"chain": agent.prompts.unwrap_chain(r), "reply": r, "judgement": None} for r in replies]
