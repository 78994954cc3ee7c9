"""How the fault table (test_pipelines_cli_faults.py) runs the command lines, and what it checks around a run.

The flags every case of a CLI starts from (BASE, and the GRPO / OPENAI / LOCAL changes to them), `run_cli` (a CLI
in a process forked from the test session's preloaded server) and its `Result`, and the checks a case runs before
and after its failing run over the state an earlier run left: a checkpoint, an export, evaluation results, a
datagen journal (`train_first` / `train_resumes`, ...): that state is unchanged, and a rerun resumes from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# ------------------------------------------------------------------------------------ state and resumes

def train_first(m, w):
  """A run that leaves a checkpoint (step 2) and an export behind."""
  status, _, err, _ = run_cli("train", BASE["train"], m, w)
  assert status == 0, err[-2000:]
  return {k: tree_digest(f"{w}/run/{k}") for k in ("checkpoints", "export")}


def train_resumes(m, w, state):
  assert {k: tree_digest(f"{w}/run/{k}") for k in state} == state, "the failing run changed the checkpoint"
  status, _, err, _ = run_cli("train", {**BASE["train"], "config.optim.total_steps": "3"}, m, w)
  assert status == 0, err[-2000:]
  assert "restored step 2" in err


def convert_first(m, w):
  status, _, err, _ = run_cli("convert", BASE["convert"], m, w)
  assert status == 0, err[-2000:]
  return tree_digest(f"{w}/out")


def convert_intact(m, w, state):
  assert tree_digest(f"{w}/out") == state, "the failing run changed the existing export"


EVAL_OUTPUTS = ("direct.jsonl", "report.md", "report.json")


def _file_digests(folder: str, names) -> dict:
  out = {}
  for name in names:
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = hashlib.sha256(f.read()).hexdigest()
  return out


def eval_first(m, w):
  """An evaluation (one system, 2 questions) whose results and report a later run resumes from."""
  status, _, err, _ = run_cli("eval", {**BASE["eval"], "config.systems": "direct"}, m, w)
  assert status == 0, err[-2000:]
  return _file_digests(f"{w}/run", EVAL_OUTPUTS)


def eval_resumes(m, w, state):
  assert _file_digests(f"{w}/run", EVAL_OUTPUTS) == state, "the failing run changed the results or the report"
  with open(f"{w}/run/direct.jsonl") as f:
    done = f.read().splitlines()
  status, _, err, _ = run_cli("eval", {**BASE["eval"], "config.systems": "direct", "config.limit": "3"}, m, w)
  assert status == 0, err[-2000:]
  with open(f"{w}/run/direct.jsonl") as f:
    rows = f.read().splitlines()
  assert len(done) == 2 and rows[:2] == done and len(rows) == 3  # finished questions kept, not recomputed


def eval_reports_failed_question(m, w, state):
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


def datagen_resumes(m, w, state):
  keys = _journal_keys(w)
  assert 0 < len(keys) < 4, f"the failing run should have journaled its finished chunks only: {keys}"
  status, _, err, _ = run_cli("datagen", {**BASE["datagen"], **OPENAI}, m, w)
  assert status == 0, err[-2000:]
  assert f"{len(keys)}/4 paths already in the journal" in err
  resumed = _journal_keys(w)
  assert resumed[:len(keys)] == keys and sorted(resumed) == sorted(set(resumed)) and len(resumed) == 4


def datagen_retries_failed(m, w, state):
  """Every path failed its requests (a server answering 503 through the retries): a rerun retries them all."""
  assert len(_journal_keys(w)) == 4
  status, _, err, _ = run_cli("datagen", {**BASE["datagen"], **OPENAI}, m, w)
  assert status == 0, err[-2000:]
  assert "0/4 paths already in the journal" in err
  with open(f"{w}/run/report/counts.json") as f:
    counts = json.load(f)
  assert counts["paths"] == 4 and not counts["paths_dropped"], counts
