"""Atomic writes, the JSONL journal reader and stage markers: what every resumable stage relies on."""

import json
import os

import pytest

from insightv_jax.utils.files import append_jsonl, atomic_write, is_done, mark_done, read_jsonl_log, write_json


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
  path = str(tmp_path / "report.json")
  write_json(path, {"v": 1})
  with pytest.raises(RuntimeError):
    with atomic_write(path) as f:
      f.write('{"v": 2, "trunc')
      raise RuntimeError("killed mid-write")
  assert json.load(open(path)) == {"v": 1}
  assert os.listdir(tmp_path) == ["report.json"]


def test_journal_drops_a_line_cut_by_a_kill_and_appends_cleanly_after_it(tmp_path):
  path = str(tmp_path / "journal.jsonl")
  append_jsonl(path, [{"i": 0}, {"i": 1}])
  with open(path, "a") as f:
    f.write('{"i": 2, "tor')  # a kill in the middle of a write
  assert read_jsonl_log(path) == [{"i": 0}, {"i": 1}]
  append_jsonl(path, [{"i": 2}])
  assert read_jsonl_log(path) == [{"i": 0}, {"i": 1}, {"i": 2}]
  assert read_jsonl_log(path, keep=lambda r: r["i"] < 2) == [{"i": 0}, {"i": 1}]
  assert open(path).read() == '{"i": 0}\n{"i": 1}\n'  # the file now holds exactly the kept rows
  assert read_jsonl_log(str(tmp_path / "absent.jsonl")) == []


def test_stage_marker(tmp_path):
  stage = str(tmp_path / "round_1" / "train")
  assert not is_done(stage)
  mark_done(stage)
  assert is_done(stage)


def test_a_hub_id_is_org_slash_name_that_names_no_local_path(tmp_path, monkeypatch):
  from insightv_jax.utils.inputs import is_hub_id
  monkeypatch.chdir(tmp_path)
  assert is_hub_id("meta-llama/Meta-Llama-3-8B") and is_hub_id("Lin-Chen/sharegpt4v_7b")
  (tmp_path / "runs" / "tok").mkdir(parents=True)
  assert not is_hub_id("runs/tok")  # a local folder of that shape is a folder
  assert not any(map(is_hub_id, ["", "tok", "./tok", "/abs/tok", "a/b/c", "~/tok"]))
