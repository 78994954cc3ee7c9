"""A small client for OpenAI-compatible chat-completions servers (vLLM, SGLang, hosted APIs), urllib only.

    client = OpenAIClient("http://127.0.0.1:8000/v1", "Qwen2-72B-Instruct", cache_dir="/runs/eval/llm_cache")
    reply = client.chat([{"role": "user", "content": "2 + 2 = ?"}], temperature=0, max_tokens=16)   # str | None
    client.stats   # {"requests": 1, "cache_hits": 0, "retries": 0, "failures": 0, ...}

What it does for every request:
  - POSTs {base_url}/chat/completions with the model, the messages and the sampling parameters as given;
  - retries with exponential backoff and jitter on 408/409/429/5xx, timeouts, dropped connections and
    malformed replies (not JSON, no choices, content not a string), up to `max_retries` times;
  - gives up on other HTTP errors at once (a 400 will not get better), returning None;
  - stops on a failure that will not heal, raising `ServerError` (an `InputError`) naming the URL and the reason:
    401 / 403 / 404, an unknown model, or a server that refuses connections (or whose host name does not
    resolve) through all the retries; from then on every request of this client raises at once (cached replies
    are still served), so a run stops within its retries instead of recording every request as failed;
  - caches each successful reply on disk as <cache_dir>/<key>.json, the key a SHA-256 of the request
    (model + messages + parameters) unless the caller names one, so a rerun is answered from disk;
  - reads the API key from an environment variable and never logs or repr()s it.

Thread-safe: several threads may share one client (the stats are counted under a lock). It imports only
`insightv_jax.utils.inputs`, so every layer of the library (and data_gen) can use it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from insightv_jax.utils.inputs import InputError

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)
FATAL_STATUS = (401, 403, 404)  # wrong key, no access, wrong URL or unknown model: retrying will not help
STAT_KEYS = ("requests", "cache_hits", "retries", "failures", "http_errors", "timeouts", "bad_responses")


class ServerError(InputError):
  """The server failed in a way that will not heal (see the module docstring); the message names the URL."""


class OpenAIClient:
  """POST {base_url}/chat/completions with retries, backoff and an on-disk cache (see the module docstring)."""

  def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", cache_dir: str | None = None,
               max_retries: int = 5, timeout_s: float = 60.0, backoff_s: float = 1.0, max_backoff_s: float = 30.0):
    self.base_url, self.model = base_url.rstrip("/"), model
    self._api_key = os.environ.get(api_key_env, "")
    self.cache_dir = cache_dir
    self.max_retries, self.timeout_s = max_retries, timeout_s
    self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
    self.stats = {k: 0 for k in STAT_KEYS}
    self.fatal: str | None = None  # why the server will not answer (set once; every later request raises)
    self._lock = threading.Lock()
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
    reply = self._post(json.dumps(payload).encode())
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

  def _post(self, body: bytes) -> str | None:
    headers = {"Content-Type": "application/json"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    unreachable = None  # why every attempt so far failed to connect (refused, unknown host)
    for attempt in range(self.max_retries + 1):
      if attempt:
        self._count("retries")
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        time.sleep(delay)
        self._raise_if_fatal()  # another request found the server gone for good
      try:
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
          data = json.loads(resp.read())
        reply = data["choices"][0]["message"]["content"]
        if not isinstance(reply, str):
          raise ValueError("message content is not a string")
        return reply
      except urllib.error.HTTPError as e:  # before URLError: HTTPError is one
        self._count("http_errors")
        unreachable = None
        if e.code in RETRY_STATUS:
          continue
        detail = _error_detail(e)
        if e.code in FATAL_STATUS or (e.code == 400 and _names_unknown_model(detail)):
          what = {401: "unauthorized (check the API key in the environment variable named by api_key_env)",
                  403: "forbidden (the key has no access to this model)",
                  404: f"not found (check the base URL and the model name {self.model!r})"}.get(e.code, "bad request")
          self._give_up(f"HTTP {e.code} {what}" + (f": {detail}" if detail else ""))
        log.warning("openai client: HTTP %d (not retried) from %s", e.code, self.base_url)
        return None
      except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
        self._count("timeouts" if "timed out" in str(e) else "http_errors")
        unreachable = _unreachable(e)
      except (ValueError, KeyError, IndexError, TypeError):  # not JSON, no choices, no content
        unreachable = None
        self._count("bad_responses")
    if unreachable:
      self._give_up(f"{unreachable} on all {self.max_retries + 1} attempts; is the server running at this URL?")
    return None


def _unreachable(e: Exception) -> str | None:
  """'connection refused' / 'host name does not resolve' when `e` says the server cannot be reached at all."""
  reason = getattr(e, "reason", e)
  if isinstance(reason, ConnectionRefusedError):
    return "connection refused"
  if isinstance(reason, socket.gaierror):
    return f"host name does not resolve ({reason})"
  return None


def _error_detail(e: urllib.error.HTTPError) -> str:
  """The server's error message (OpenAI-style {"error": {"message": ...}} or the body's start), one line."""
  try:
    body = e.read().decode("utf-8", "replace")
  except Exception:  # noqa: BLE001 - the status alone is enough
    return ""
  try:
    err = json.loads(body).get("error", body)
    body = err.get("message", err) if isinstance(err, dict) else err
  except (ValueError, AttributeError):
    pass
  return " ".join(str(body).split())[:200]


def _names_unknown_model(detail: str) -> bool:
  low = detail.lower()
  return "model" in low and any(w in low for w in ("not found", "does not exist", "unknown", "not exist"))


def request_key(payload: dict) -> str:
  """SHA-256 of the request body in canonical JSON: the cache key of a request nobody named."""
  return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _write_json_atomic(path: str, obj) -> None:
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f)
  os.replace(tmp, path)
