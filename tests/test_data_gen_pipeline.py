"""data_gen: resume after SIGKILL, the OpenAI backend against a misbehaving local server, dataset composition."""

from __future__ import annotations

import json
import os
import time

import pytest
from fake_server import JsonHandler, serve, teacher_reply
from train_data import override

from configs.datagen import get_config
from data_gen import assemble, pipeline
from insightv_jax.data import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**kw):
  c = get_config()
  c.questions = "synthetic:24"
  c.world.image_size = 56
  c.chunk_questions = 4
  c.backend.malformed_rate = 0.1
  return override(c, **kw)


def _datasets(workdir):
  d = os.path.join(workdir, "datasets")
  return {f: open(os.path.join(d, f)).read() for f in sorted(os.listdir(d)) if f.endswith(".jsonl")}


def test_killed_run_resumes_to_the_same_datasets(tmp_path, cli):
  full = pipeline.run(_cfg(), str(tmp_path / "full"))
  args = [f"--config={ROOT}/configs/datagen.py",
          f"--workdir={tmp_path / 'k'}",
          "--config.questions=synthetic:24", "--config.world.image_size=56", "--config.chunk_questions=4",
          "--config.backend.malformed_rate=0.1"]
  killed = cli.run("pipelines.cli.datagen", args + ["--config.debug_kill_at=chunk_3"], workdir=tmp_path / "logs")
  assert killed.returncode == -9, killed.stderr[-2000:]
  with open(tmp_path / "k" / "journal" / "paths-0-of-1.jsonl") as f:
    partial = f.read()
  assert 0 < partial.count("\n") < 96  # it died midway
  with open(tmp_path / "k" / "journal" / "paths-0-of-1.jsonl", "a") as f:
    f.write('{"type": "path", "question_id": "cut-by-the-ki')  # a line torn by the kill
  resumed = cli.run("pipelines.cli.datagen", args, workdir=tmp_path / "logs")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "already in the journal" in resumed.stderr
  assert _datasets(tmp_path / "k") == _datasets(tmp_path / "full")
  with open(tmp_path / "k" / "journal" / "paths-0-of-1.jsonl") as f:
    keys = [(r["question_id"], r["path_index"]) for r in map(json.loads, f)]
  assert len(keys) == len(set(keys)) == 96  # nothing lost, nothing duplicated
  assert full["counts"]["paths"] + sum(full["counts"]["paths_dropped"].values()) == 96


def test_composition_on_the_synthetic_world(tmp_path):
  out = pipeline.run(_cfg(**{"questions": "synthetic:40"}), str(tmp_path))
  acfg = assemble.AssemblyConfig(**_cfg().assembly.to_dict())
  reasoning = list(records.read_jsonl(str(tmp_path / "datasets" / "reasoning_sft-0-of-1.jsonl")))
  summary = list(records.read_jsonl(str(tmp_path / "datasets" / "summary_sft-0-of-1.jsonl")))
  pairs = list(records.read_jsonl(str(tmp_path / "datasets" / "dpo-0-of-1.jsonl")))
  assert reasoning and summary and pairs
  per_q = {}
  for r in reasoning:
    per_q.setdefault(r.id.split("/")[0], []).append(r)
  assert max(len(v) for v in per_q.values()) <= acfg.reasoning_per_question
  qualities = {s.chain_quality for s in summary}
  assert {"high", "wrong"} <= qualities and qualities <= {"high", "mid", "low", "wrong"}
  for p in pairs:
    assert p.chosen_score > p.rejected_score + acfg.min_score_gap
  # reasoning SFT chains are exactly the teacher's correct chains (the high band of the programmatic scorer)
  world = pipeline.make_world(_cfg())
  from insightv_jax.data import prompts
  for r in reasoning[:10]:
    q = world.question(int(r.id.split("-")[2].split("/")[0]), "train")
    assert r.reasoning == prompts.format_chain(world.teacher_path(q).steps)
  assert os.path.exists(tmp_path / "report" / "scores.png") and os.path.exists(tmp_path / "report" / "examples.html")
  assert sum(out["counts"]["paths_dropped"].values()) < 10  # malformed steps were mostly retried successfully


class _Flaky(JsonHandler):
  """An OpenAI-compatible server that answers the progressive protocol from the teacher, badly on purpose."""

  world = questions = None
  counter = 0
  def do_POST(self):
    with self.lock:
      type(self).counter += 1
      n = self.counter
    body = self.read_json()
    if n % 7 == 0:
      return self.send_json(429, {"error": "rate limited"})
    if n % 11 == 0:
      return self.send_json(503, {"error": "overloaded"})
    if n % 13 == 0:
      time.sleep(1.5)  # slower than the client's timeout
    if n % 17 == 0:
      return self.send_bytes(200, b"{not json")
    if n % 19 == 0:
      return self.send_json(200, {"choices": []})
    msgs = body["messages"]
    assert msgs[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert self.headers["Authorization"] == "Bearer sk-test-secret"
    reply = teacher_reply(self.world, self.questions, msgs, malformed=n % 5 == 0)  # malformed: retried
    self.send_json(200, {"choices": [{"message": {"role": "assistant", "content": reply}}]})


@pytest.fixture
def flaky_server():
  cfg = _cfg(**{"questions": "synthetic:6"})
  world = pipeline.make_world(cfg)
  _Flaky.world, _Flaky.questions, _Flaky.counter = world, [world.question(i) for i in range(6)], 0
  with serve(_Flaky) as url:
    yield url


def test_openai_backend_survives_a_flaky_server(flaky_server, tmp_path, monkeypatch, caplog):
  monkeypatch.setenv("TEST_KEY", "sk-test-secret")
  cfg = _cfg(**{"questions": "synthetic:6", "backend.kind": "openai", "backend.base_url": flaky_server,
                "backend.model": "teacher", "backend.api_key_env": "TEST_KEY", "backend.timeout_s": 0.5,
                "backend.backoff_s": 0.01, "backend.max_retries": 6, "backend.concurrency": 4,
                "progressive.paths_per_question": 2, "progressive.max_retries": 4})
  out = pipeline.run(cfg, str(tmp_path))
  c = out["counts"]
  assert c["paths"] + sum(c["paths_dropped"].values()) == 12  # every path is accounted for
  assert c["paths"] >= 10
  stats = c["backend"]
  assert stats["http_errors"] > 0 and stats["timeouts"] > 0 and stats["bad_responses"] > 0
  assert stats["retries"] >= stats["http_errors"]
  assert "sk-test-secret" not in caplog.text and "sk-test-secret" not in json.dumps(c)
  assert "sk-test-secret" not in repr(pipeline.make_backend(cfg, None, str(tmp_path / "c2")))
  # the response cache: the same run again (journal removed) is answered from disk
  import shutil
  shutil.rmtree(tmp_path / "journal")
  again = pipeline.run(cfg, str(tmp_path))["counts"]["backend"]
  assert again["cache_hits"] >= 0.9 * again["requests"]
  assert _datasets(tmp_path) and again["requests"] > 0


def test_defaults_live_in_the_config_only():
  """ProgressiveConfig / AssemblyConfig take every value from configs/datagen.py: no second default to disagree."""
  from data_gen import progressive
  c = get_config()
  with pytest.raises(TypeError):
    assemble.AssemblyConfig()
  with pytest.raises(TypeError):
    progressive.ProgressiveConfig()
  assert assemble.AssemblyConfig(**c.assembly.to_dict()).high_threshold == c.assembly.high_threshold == 100.0
  assert progressive.ProgressiveConfig(**c.progressive.to_dict()).max_chain_tokens == c.progressive.max_chain_tokens
  with pytest.raises(TypeError, match="surprise"):
    assemble.AssemblyConfig(**{**c.assembly.to_dict(), "surprise": 1})
  assert c.prompts == "ours"
