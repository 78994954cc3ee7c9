"""The fault table: insightv-train, -convert, -eval and -datagen on inputs that go wrong in real life.

Each case runs the real command line in its own process (a few at a time) on one bad input: missing, empty, the
wrong format, truncated, corrupt, the wrong type, unreachable, a name no registry holds, a tokenizer that lacks the
tokens its chat template writes. Every case must exit with status 2 within 30 s with the culprit (flag, file,
record, tensor or URL) named in the LAST line of stderr, which starts with `error:`; a case whose bad input the run
goes on without (a benchmark question whose image is missing) exits 0 and names it in a warning and its report. A
case that runs over state an earlier run left (a checkpoint, a journal, an export) checks that the state is
unchanged and that a rerun with the input fixed resumes from it. Grow the table whenever a new input appears. `-k`
runs only the cases it selects (the material is built once).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
from typing import Callable

import pytest
from conftest import xla_flags
from fake_server import JsonHandler, serve, teacher_reply
from flax import nnx
from train_data import write_llava_data, write_training_data

from insightv_jax.checkpoints import save_model
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.model.llava import LlavaNext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT_S = 30
WORKERS = 3
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1),
       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OPENAI_API_KEY": "sk-test"}
# the flags every case of a CLI starts from ({name} fields come from the material, {w} is the case's folder)
BASE = {
    "train": {"config": f"{ROOT}/configs/sft_reasoning.py:tiny", "workdir": "{w}/run", "config.tokenizer": "{tok}",
              "config.data.paths": "{sft}", "config.data.image_root": "{root}", "config.optim.total_steps": "2",
              "config.checkpoint.every": "2"},
    "convert": {"to": "orbax", "input": "hf:{hf}", "output": "{w}/out"},
    "eval": {"config": f"{ROOT}/configs/eval.py", "workdir": "{w}/run", "config.reasoning_model": "params:{params}",
             "config.tokenizer": "{tok}", "config.benchmarks": "{root}/train.jsonl", "config.image_root": "{root}",
             "config.limit": "2", "config.batch_size": "2", "config.reasoning_max_new_tokens": "4",
             "config.answer_max_new_tokens": "4", "config.cot_max_new_tokens": "4"},
    "datagen": {"config": f"{ROOT}/configs/datagen.py", "workdir": "{w}/run", "config.questions": "synthetic:4",
                "config.world.image_size": "56", "config.chunk_questions": "2",
                "config.progressive.paths_per_question": "1"},
}
# GRPO runs (configs/grpo.py) start from BASE["train"] with these changes: the world's question records
GRPO = {"config": f"{ROOT}/configs/grpo.py:tiny", "config.data.paths": "{root}/train.jsonl",
        "config.data.template": "llama3"}
OPENAI = {"config.backend.kind": "openai", "config.backend.base_url": "{teacher}", "config.backend.model": "teacher",
          "config.backend.max_retries": "2", "config.backend.backoff_s": "0.05", "config.backend.timeout_s": "5"}

LOCAL = {"config.backend.kind": "local", "config.backend.model": "params:{params}", "config.backend.tokenizer": "{tok}",
         "config.backend.template": "llama3"}


@dataclasses.dataclass
class Case:
  cli: str  # train | convert | eval | datagen
  name: str  # the input and what is wrong with it
  flags: dict  # changes to BASE[cli] (None removes a flag)
  words: tuple[str, ...]  # what the last line of stderr must name (status 0: what a warning on stderr must name)
  before: Callable | None = None  # before(m, w): state an earlier run leaves
  after: Callable | None = None  # after(m, w, state): that state is intact, and a fixed rerun resumes from it
  status: int = 2  # 2: the input stops the run; 0: the run goes on without what is bad, and says so

  @property
  def id(self):
    return f"{self.cli}-{self.name}"


@dataclasses.dataclass
class Result:
  status: int
  seconds: float  # wall time less the time the process waited for a CPU (see run_cli)
  wall: float
  last: str
  stderr: str
  after: str = ""  # the after-check's failure, if any


def run_cli(cli: str, flags: dict, m: dict, w: str) -> tuple[int, float, str, float]:
  """(exit status, seconds, stderr, wall seconds) of the CLI in a fresh process (forked from the test session's
  preloaded server, m["fork_server"]: tests/cli_fork.py).

  seconds = wall time less the time its main thread sat runnable in the kernel's run queue (/proc/<pid>/schedstat,
  read after it exits and before it is reaped): how long the failure takes on a machine of its own, whatever else
  is running on this one (other tests, other work). Time spent sleeping (retry backoff, timeouts) counts."""
  args = [f"--{k}={str(v).format(w=w, **m)}" for k, v in flags.items() if v is not None]
  os.makedirs(w, exist_ok=True)
  child = m["fork_server"].start(f"pipelines.cli.{cli}", args, env=ENV, stderr=os.path.join(w, f"{cli}.stderr"))
  child.wait(timeout=300)
  return child.status, child.seconds, child.read_stderr(), child.wall


def tree_digest(folder: str) -> str:
  """SHA-256 over every file's relative path and bytes under `folder`."""
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames.sort()
    for name in sorted(filenames):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, folder).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


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


def _status_handler(code: int, message: str):
  class Status(JsonHandler):
    def do_POST(self):
      self.read_json()
      self.send_json(code, {"error": {"message": message}})
  return Status


def _closed_port_url() -> str:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


# ------------------------------------------------------------------------------------ state and resumes

def _train_first(m, w):
  """A run that leaves a checkpoint (step 2) and an export behind."""
  status, _, err, _ = run_cli("train", BASE["train"], m, w)
  assert status == 0, err[-2000:]
  return {k: tree_digest(f"{w}/run/{k}") for k in ("checkpoints", "export")}


def _train_resumes(m, w, state):
  assert {k: tree_digest(f"{w}/run/{k}") for k in state} == state, "the failing run changed the checkpoint"
  status, _, err, _ = run_cli("train", {**BASE["train"], "config.optim.total_steps": "3"}, m, w)
  assert status == 0, err[-2000:]
  assert "restored step 2" in err


def _convert_first(m, w):
  status, _, err, _ = run_cli("convert", BASE["convert"], m, w)
  assert status == 0, err[-2000:]
  return tree_digest(f"{w}/out")


def _convert_intact(m, w, state):
  assert tree_digest(f"{w}/out") == state, "the failing run changed the existing export"


EVAL_OUTPUTS = ("direct.jsonl", "report.md", "report.json")


def _file_digests(folder: str, names) -> dict:
  out = {}
  for name in names:
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = hashlib.sha256(f.read()).hexdigest()
  return out


def _eval_first(m, w):
  """An evaluation (one system, 2 questions) whose results and report a later run resumes from."""
  status, _, err, _ = run_cli("eval", {**BASE["eval"], "config.systems": "direct"}, m, w)
  assert status == 0, err[-2000:]
  return _file_digests(f"{w}/run", EVAL_OUTPUTS)


def _eval_resumes(m, w, state):
  assert _file_digests(f"{w}/run", EVAL_OUTPUTS) == state, "the failing run changed the results or the report"
  with open(f"{w}/run/direct.jsonl") as f:
    done = f.read().splitlines()
  status, _, err, _ = run_cli("eval", {**BASE["eval"], "config.systems": "direct", "config.limit": "3"}, m, w)
  assert status == 0, err[-2000:]
  with open(f"{w}/run/direct.jsonl") as f:
    rows = f.read().splitlines()
  assert len(done) == 2 and rows[:2] == done and len(rows) == 3  # finished questions kept, not recomputed


def _eval_reports_failed_question(m, w, state):
  """The question whose image is missing counts as failed, named with its file and line in report.json / .md."""
  with open(f"{w}/run/report.json") as f:
    direct = json.load(f)["direct"]
  assert direct["n"] == 2, direct
  failed = direct["failed"]
  assert [(f["id"], f["file"], f["line"]) for f in failed] == [("train-1-0000001", m["bench_no_image"], 2)], failed
  assert "gone.png" in failed[0]["error"]
  with open(f"{w}/run/report.md") as f:
    assert "train-1-0000001" in f.read()


def _journal_keys(w):
  with open(f"{w}/run/journal/paths-0-of-1.jsonl") as f:
    return [(r["question_id"], r["path_index"]) for r in map(json.loads, f)]


def _datagen_resumes(m, w, state):
  keys = _journal_keys(w)
  assert 0 < len(keys) < 4, f"the failing run should have journaled its finished chunks only: {keys}"
  status, _, err, _ = run_cli("datagen", {**BASE["datagen"], **OPENAI}, m, w)
  assert status == 0, err[-2000:]
  assert f"{len(keys)}/4 paths already in the journal" in err
  resumed = _journal_keys(w)
  assert resumed[:len(keys)] == keys and sorted(resumed) == sorted(set(resumed)) and len(resumed) == 4


def _datagen_retries_failed(m, w, state):
  """Every path failed its requests (a server answering 503 through the retries): a rerun retries them all."""
  assert len(_journal_keys(w)) == 4
  status, _, err, _ = run_cli("datagen", {**BASE["datagen"], **OPENAI}, m, w)
  assert status == 0, err[-2000:]
  assert "0/4 paths already in the journal" in err
  with open(f"{w}/run/report/counts.json") as f:
    counts = json.load(f)
  assert counts["paths"] == 4 and not counts["paths_dropped"], counts


# ---------------------------------------------------------------------------------------------- the table

CASES = [
    # insightv-train
    Case("train", "tokenizer-empty", {"config.tokenizer": ""}, ("--config.tokenizer", "empty")),
    Case("train", "tokenizer-missing", {"config.tokenizer": "{w}/nope"}, ("--config.tokenizer", "nope")),
    Case("train", "tokenizer-wrong-type", {"config.tokenizer": "{a_file}"}, ("--config.tokenizer", "not a folder")),
    Case("train", "tokenizer-corrupt", {"config.tokenizer": "{tok_bad}"}, ("tok_bad", "cannot be loaded")),
    Case("train", "data-empty-flag", {"config.data.paths": ""}, ("--config.data.paths", "empty")),
    Case("train", "data-missing", {"config.data.paths": "{w}/nope.ar"}, ("--config.data.paths", "nope.ar")),
    Case("train", "data-empty-file", {"config.data.paths": "{empty}"}, ("--config.data.paths", "empty.jsonl")),
    Case("train", "arrayrecord-random-bytes", {"config.data.paths": "{ar_random}"}, ("random.ar", "ArrayRecord")),
    Case("train", "arrayrecord-truncated", {"config.data.paths": "{ar_cut}"}, ("cut.ar", "ArrayRecord")),
    Case("train", "jsonl-all-images-corrupt", {"config.data.paths": "{corrupt_images}"},
         ("corrupt_images.jsonl", "cannot decode image")),
    Case("train", "jsonl-images-escape-root", {"config.data.paths": "{escaping}"}, ("escaping.jsonl", "escapes")),
    Case("train", "json-truncated", {"config.data.paths": "{json_cut}"}, ("cut.json", "not valid JSON")),
    Case("train", "llava-json-as-our-records", {"config.data.paths": "{llava}"}, ("llava.json", "data.format=llava")),
    Case("train", "data-folder-not-tfds", {"config.data.paths": "{root}/images"},
         ("--config.data.paths", "not a prepared TFDS builder")),
    Case("train", "image-root-missing", {"config.data.image_root": "{w}/no_images"},
         ("--config.data.image_root", "no_images")),
    Case("train", "init-missing", {"config.model.init": "hf:{w}/nope"}, ("--config.model.init", "nope")),
    Case("train", "init-no-config", {"config.model.init": "hf:{no_config}"}, ("--config.model.init", "config.json")),
    Case("train", "init-safetensors-truncated", {"config.model.init": "hf:{hf_cut}"},
         ("hf_cut/model.safetensors", "tensor", "truncated")),
    Case("train", "init-shapes-disagree", {"config.model.init": "hf:{hf_shape}"}, ("hf_shape", "shapes disagree")),
    Case("train", "workdir-is-a-file", {"workdir": "{a_file}"}, ("--workdir", "not a folder")),
    Case("train", "config-field-unknown", {"config.data.nope": "1"}, ("--config.data.nope", "no field")),
    Case("train", "config-file-missing", {"config": "{w}/nope.py"}, ("--config", "nope.py")),
    Case("train", "template-unknown", {"config.data.template": "llava_llama3"},
         ("--config.data.template=llava_llama3", "llava_llama_3", "chatml")),
    Case("train", "template-tokens-missing", {"config.data.template": "chatml"},
         ("--config.data.template=chatml", "<|im_start|>", "<|im_end|>", "llama3")),
    Case("train", "prompts-unknown", {"config.data.prompts": "insight-v"},
         ("--config.data.prompts=insight-v", "insightv", "ours")),
    Case("train", "tokenizer-no-image-token", {"config.tokenizer": "{tok_no_image}"},
         ("--config.tokenizer", "<image>", "insightv-convert")),
    Case("train", "init-tower-unknown", {"config.model.init": "llava:{orig}"},
         ("--config.model.init", "mm_vision_tower", "--vision_config")),
    Case("train", "resume-over-bad-data", {"config.data.paths": "{ar_random}", "config.optim.total_steps": "4"},
         ("random.ar",), before=_train_first, after=_train_resumes),
    # insightv-train, task grpo (configs/grpo.py)
    Case("train", "grpo-question-without-answer", {**GRPO, "config.data.paths": "{questions_no_answer}"},
         ("no_answer.jsonl:1", "'answer'", "missing")),
    Case("train", "grpo-reward-unknown", {**GRPO, "config.grpo.rewards": "('answer','nope')",
                                          "config.grpo.reward_weights": "(1.0,1.0)"},
         ("--config.grpo.rewards", "unknown reward 'nope'", "format")),
    Case("train", "grpo-one-generation", {**GRPO, "config.grpo.num_generations": "1"},
         ("--config.grpo.num_generations=1", "G >= 2")),
    Case("train", "grpo-summary-without-chains", {**GRPO, "config.grpo.agent": "summary"},
         ("--config.grpo.agent=summary", "--config.grpo.chain_source")),
    Case("train", "grpo-reward-judge-unknown", {**GRPO, "config.grpo.reward_judge": "sumary"},
         ("--config.grpo.reward_judge='sumary'", "chain", "summary")),
    Case("train", "grpo-summary-judge-without-model", {**GRPO, "config.grpo.reward_judge": "summary"},
         ("--config.grpo.reward_judge=summary", "--config.grpo.summary_model")),
    Case("train", "grpo-llava-questions-without-answers", {**GRPO, "config.data.paths": "{llava_no_answer}",
                                                           "config.data.format": "llava"},
         ("llava_no_answer.json[0]", "id='p0'", "no usable answer")),
    # insightv-convert
    Case("convert", "input-missing", {"input": "{w}/nope"}, ("--input", "nope")),
    Case("convert", "input-wrong-type", {"input": "{a_file}"}, ("--input", "not a folder")),
    Case("convert", "input-no-config", {"input": "{no_config}"}, ("--input", "config.json")),
    Case("convert", "safetensors-truncated", {"input": "hf:{hf_cut}"},
         ("hf_cut/model.safetensors", "tensor", "truncated")),
    Case("convert", "safetensors-garbage", {"input": "hf:{hf_garbage}"}, ("hf_garbage/model.safetensors",)),
    Case("convert", "safetensors-dtype-disagrees", {"input": "hf:{hf_dtype}"},
         ("hf_dtype/model.safetensors", "tensor", "F16")),
    Case("convert", "shard-missing", {"input": "hf:{hf_shard}"}, ("model.safetensors.index.json", "model-00002")),
    Case("convert", "config-json-corrupt", {"input": "hf:{hf_config}"}, ("hf_config/config.json", "JSON")),
    Case("convert", "output-is-a-file", {"output": "{a_file}"}, ("--output", "not a folder")),
    Case("convert", "output-exists", {}, ("--output", "--overwrite"), before=_convert_first, after=_convert_intact),
    Case("convert", "vision-config-missing", {"vision_config": "{w}/nope.json"}, ("--vision_config", "nope.json")),
    Case("convert", "flag-missing", {"input": None}, ("--input",)),
    Case("convert", "template-unknown", {"template": "llava_llama3"}, ("--template=llava_llama3", "llava_llama_3")),
    Case("convert", "prompts-unknown", {"prompts": "insight-v"}, ("--prompts=insight-v", "insightv")),
    Case("convert", "tower-unknown", {"input": "llava:{orig}"}, ("--input", "mm_vision_tower", "--vision_config")),
    Case("convert", "vision-config-is-the-model-config",
         {"input": "llava:{orig}", "vision_config": "{orig}/config.json"},
         ("--vision_config", "not a CLIP / SigLIP vision config", "llava_llama")),
    Case("convert", "vision-config-not-json", {"input": "llava:{orig}", "vision_config": "{sft}"},
         ("--vision_config", "not a CLIP / SigLIP vision config")),
    Case("convert", "vision-config-for-hf-input", {"vision_config": "{tower}"}, ("--vision_config", "--input")),
    # insightv-eval
    Case("eval", "model-empty", {"config.reasoning_model": ""}, ("--config.reasoning_model", "empty")),
    Case("eval", "model-missing", {"config.reasoning_model": "params:{w}/nope"}, ("--config.reasoning_model", "nope")),
    Case("eval", "model-safetensors-truncated", {"config.reasoning_model": "hf:{hf_cut}"},
         ("hf_cut/model.safetensors", "tensor", "truncated")),
    Case("eval", "tokenizer-empty", {"config.tokenizer": ""}, ("--config.tokenizer", "empty")),
    Case("eval", "benchmarks-empty-flag", {"config.benchmarks": ""}, ("--config.benchmarks", "empty")),
    Case("eval", "benchmark-missing", {"config.benchmarks": "{w}/nope.tsv"}, ("--config.benchmarks", "nope.tsv")),
    Case("eval", "benchmark-empty-file", {"config.benchmarks": "{empty}"}, ("--config.benchmarks", "empty")),
    Case("eval", "benchmark-tsv-wrong-columns", {"config.benchmarks": "{tsv_wrong}"}, ("bench.tsv", "'index'")),
    Case("eval", "benchmark-jsonl-truncated", {"config.benchmarks": "{bench_cut}"}, ("bench.jsonl:2",)),
    Case("eval", "template-unknown", {"config.template": "llava_llama3"},
         ("--config.template=llava_llama3", "llava_llama_3")),
    Case("eval", "template-tokens-missing", {"config.template": "qwen_1_5"},
         ("--config.template=qwen_1_5", "<|im_start|>")),
    Case("eval", "prompts-unknown", {"config.prompts": "insight-v"},
         ("--config.prompts=insight-v", "insightv", "ours")),
    Case("eval", "tokenizer-no-image-token", {"config.tokenizer": "{tok_no_image}"},
         ("--config.tokenizer", "<image>", "insightv-convert")),
    Case("eval", "benchmark-image-missing", {"config.systems": "direct", "config.benchmarks": "{bench_no_image}"},
         ("bench_no_image.jsonl:2", "'train-1-0000001' counts as failed", "gone.png"),
         after=_eval_reports_failed_question, status=0),
    Case("eval", "resume-over-bad-benchmark", {"config.systems": "direct",
                                               "config.benchmarks": "{root}/train.jsonl,{bench_cut}"},
         ("bench.jsonl:2",), before=_eval_first, after=_eval_resumes),
    # insightv-datagen
    Case("datagen", "questions-missing", {"config.questions": "{w}/nope.jsonl"}, ("--config.questions", "nope")),
    Case("datagen", "questions-empty-file", {"config.questions": "{empty}"}, ("--config.questions", "empty")),
    Case("datagen", "questions-truncated", {"config.questions": "{questions_cut}"}, ("questions.jsonl:2",)),
    Case("datagen", "questions-wrong-kind", {"config.questions": "{corrupt_images}"},
         ("corrupt_images.jsonl", "not questions")),
    Case("datagen", "question-images-missing", {**OPENAI, "config.questions": "{root}/train.jsonl",
                                                "config.image_root": "{w}"},
         ("train.jsonl", "train-1-0000000", "image")),
    Case("datagen", "questions-llava-missing", {"config.questions": "llava:{w}/nope.json"},
         ("--config.questions", "nope.json")),
    Case("datagen", "questions-synthetic-count", {"config.questions": "synthetic:lots"}, ("--config.questions",)),
    Case("datagen", "local-template-unknown", {**LOCAL, "config.backend.template": "llava_llama3"},
         ("--config.backend.template=llava_llama3", "llava_llama_3")),
    Case("datagen", "local-tokenizer-no-image-token", {**LOCAL, "config.backend.tokenizer": "{tok_no_image}"},
         ("--config.backend.tokenizer", "<image>")),
    Case("datagen", "server-url-empty", {**OPENAI, "config.backend.base_url": ""}, ("--config.backend.base_url",)),
    Case("datagen", "server-url-not-a-url", {**OPENAI, "config.backend.base_url": "localhost:8000"},
         ("--config.backend.base_url", "not an http")),
    Case("datagen", "server-down", {**OPENAI, "config.backend.base_url": "{closed}"},
         ("{closed}", "connection refused")),
    Case("datagen", "server-401", {**OPENAI, "config.backend.base_url": "{s401}"}, ("{s401}", "401")),
    Case("datagen", "server-unknown-model", {**OPENAI, "config.backend.base_url": "{s404}"},
         ("{s404}", "404", "does not exist")),
    Case("datagen", "server-overloaded", {**OPENAI, "config.backend.base_url": "{s503}"},
         ("{s503}", "4 of 4 paths failed"), after=_datagen_retries_failed),
    Case("datagen", "server-fails-mid-run", {**OPENAI, "config.backend.base_url": "{revoked}"},
         ("{revoked}", "401"), after=_datagen_resumes),
]


def _selected(request) -> list[Case]:
  """The cases this session's tests ask for (all, or those `-k` keeps): only they are run."""
  ids = {item.callspec.params["case"].id for item in request.session.items  # this module's rows only: other
         if getattr(item, "callspec", None) is not None  # modules have a `case` parameter of their own
         and isinstance(item.callspec.params.get("case"), Case)}
  return [c for c in CASES if c.id in ids] or CASES


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, tiny_cfg, cli):
  from data_gen import pipeline
  selected = _selected(request)
  root = str(tmp_path_factory.mktemp("faults"))
  m = build_material(root, tiny_cfg)
  m["fork_server"] = cli
  world = pipeline.make_world(_datagen_cfg())
  Teacher.world, Teacher.questions = world, [world.question(i) for i in range(4)]

  class Revoked(Teacher):
    good_requests, served = 0, 0  # set below: the first chunk's requests succeed

  with serve(Teacher) as teacher, serve(Revoked) as revoked, \
       serve(_status_handler(401, "Incorrect API key provided")) as s401, \
       serve(_status_handler(404, "The model `teacher` does not exist")) as s404, \
       serve(_status_handler(503, "overloaded")) as s503:
    m.update(teacher=teacher, revoked=revoked, s401=s401, s404=s404, s503=s503, closed=_closed_port_url())
    if any("{revoked}" in str(c.flags.values()) for c in selected):
      Revoked.good_requests = _requests_for_first_chunk(m, root)
    out = {}

    def one(case: Case) -> Result:
      w = os.path.join(root, "cases", case.id)
      os.makedirs(w)
      state = case.before(m, w) if case.before else None
      status, seconds, err, wall = run_cli(case.cli, {**BASE[case.cli], **case.flags}, m, w)
      lines = err.strip().splitlines()
      result = Result(status, seconds, wall, lines[-1] if lines else "", err)
      if case.after:
        try:
          case.after(m, w, state)
        except Exception as e:  # noqa: BLE001 - reported by the case's test
          result.after = f"{type(e).__name__}: {e}"
      print(f"{status:>3} {seconds:5.1f}s {wall:5.1f}s  {case.id:<40} {result.last[:150]}", flush=True)
      return result

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
      # the cases that run the CLI more than once first: they take longest
      futures = {case.id: pool.submit(one, case) for case in sorted(selected, key=lambda c: not (c.before or c.after))}
      for cid, fut in futures.items():
        out[cid] = fut.result()
  return out, m


def _datagen_cfg():
  from configs.datagen import get_config
  c = get_config()
  c.world.image_size = 56
  return c


def _requests_for_first_chunk(m, root) -> int:
  """How many requests the first chunk (2 questions, 1 path each) of the datagen cases makes: counted on a run
  against the teacher, so that the 'revoked' server fails from the second chunk on."""
  Teacher.served = 0
  status, _, err, _ = run_cli("datagen", {**BASE["datagen"], **OPENAI, "config.questions": "synthetic:2"}, m,
                           os.path.join(root, "count"))
  assert status == 0, err[-2000:]
  return Teacher.served


def test_the_table_covers_every_cli():
  assert len(CASES) >= 25 and {c.cli for c in CASES} == set(BASE)
  assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fault(results, case):
  out, m = results
  r = out[case.id]
  row = f"{case.id}: status {r.status}, {r.seconds:.1f}s ({r.wall:.1f}s wall), last line {r.last!r}\n"
  row += r.stderr[-3000:]
  assert r.status == case.status, row  # an input error: status 2, no traceback
  if case.status:
    assert r.seconds < LIMIT_S, row
    assert r.last.startswith("error: "), row
  named = r.last if case.status else r.stderr
  for word in case.words:
    assert word.format(**m) in named, f"{word.format(**m)!r} not named: {row}"
  assert not r.after, f"{case.id}: {r.after}"
