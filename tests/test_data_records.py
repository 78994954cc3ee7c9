"""Records: validation errors name the record and field; JSONL / ArrayRecord / TFDS round trips."""

from __future__ import annotations

import json

import pytest

from insightv_jax.data import records, sources


def _q(**kw):
  base = dict(kind="question", schema_version=1, id="q1", images=[{"path": "images/a.png"}], question="How many?",
              answer="3")
  base.update(kw)
  return base


@pytest.mark.parametrize("patch, field, message", [
    (dict(images=[{"path": "/etc/passwd"}]), "images", "absolute"),
    (dict(images=[{"path": "a/../../x.png"}]), "images", "escapes the dataset root"),
    (dict(images=[{"path": "a.png", "data_b64": "AA=="}]), "images", "got both"),
    (dict(images=[{"data_b64": "!!"}]), "images", "base64"),
    (dict(answer=""), "answer", "non-empty"),
    (dict(choices=["x", "y"], answer="C"), "answer", "option letter"),
    (dict(schema_version=7), "schema_version", "not supported"),
    (dict(kind="nope"), "kind", "is not one of"),
    (dict(extra=1), "extra", "is not a field"),
])
def test_validation_errors_name_record_and_field(patch, field, message):
  d = _q(**patch)
  with pytest.raises(records.RecordError) as e:
    records.from_json(d, "f.jsonl:3")
  assert "f.jsonl:3" in str(e.value) and "id='q1'" in str(e.value)
  assert repr(field) in str(e.value) and message in str(e.value)


def test_missing_field_and_bad_json():
  d = _q()
  del d["question"]
  with pytest.raises(records.RecordError, match=r"f:1 \(id='q1'\): field 'question': is missing"):
    records.from_json(d, "f:1")
  with pytest.raises(records.RecordError, match="f:2: not valid JSON"):
    records.loads("{oops", "f:2")
  path = dict(kind="path", schema_version=1, id="p", question_id="q", final_answer="1",
              steps=[{"title": "t", "content": "c", "action": "jump"}])
  with pytest.raises(records.RecordError, match=r"steps\[0\]\.action"):
    records.from_json(path, "p.jsonl:9")
  pair = dict(kind="dpo_pair", schema_version=1, id="d", images=[], prompt="p", chosen="a", rejected="b",
              ref_chosen_logp=-1.0, ref_rejected_logp=-2.0)
  with pytest.raises(records.RecordError, match="ref_hash"):
    records.from_json(pair, "d:1")


def test_jsonl_and_array_record_round_trip(tmp_path):
  recs = [
      records.Question(id="q", images=(records.ImageRef(data=b"\x89PNG..."),), question="Q?", answer="B",
                       choices=("x", "y"), meta={"task": "count"}),
      records.ReasoningPath(id="p", question_id="q", steps=(records.Step("a", "b"), records.Step("c", "d", "summary")),
                            final_answer="B", scores={"reasoning": 80.0}),
      records.ReasoningSFT(id="r", images=(records.ImageRef(path="i/1.png"),), question="Q?", reasoning="chain"),
      records.SummarySFT(id="s", images=(), question="Q?", reasoning="", answer="4", chain_quality="none"),
      records.DPOPair(id="d", images=(), prompt="p", chosen="a", rejected="b", ref_chosen_logp=-1.5,
                      ref_rejected_logp=-2.5, ref_hash="abc"),
  ]
  records.write_jsonl(str(tmp_path / "r.jsonl"), recs)
  assert list(records.read_jsonl(str(tmp_path / "r.jsonl"))) == recs
  records.write_array_record(str(tmp_path / "r.ar"), recs)
  src = sources.ArrayRecordSource(str(tmp_path / "r.ar"))
  assert len(src) == 5
  assert [records.loads(src[i][1], src[i][0]) for i in range(5)] == recs
  assert src[2][0] == "r.ar[2]"
  # a failed write leaves the previous file intact
  bad = records.ReasoningSFT(id="", images=(), question="Q", reasoning="c")
  with pytest.raises(records.RecordError):
    records.write_jsonl(str(tmp_path / "r.jsonl"), recs + [bad])
  assert len(list(records.read_jsonl(str(tmp_path / "r.jsonl")))) == 5


def test_tfds_source_round_trip(tmp_path):
  from insightv_jax.data.tfds_source import TfdsRecordSource, prepare_tfds
  (tmp_path / "img").mkdir()
  (tmp_path / "img" / "a.png").write_bytes(b"PNGDATA")
  recs = [records.ReasoningSFT(id=f"r{i}", images=(records.ImageRef(path="img/a.png"),), question="Q?",
                               reasoning=f"chain {i}") for i in range(3)]
  records.write_jsonl(str(tmp_path / "train.jsonl"), recs)
  builder_dir = prepare_tfds(str(tmp_path / "tfds"), {"train": str(tmp_path / "train.jsonl")},
                             image_root=str(tmp_path))
  src = TfdsRecordSource(builder_dir, "train")
  got = sorted((records.loads(src[i][1]) for i in range(len(src))), key=lambda r: r.id)
  assert [r.reasoning for r in got] == ["chain 0", "chain 1", "chain 2"]
  assert all(r.images[0].data == b"PNGDATA" for r in got)
  json.dumps(src[0][0])
