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


def teacher_reply(world, questions, messages: list[dict], malformed: bool = False) -> str:
  """What a perfect generator answers in the progressive protocol (data_gen/progressive.py): the synthetic world
  teacher's next step of the question the first user message asks, or its answer after FINAL_ANSWER.
  `malformed`: a reply that is no JSON step (the synthesiser must retry it)."""
  from data_gen import progressive
  first = messages[0]["content"]
  text = first[1]["text"] if isinstance(first, list) else first
  task = world.teacher_task(next(q for q in questions if text.startswith(q.question)))
  step = sum(1 for m in messages if m["role"] == "assistant")
  if messages[-1]["content"] == progressive.FINAL_ANSWER:
    return task.answer
  if malformed:
    return "Sure! Here is the step: title=..."
  s = task.steps[min(step, len(task.steps) - 1)]
  return json.dumps({"title": s.title, "content": s.content,
                     "next_action": "summary" if step >= len(task.steps) - 1 else "continue"})


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
