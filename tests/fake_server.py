"""A local HTTP server for tests that talk to an OpenAI-compatible endpoint (127.0.0.1, a free port)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from typing import Iterator


class JsonHandler(http.server.BaseHTTPRequestHandler):
  """Base handler: quiet, with `send_json(code, obj)` and `send_bytes(code, data)` for replies."""

  lock = threading.Lock()

  def log_message(self, *a):
    pass

  def read_json(self):
    return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

  def send_json(self, code: int, obj) -> None:
    self.send_bytes(code, json.dumps(obj).encode())

  def send_bytes(self, code: int, data: bytes) -> None:
    self.send_response(code)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
  """Runs `handler` in a thread; yields the base URL "http://127.0.0.1:PORT/v1"."""
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
  finally:
    server.shutdown()
    server.server_close()
