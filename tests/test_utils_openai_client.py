"""Our client over the `openai` package: images keep their own MIME type; a malformed reply is retried by the
package's one retry loop and counted; a refused connection stops the client for good."""

from __future__ import annotations

import io

import pytest
from fake_server import JsonHandler, serve
from PIL import Image

from data_gen.backends import ChatRequest, OpenAIBackend
from insightv_jax.utils import openai_client


def _image(fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format=fmt)
  return buf.getvalue()


class _Recorder(JsonHandler):
  """Answers "ok" and keeps the image URL of every request; the first `malformed` replies are not JSON."""

  urls: list = []
  malformed = 0

  def do_POST(self):
    body = self.read_json()
    with self.lock:
      type(self).urls.append(body["messages"][0]["content"][0]["image_url"]["url"])
      bad = len(self.urls) <= self.malformed
    if bad:
      return self.send_bytes(200, b"{not json")
    self.send_json(200, {"choices": [{"message": {"role": "assistant", "content": "ok"}}]})


def test_images_are_sent_with_the_mime_type_of_their_bytes():
  _Recorder.urls, _Recorder.malformed = [], 0
  with serve(_Recorder) as url:
    backend = OpenAIBackend(url, "m", backoff_s=0.01)
    reqs = [ChatRequest(({"role": "user", "content": "q"},), image=_image(fmt)) for fmt in ("PNG", "JPEG", "WEBP")]
    assert backend.chat(reqs) == ["ok"] * 3
  assert sorted(u.split(";")[0] for u in _Recorder.urls) == ["data:image/jpeg", "data:image/png", "data:image/webp"]
  with pytest.raises(ValueError, match="not an image"):
    openai_client.image_data_url(b"plain text")


def test_a_malformed_reply_is_retried_and_counted(tmp_path):
  _Recorder.urls, _Recorder.malformed = [], 2
  with serve(_Recorder) as url:
    client = openai_client.OpenAIClient(url, "m", cache_dir=str(tmp_path), backoff_s=0.01)
    content = [{"type": "image_url", "image_url": {"url": openai_client.image_data_url(_image("PNG"))}}]
    assert client.chat([{"role": "user", "content": content}]) == "ok"
  assert len(_Recorder.urls) == 3
  assert client.stats["bad_responses"] == 2 and client.stats["retries"] == 2 and client.stats["failures"] == 0


def test_a_refused_connection_stops_the_client():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
  client = openai_client.OpenAIClient(url, "m", max_retries=2, backoff_s=0.01)
  with pytest.raises(openai_client.ServerError, match=r"connection refused on all 3 attempts"):
    client.chat([{"role": "user", "content": "hi"}])
  with pytest.raises(openai_client.ServerError, match=url):  # every later request stops at once
    client.chat([{"role": "user", "content": "again"}])
  assert client.stats["retries"] == 2 and client.stats["http_errors"] == 3
