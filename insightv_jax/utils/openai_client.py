"""Our client for OpenAI-compatible chat-completions servers (vLLM, SGLang, hosted APIs), over the `openai` package.

    client = OpenAIClient("http://127.0.0.1:8000/v1", "Qwen2-72B-Instruct", cache_dir="/runs/eval/llm_cache")
    reply = client.chat([{"role": "user", "content": "2 + 2 = ?"}], temperature=0, max_tokens=16)   # str | None
    client.stats   # {"requests": 1, "cache_hits": 0, "retries": 0, "failures": 0, ...}
    image_data_url(png_or_jpeg_bytes)   # "data:image/jpeg;base64,..." (the MIME type read from the bytes)

The HTTP, the timeouts and the retries are the `openai` package's (`openai.OpenAI(max_retries=, timeout=)`: it
retries 408 / 409 / 429 / 5xx, timeouts and dropped connections with exponential backoff and jitter, honouring
Retry-After). What this module adds for every request:
  - a reply that is no chat completion (not JSON, no choices, content not a string) is retried like a 502: the
    transport below turns it into one, so the package's retry loop is the only one;
  - gives up on other HTTP errors at once (a 400 will not get better), returning None;
  - stops on a failure that will not heal, raising `ServerError` (an `InputError`) naming the URL and the reason:
    401 / 403 / 404, an unknown model, or a server that refuses connections (or whose host name does not
    resolve) through all the retries; from then on every request of this client raises at once (cached replies
    are still served), so a run stops within its retries instead of recording every request as failed;
  - caches each successful reply on disk as <cache_dir>/<key>.json, the key a SHA-256 of the request
    (model + messages + parameters) unless the caller names one, so a rerun is answered from disk;
  - counts requests, cache hits, retries, failures, HTTP errors, timeouts and malformed replies (`stats`);
  - reads the API key from an environment variable and never logs or repr()s it (no key: the placeholder
    "EMPTY" that vLLM's and SGLang's docs use for servers started without one).

Thread-safe: several threads may share one client (the stats are counted under a lock). It imports only
`insightv_jax.utils.inputs`, `openai` and PIL, so every layer of the library (and data_gen) can use it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import socket
import sys
import threading
from typing import Any, Sequence

import openai
from PIL import Image

from insightv_jax.utils.inputs import InputError

log = logging.getLogger(__name__)

FATAL_STATUS = {401: "unauthorized (check the API key in the environment variable named by api_key_env)",
                403: "forbidden (the key has no access to this model)",
                404: "not found (check the base URL and the model name {model!r})"}  # retrying will not help
STAT_KEYS = ("requests", "cache_hits", "retries", "failures", "http_errors", "timeouts", "bad_responses")
# the HTTP library under the `openai` package (httpx, or httpx2 in newer releases): its transport and Response
_httpx = sys.modules[openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0]]


class ServerError(InputError):
  """The server failed in a way that will not heal (see the module docstring); the message names the URL."""


class OpenAIClient:
  """chat / complete over `openai.OpenAI`, with an on-disk cache, counters and a stop on a dead server."""

  def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", cache_dir: str | None = None,
               max_retries: int = 5, timeout_s: float = 60.0, backoff_s: float = 1.0, max_backoff_s: float = 30.0):
    """max_retries, timeout_s: the package's own; backoff_s / max_backoff_s scale and cap its backoff (its first
    retry waits backoff_s, each next one twice as long, with jitter)."""
    self.base_url, self.model = base_url.rstrip("/"), model
    self._api_key = os.environ.get(api_key_env, "")
    self.cache_dir = cache_dir
    self.stats = {k: 0 for k in STAT_KEYS}
    self.fatal: str | None = None  # why the server will not answer (set once; every later request raises)
    self._lock = threading.Lock()
    self._attempt = threading.local()  # per request: attempts sent, and why the last one could not connect
    transport = _CountingTransport(self, _httpx.HTTPTransport())
    self._openai = _Backoff(base_url=self.base_url, api_key=self._api_key or "EMPTY", max_retries=max_retries,
                            timeout=timeout_s, http_client=openai.DefaultHttpxClient(transport=transport))
    self._openai.backoff = (backoff_s, max_backoff_s)
    if cache_dir:
      os.makedirs(cache_dir, exist_ok=True)

  @property
  def has_key(self) -> bool:
    return bool(self._api_key)

  def __repr__(self):  # never show the key
    return f"OpenAIClient({self.base_url!r}, model={self.model!r}, key={'set' if self.has_key else 'unset'})"

  def chat(self, messages: Sequence[dict], *, cache_key: str | None = None, **params: Any) -> str | None:
    """The reply's text for `messages` (sampling `params` such as temperature, top_p, max_tokens, seed go into
    the request as given), or None when the request failed for good."""
    payload = {"model": self.model, "messages": list(messages), **params}
    return self.complete(payload, cache_key=cache_key)

  def complete(self, payload: dict, *, cache_key: str | None = None) -> str | None:
    """Sends a whole request body (its "model" included); `cache_key` defaults to request_key(payload)."""
    self._count("requests")
    path = self._cache_path(cache_key or request_key(payload))
    if path and os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        reply = json.load(f)["reply"]
      self._count("cache_hits")
      return reply
    self._raise_if_fatal()
    reply = self._send(payload)
    if reply is None:
      self._count("failures")
    elif path:
      _write_json_atomic(path, {"reply": reply})
    return reply

  # ------------------------------------------------------------------------------------------ internals

  def _count(self, key: str, n: int = 1) -> None:
    with self._lock:
      self.stats[key] += n

  def _raise_if_fatal(self) -> None:
    if self.fatal:
      raise ServerError(f"{self.base_url}/chat/completions: {self.fatal}")

  def _give_up(self, reason: str) -> None:
    """Records a failure that will not heal and raises it (the first reason wins)."""
    with self._lock:
      self.fatal = self.fatal or reason
    self._count("failures")
    self._raise_if_fatal()

  def _cache_path(self, key: str) -> str | None:
    return os.path.join(self.cache_dir, key + ".json") if self.cache_dir else None

  def _send(self, payload: dict) -> str | None:
    """One request through the package (its retries included); None when it failed for good."""
    self._attempt.sent, self._attempt.unreachable = 0, None
    try:
      completion = self._openai.chat.completions.create(**payload)
      return completion.choices[0].message.content  # a str: the transport retried every other reply
    except openai.APIStatusError as e:
      detail = _error_detail(e)
      if e.status_code in FATAL_STATUS or (e.status_code == 400 and _names_unknown_model(detail)):
        what = FATAL_STATUS.get(e.status_code, "bad request").format(model=self.model)
        self._give_up(f"HTTP {e.status_code} {what}" + (f": {detail}" if detail else ""))
      log.warning("openai client: HTTP %d (%s) from %s", e.status_code,
                  "after the retries" if e.status_code >= 500 or e.status_code in (408, 409, 429) else "not retried",
                  self.base_url)
      return None
    except openai.APIConnectionError:  # timeouts included, after the retries
      if self._attempt.unreachable:
        self._give_up(f"{self._attempt.unreachable} on all {self._attempt.sent} attempts; is the server running at "
                      "this URL?")
      return None
    finally:
      self._count("retries", max(0, self._attempt.sent - 1))


class _Backoff(openai.OpenAI):
  """The package's client with its backoff scaled to `backoff = (first delay, cap)` seconds (its own schedule,
  Retry-After and jitter included, starts at 0.5 s)."""

  backoff = (0.5, 8.0)

  def _calculate_retry_timeout(self, *args, **kwargs) -> float:
    first, cap = self.backoff
    return min(cap, super()._calculate_retry_timeout(*args, **kwargs) * first / 0.5)


class _CountingTransport(_httpx.BaseTransport):
  """Every attempt the package sends: counts it (and its HTTP error / timeout / malformed reply) in the client's
  stats, notes why it could not connect, stops it when the server is known dead, and turns a 200 that is no chat
  completion into a 502 so that the package retries it."""

  def __init__(self, client: OpenAIClient, inner):
    self.client, self.inner = client, inner

  def handle_request(self, request):
    c, attempt = self.client, self.client._attempt
    if getattr(attempt, "sent", 0):
      c._raise_if_fatal()  # another request found the server gone for good while this one waited to retry
    attempt.sent = getattr(attempt, "sent", 0) + 1
    try:
      response = self.inner.handle_request(request)
    except _httpx.TimeoutException:
      c._count("timeouts")
      attempt.unreachable = None
      raise
    except _httpx.TransportError as e:
      c._count("http_errors")
      attempt.unreachable = _unreachable(e)
      raise
    attempt.unreachable = None
    if response.status_code >= 400:
      c._count("http_errors")
      return response
    response.read()
    problem = _malformed(response.content)
    if problem is None:
      return response
    c._count("bad_responses")
    return _httpx.Response(502, json={"error": {"message": f"malformed reply ({problem})"}}, request=request)

  def close(self) -> None:
    self.inner.close()


def _malformed(body: bytes) -> str | None:
  """Why `body` is no chat completion with a text reply, or None."""
  try:
    data = json.loads(body)
  except ValueError:
    return "not JSON"
  try:
    content = data["choices"][0]["message"]["content"]
  except (KeyError, IndexError, TypeError):
    return "no choices[0].message.content"
  return None if isinstance(content, str) else "message content is not a string"


def _unreachable(e: BaseException) -> str | None:
  """'connection refused' / 'host name does not resolve' when `e` (or its cause) says the server cannot be
  reached at all."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, ConnectionRefusedError) or "connection refused" in str(e).lower():
      return "connection refused"
    if isinstance(e, socket.gaierror):
      return f"host name does not resolve ({e})"
    e = e.__cause__ or e.__context__
  return None


def _error_detail(e: openai.APIStatusError) -> str:
  """The server's error message (OpenAI-style {"error": {"message": ...}} or the body's start), one line."""
  body = e.body
  if isinstance(body, dict):
    body = body.get("error", body)
    body = body.get("message", body) if isinstance(body, dict) else body
  elif body is None:
    body = e.response.text
  return " ".join(str(body or "").split())[:200]


def _names_unknown_model(detail: str) -> bool:
  low = detail.lower()
  return "model" in low and any(w in low for w in ("not found", "does not exist", "unknown", "not exist"))


def image_data_url(image: bytes) -> str:
  """An image as a data URL, its MIME type read from the bytes (PNG, JPEG, WebP, GIF, ...: PIL's format)."""
  try:
    with Image.open(io.BytesIO(image)) as im:
      mime = Image.MIME[im.format]
  except (OSError, KeyError) as e:
    raise ValueError(f"not an image PIL can name the format of ({e})") from e
  return f"data:{mime};base64," + base64.b64encode(image).decode()


def request_key(payload: dict) -> str:
  """SHA-256 of the request body in canonical JSON: the cache key of a request nobody named."""
  return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _write_json_atomic(path: str, obj) -> None:
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f)
  os.replace(tmp, path)
