"""The inputs the fault table (test_pipelines_cli_faults.py) runs the command lines on.

`build_material` writes tiny real inputs (training data, a tokenizer, checkpoints in each layout) and their broken
variants (truncated, garbage, cut JSON, a tokenizer without `<image>`, ...) under one folder and returns their paths
by name, the names the table's flags use as {fields}. `Teacher` and `status_handler` are fake OpenAI-compatible
servers (fake_server.serve runs them): the synthetic world's teacher, and a server that answers every request with
one HTTP error; `closed_port_url` is a URL nothing listens on.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

from fake_server import JsonHandler, teacher_reply
from flax import nnx
from train_data import write_llava_data, write_training_data

from insightv_jax.checkpoints import save_model
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.model.llava import LlavaNext

# --------------------------------------------------------------------------------------------- material

def _write(path: str, data: bytes | str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data.encode() if isinstance(data, str) else data)
  return path


def _truncate(src: str, dst: str, keep: float = 0.5) -> str:
  with open(src, "rb") as f:
    data = f.read()
  return _write(dst, data[:int(len(data) * keep)])


def _copy_dir(src: str, dst: str) -> str:
  shutil.copytree(src, dst)
  return dst


def _edit_safetensors_header(folder: str, edit: Callable[[dict], None]) -> str:
  """Rewrites model.safetensors' JSON header through `edit` (same length, padded), keeping the data bytes."""
  path = os.path.join(folder, "model.safetensors")
  with open(path, "rb") as f:
    data = f.read()
  n = int.from_bytes(data[:8], "little")
  header = json.loads(data[8:8 + n])
  edit(header)
  blob = json.dumps(header, separators=(",", ":")).encode()
  assert len(blob) <= n
  _write(path, data[:8] + blob + b" " * (n - len(blob)) + data[8 + n:])
  return folder


def _drop_token(folder: str, token: str) -> str:
  """Removes an added token from a saved tokenizer (tokenizer.json and tokenizer_config.json)."""
  path = os.path.join(folder, "tokenizer.json")
  tok = json.load(open(path))
  tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != token]
  _write(path, json.dumps(tok))
  path = os.path.join(folder, "tokenizer_config.json")
  config = json.load(open(path))
  for key in ("extra_special_tokens", "additional_special_tokens"):
    if isinstance(config.get(key), list):
      config[key] = [t for t in config[key] if t != token]
  config.get("added_tokens_decoder", {}).pop(next((i for i, t in config.get("added_tokens_decoder", {}).items()
                                                   if t.get("content") == token), None), None)
  _write(path, json.dumps(config))
  return folder


def build_material(root: str, tiny_cfg) -> dict:
  """Tiny real inputs (data, tokenizer, checkpoints) and their broken variants, under `root`."""
  m = write_training_data(f"{root}/data", n=8)
  m.update({k: v for k, v in write_llava_data(f"{root}/llava", n=4).items() if k in ("llava",)})
  d = m["root"]
  model = LlavaNext(fit_model_config(tiny_cfg, load_tokenizer(m["tok"])), rngs=nnx.Rngs(0))
  m["hf"], m["params"] = f"{root}/hf", f"{root}/params"
  save_model(model, m["hf"], layout="hf")
  save_model(model, m["params"], layout="params")
  # checkpoints: truncated, header garbage, a dtype that disagrees with the bytes, a missing shard, bad config.json
  m["hf_cut"] = _copy_dir(m["hf"], f"{root}/hf_cut")
  _truncate(f"{m['hf']}/model.safetensors", f"{m['hf_cut']}/model.safetensors")
  m["hf_garbage"] = _copy_dir(m["hf"], f"{root}/hf_garbage")
  _write(f"{m['hf_garbage']}/model.safetensors", os.urandom(4096))
  m["hf_dtype"] = _edit_safetensors_header(_copy_dir(m["hf"], f"{root}/hf_dtype"), lambda h: h[sorted(
      k for k in h if k != "__metadata__")[0]].update(dtype="F16"))
  m["hf_shard"] = _copy_dir(m["hf"], f"{root}/hf_shard")
  _write(f"{m['hf_shard']}/model.safetensors.index.json",
         json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
  m["hf_config"] = _copy_dir(m["hf"], f"{root}/hf_config")
  _write(f"{m['hf_config']}/config.json", '{"model_type": "llava_next", "text_config": ')
  wider = dict(json.load(open(f"{m['hf']}/config.json")))  # an MLP twice as wide as the tensors
  wider["text_config"] = {**wider["text_config"], "intermediate_size": wider["text_config"]["intermediate_size"] * 2}
  m["hf_shape"] = _copy_dir(m["hf"], f"{root}/hf_shape")
  _write(f"{m['hf_shape']}/config.json", json.dumps(wider))
  m["no_config"] = f"{root}/no_config"
  os.makedirs(m["no_config"])
  # tokenizers: corrupt; without <image>, as an original LLaVA-NeXT / Insight-V release's
  m["tok_bad"] = _copy_dir(m["tok"], f"{root}/tok_bad")
  _write(f"{m['tok_bad']}/tokenizer.json", '{"version": "1.0", "model": {"type": "BPE", "vocab": ')
  m["tok_no_image"] = _drop_token(_copy_dir(m["tok"], f"{root}/tok_no_image"), "<image>")
  # an original LLaVA-NeXT folder whose config.json names a tower that is no preset without describing it (as a
  # release does: mm_vision_tower is a local copy), the tower's own config.json beside it
  m["orig"] = f"{root}/orig"
  save_model(model, m["orig"], layout="llava", vision_tower="/home/models/tiny-clip")
  original = json.load(open(f"{m['orig']}/config.json"))
  m["tower"] = _write(f"{root}/tower/config.json", json.dumps(original.pop("vision_config")))
  _write(f"{m['orig']}/config.json", json.dumps(original))
  # data: random bytes / truncated / empty ArrayRecord, corrupt images, escaping paths, cut JSON, LLaVA as ours
  m["ar_random"] = _write(f"{root}/bad/random.ar", os.urandom(100_000))
  m["ar_cut"] = _truncate(m["sft"], f"{root}/bad/cut.ar")
  m["empty"] = _write(f"{root}/bad/empty.jsonl", b"")
  questions = [json.loads(line) for line in open(f"{d}/train.jsonl")]
  _write(f"{d}/corrupt/x.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200))
  rows = [{"kind": "reasoning_sft", "schema_version": 1, "id": q["id"], "question": q["question"],
           "reasoning": "step one", "images": [{"path": "corrupt/x.png"}]} for q in questions]
  m["corrupt_images"] = _write(f"{root}/bad/corrupt_images.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
  rows = [{**r, "images": [{"path": f"../../outside/{r['id']}.png"}]} for r in rows]
  m["escaping"] = _write(f"{root}/bad/escaping.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
  m["json_cut"] = _write(f"{root}/bad/cut.json", "[" + json.dumps(rows[0]) + ", {\"id\": ")
  m["tsv_wrong"] = _write(f"{root}/bad/bench.tsv", "id\tprompt\n1\twhat?\n")
  m["bench_cut"] = _write(f"{root}/bad/bench.jsonl", json.dumps({"question": "Q?", "answer": "A"}) + "\n{\"quest")
  lines = open(f"{d}/train.jsonl").read().splitlines()[:2]
  m["bench_no_image"] = _write(f"{root}/bad/bench_no_image.jsonl", lines[0] + "\n" + json.dumps(
      {**json.loads(lines[1]), "images": [{"path": "images/gone.png"}]}) + "\n")
  m["questions_cut"] = _write(f"{root}/bad/questions.jsonl", open(f"{d}/train.jsonl").readline() + "{\"kind\": \"qu")
  m["questions_no_answer"] = _write(f"{root}/bad/no_answer.jsonl", "".join(
      json.dumps({k: v for k, v in q.items() if k != "answer"}) + "\n" for q in questions[:2]))
  m["llava_no_answer"] = _write(f"{root}/bad/llava_no_answer.json", json.dumps(  # a DPO pair: no gold answer
      [{"id": "p0", "prompt": "What is this?", "chosen": "A cat.", "rejected": "A dog."}]))
  m["a_file"] = m["sft"]
  return m


# -------------------------------------------------------------------------------------------- fake servers

class Teacher(JsonHandler):
  """An OpenAI-compatible server that answers the progressive protocol from the synthetic world's teacher; after
  `good_requests` requests (when set) every request gets 401, as if the key had been revoked mid-run."""

  world = questions = None
  good_requests: int | None = None
  served = 0

  def do_POST(self):
    with self.lock:
      type(self).served += 1
      n = self.served
    body = self.read_json()
    if self.good_requests is not None and n > self.good_requests:
      return self.send_json(401, {"error": {"message": "Incorrect API key provided"}})
    reply = teacher_reply(self.world, self.questions, body["messages"])
    self.send_json(200, {"choices": [{"message": {"role": "assistant", "content": reply}}]})


def status_handler(code: int, message: str):
  class Status(JsonHandler):
    def do_POST(self):
      self.read_json()
      self.send_json(code, {"error": {"message": message}})
  return Status


def closed_port_url() -> str:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}/v1"
