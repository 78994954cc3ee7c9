"""A small client for OpenAI-compatible chat-completions servers (vLLM, SGLang, hosted APIs), urllib only.

    client = OpenAIClient("http://127.0.0.1:8000/v1", "Qwen2-72B-Instruct", cache_dir="/runs/eval/llm_cache")
    reply = client.chat([{"role": "user", "content": "2 + 2 = ?"}], temperature=0, max_tokens=16)   # str | None
    client.stats   # {"requests": 1, "cache_hits": 0, "retries": 0, "failures": 0, ...}

What it does for every request:
  - POSTs {base_url}/chat/completions with the model, the messages and the sampling parameters as given;
  - retries with exponential backoff and jitter on 408/409/429/5xx, timeouts, dropped connections and
    malformed replies (not JSON, no choices, content not a string), up to `max_retries` times;
  - gives up on other HTTP errors at once (a 400 or a 401 will not get better), returning None;
  - caches each successful reply on disk as <cache_dir>/<key>.json, the key a SHA-256 of the request
    (model + messages + parameters) unless the caller names one, so a rerun is answered from disk;
  - reads the API key from an environment variable and never logs or repr()s it.

Thread-safe: several threads may share one client (the stats are counted under a lock). No project imports, so
every layer of the library (and data_gen) can use it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)
STAT_KEYS = ("requests", "cache_hits", "retries", "failures", "http_errors", "timeouts", "bad_responses")


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

  def _cache_path(self, key: str) -> str | None:
    return os.path.join(self.cache_dir, key + ".json") if self.cache_dir else None

  def _post(self, body: bytes) -> str | None:
    headers = {"Content-Type": "application/json"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    for attempt in range(self.max_retries + 1):
      if attempt:
        self._count("retries")
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        time.sleep(delay)
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
        if e.code in RETRY_STATUS:
          continue
        log.warning("openai client: HTTP %d (not retried) from %s", e.code, self.base_url)
        return None
      except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
        self._count("timeouts" if "timed out" in str(e) else "http_errors")
      except (ValueError, KeyError, IndexError, TypeError):  # not JSON, no choices, no content
        self._count("bad_responses")
    return None


def request_key(payload: dict) -> str:
  """SHA-256 of the request body in canonical JSON: the cache key of a request nobody named."""
  return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _write_json_atomic(path: str, obj) -> None:
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f)
  os.replace(tmp, path)
