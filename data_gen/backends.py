"""Generator backends behind one protocol: `backend.chat(requests) -> replies` (one string per request).

  ScriptedBackend  the synthetic world's teacher, answering the step-by-step protocol (tests, demo)
  LocalBackend     our JAX model through the batched KV-cache sampler (any checkpoint, sharded)
  OpenAIBackend    any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API): images as
                   data URLs, bounded concurrency, retries with exponential backoff on 429 / 5xx / timeouts,
                   the API key read from an environment variable (never logged), an on-disk response cache
                   (the HTTP client itself is `insightv_jax.utils.openai_client.OpenAIClient`)

A `ChatRequest` carries the conversation, the image (encoded bytes), sampling parameters and a `seed`
that is a pure function of what is asked (question, path, step, attempt), so every backend that honours
seeds returns the same reply for the same request, in any batch and after any restart.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import random
from typing import Any, Protocol, Sequence

from insightv_jax.utils import openai_client


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  """messages: [{"role", "content"}] (content is text; the image goes with the first user message)."""

  messages: tuple[dict, ...]
  image: bytes | None = None
  temperature: float = 0.7
  top_p: float = 0.95
  max_tokens: int = 512
  seed: int = 0
  meta: dict = dataclasses.field(default_factory=dict)  # for scripted backends: question id, path index ...

  def cache_key(self) -> str:
    payload = json.dumps({"m": self.messages, "i": hashlib.sha256(self.image or b"").hexdigest(),
                          "t": self.temperature, "p": self.top_p, "n": self.max_tokens, "s": self.seed},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class Backend(Protocol):
  name: str

  def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
    """One reply per request; None when the request failed for good (the caller counts and drops it)."""


def stable_seed(*parts: Any) -> int:
  return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


# ------------------------------------------------------------------------------------------ scripted

class ScriptedBackend:
  """Answers the progressive protocol from the synthetic world's teacher.

  For path k of a question it picks (deterministically from the request seed) a correct chain or one of
  the teacher's flawed variants, then replies one JSON step per call and finally the answer. A fraction
  `malformed_rate` of step replies are deliberately malformed, to exercise the retry logic.
  """

  name = "scripted"

  def __init__(self, world, mistake_rate: float = 0.5, malformed_rate: float = 0.0):
    self.world, self.mistake_rate, self.malformed_rate = world, mistake_rate, malformed_rate

  def chat(self, requests):
    return [self._one(r) for r in requests]

  def _one(self, req: ChatRequest) -> str:
    from data_gen.synthetic.tasks import MISTAKES
    from insightv_jax.data import prompts
    q, k = req.meta["question"], req.meta["path_index"]
    rng = random.Random(stable_seed(q.id, k, "choice"))
    mistake = rng.choice(MISTAKES) if rng.random() < self.mistake_rate else None
    task = self.world.teacher_task(q, mistake, sample=k)
    if req.meta.get("stage") == "answer":
      return task.answer
    if req.meta.get("stage") == "chain":  # a whole chain, as the reasoning agent writes it
      return f"{prompts.THOUGHTS_OPEN}\n{prompts.format_chain(task.steps)}\n{prompts.THOUGHTS_CLOSE}"
    step = req.meta["step_index"]
    if random.Random(req.seed).random() < self.malformed_rate:
      return '{"title": "oops", "content": '  # truncated JSON
    s = task.steps[min(step, len(task.steps) - 1)]
    last = step >= len(task.steps) - 1
    return json.dumps({"title": s.title, "content": s.content, "next_action": "summary" if last else "continue"})


# --------------------------------------------------------------------------------------------- local

class LocalBackend:
  """Our model through `insightv_jax.infer.Agent` (chat template, AnyRes, batched sampler). A request's image
  goes where the agent's prompts put it: the Agent tokenizes every conversation with `prompts.encode`, which
  opens the first user turn with the `<image>` placeholder when the text has none.

  Requests that ask the same conversation and image with the same sampling parameters (the N paths of a
  question: `synthesize_chains`, and every path's first step in `synthesize`) are ONE prompt sampled N times:
  it is prefilled once and its N rows decode from copies of its KV cache (`Agent.complete(...,
  num_samples=N)`). Each request keeps its own seed, and a row's sample depends only on its seed and prompt,
  so the replies are the ones the repeated requests got before grouping.
  """

  name = "local"

  def __init__(self, agent):
    self.agent = agent

  def chat(self, requests):
    from insightv_jax.data.images import decode
    out: dict[int, str] = {}
    # sampling parameters are shared per call: group requests that agree on them ...
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
      groups.setdefault((r.temperature, r.top_p, r.max_tokens), []).append(i)
    for (temperature, top_p, max_tokens), idx in groups.items():
      agent = self.agent.with_generation(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens)
      # ... then requests for the same conversation and image: one prompt, several samples ...
      same: dict[tuple, list[int]] = {}
      for i in idx:
        same.setdefault((json.dumps(requests[i].messages, sort_keys=True), requests[i].image), []).append(i)
      # ... and prompts with the same number of samples go through one `complete` call
      by_count: dict[int, list[list[int]]] = {}
      for members in same.values():
        by_count.setdefault(len(members), []).append(members)
      for n, prompts in by_count.items():
        convs, images = [], []
        for members in prompts:
          r = requests[members[0]]
          convs.append(list(r.messages))  # the Agent places the image (`insightv_jax.data.prompts.place_image`)
          images.append(decode(r.image) if r.image is not None else None)
        order = [i for members in prompts for i in members]  # prompt-major, as `complete` returns them
        replies = agent.complete(convs, images, seeds=[requests[i].seed for i in order], num_samples=n)
        out.update(zip(order, replies))
    return [out[i] for i in range(len(requests))]


# -------------------------------------------------------------------------------------------- openai

class OpenAIBackend:
  """ChatRequests over `insightv_jax.utils.openai_client.OpenAIClient` (the `openai` package's HTTP and retries,
  our on-disk cache and counters): images become data URLs of their own MIME type, requests run `concurrency` at
  a time, and each reply is cached under the request's own `cache_key()` (so caches written before the client
  moved stay valid)."""

  name = "openai"

  def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", cache_dir: str | None = None,
               concurrency: int = 8, max_retries: int = 5, timeout_s: float = 60.0, backoff_s: float = 1.0,
               max_backoff_s: float = 30.0):
    self.client = openai_client.OpenAIClient(base_url, model, api_key_env=api_key_env, cache_dir=cache_dir,
                                             max_retries=max_retries, timeout_s=timeout_s, backoff_s=backoff_s,
                                             max_backoff_s=max_backoff_s)
    self.base_url, self.model, self.cache_dir, self.concurrency = self.client.base_url, model, cache_dir, concurrency

  @property
  def stats(self) -> dict:
    """requests, cache_hits, retries, failures, http_errors, timeouts, bad_responses (the client's counters)."""
    return self.client.stats

  def __repr__(self):  # never show the key
    return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, key={'set' if self.client.has_key else 'unset'})"

  def chat(self, requests):
    with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
      return list(pool.map(self._one, requests))

  def _payload(self, req: ChatRequest) -> dict:
    messages = []
    for i, m in enumerate(req.messages):
      if i == 0 and m["role"] == "user" and req.image is not None:
        url = openai_client.image_data_url(req.image)  # the MIME type read from the bytes
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": m["content"]}]
        messages.append({"role": "user", "content": content})
      else:
        messages.append({"role": m["role"], "content": m["content"]})
    return {"model": self.model, "messages": messages, "temperature": req.temperature, "top_p": req.top_p,
            "max_tokens": req.max_tokens, "seed": req.seed}

  def _one(self, req: ChatRequest) -> str | None:
    return self.client.complete(self._payload(req), cache_key=req.cache_key())
