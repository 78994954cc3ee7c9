"""Benchmark files as users have them (VLMEvalKit TSVs, MathVista's JSON) -> questions -> official report rows."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from PIL import Image

from insightv_jax.data import records
from insightv_jax.data.images import decode
from insightv_jax.eval import loop, official, readers, report


def _png(colour) -> bytes:
  buf = io.BytesIO()
  Image.new("RGB", (4, 3), colour).save(buf, format="PNG")
  return buf.getvalue()


def _b64(colour) -> str:
  return base64.b64encode(_png(colour)).decode("ascii")


def _write_tsv(path, header, rows):
  with open(path, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, delimiter="\t")  # pandas' quoting, as VLMEvalKit's own TSVs are written
    w.writerow(header)
    w.writerows(rows)
  return str(path)


@pytest.fixture
def mmbench_tsv(tmp_path):
  """Question 1 with its two rotated copies (index + k * 1e6) whose `image` points back at row 1, and question 2
  with a hint (NaN for question 1) and a third option left empty."""
  header = ["index", "question", "hint", "A", "B", "C", "answer", "category", "image", "source", "l2-category",
            "split"]
  rows = [
      [1, "What colour is the square?", "", "red", "green", "blue", "A", "color", _b64("red"), "src",
       "coarse_perception", "dev"],
      [2, "Is the tile bright?", "Look at\tthe tile.", "yes", "no", "None", "B", "light", _b64("black"), "src",
       "attribute_reasoning", "dev"],
      [1000001, "What colour is the square?", "", "green", "blue", "red", "C", "color", "1", "src",
       "coarse_perception", "dev"],
      [2000001, "What colour is the square?", "nan", "blue", "red", "green", "B", "color", "1", "src",
       "coarse_perception", "dev"],
  ]
  return _write_tsv(tmp_path / "MMBench_DEV_EN.tsv", header, rows)


def test_tsv_with_base64_and_index_referenced_images(mmbench_tsv):
  qs = readers.read_benchmark(mmbench_tsv)
  assert [q.id for q in qs] == ["MMBench_DEV_EN-1", "MMBench_DEV_EN-2", "MMBench_DEV_EN-1000001",
                                "MMBench_DEV_EN-2000001"]
  # the copies' `image` cell ("1") refers to row 1's image
  assert qs[2].images[0].data == qs[0].images[0].data == _png("red")
  assert decode(qs[3].images[0].data).getpixel((0, 0)) == (255, 0, 0)
  assert qs[1].images[0].data == _png("black")
  q = qs[2]
  assert q.choices == ("green", "blue", "red") and q.answer == "C"
  assert q.meta["scorer"] == "mcq_circular" and q.meta["index"] == 1000001
  assert q.meta["category"] == "color" and q.meta["l2-category"] == "coarse_perception"
  assert q.meta["row"]["image"] == "1" and q.meta["row"]["split"] == "dev"  # the row keeps the reference only


def test_multiple_choice_row_with_a_hint_and_pandas_missing_cells(mmbench_tsv):
  qs = readers.read_benchmark(mmbench_tsv)
  # a hint goes before the question as VLMEvalKit's prompt has it; an empty or "nan" hint is no hint
  assert qs[1].question == "Hint: Look at\tthe tile.\nQuestion: Is the tile bright?"
  assert qs[0].question == qs[3].question == "What colour is the square?"
  # pandas reads the option "None" as NaN: VLMEvalKit offers two options, so do we
  assert qs[1].choices == ("yes", "no") and qs[1].meta["row"]["C"] is None


def test_tsv_errors_name_the_row(tmp_path):
  header = ["index", "question", "A", "B", "answer", "image"]
  bad_ref = _write_tsv(tmp_path / "MMStar.tsv", header, [[1, "Q?", "x", "y", "A", "7"]])
  with pytest.raises(records.RecordError, match=r"index=1: field 'image': '7'"):
    readers.read_benchmark(bad_ref)
  bad_answer = _write_tsv(tmp_path / "MMStar2.tsv", header, [[1, "Q?", "x", "y", "C", _b64("red")]])
  with pytest.raises(records.RecordError, match=r"index=1\): field 'answer': 'C'"):
    readers.read_benchmark(bad_answer)
  test_split = _write_tsv(tmp_path / "MMBench_TEST_EN.tsv", ["index", "question", "A", "B", "image"],
                          [[1, "Q?", "x", "y", _b64("red")]])
  with pytest.raises(records.RecordError, match="no 'answer' column"):
    readers.read_benchmark(test_split)


def test_rows_without_an_image_are_skipped_and_image_lists_are_read(tmp_path):
  path = _write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", ["index", "question", "A", "B", "answer", "image"], [
      [1, "Compare <image 1> and <image 2>", "same", "different", "B", str([_b64("red"), _b64("blue")])],
      [2, "No picture here", "x", "y", "A", ""],
  ])
  qs = readers.read_benchmark(path)
  assert len(qs) == 1 and [r.data for r in qs[0].images] == [_png("red"), _png("blue")]
  assert qs[0].meta["scorer"] == "mmmu"


def test_mme_and_chartqa_tsvs(tmp_path):
  mme_path = _write_tsv(tmp_path / "MME.tsv", ["index", "image", "question", "answer", "category", "image_path"], [
      [0, _b64("white"), "Is there text? Please answer yes or no.", "Yes", "OCR", "OCR/0.png"],
      [1, "0", "Is there a cat? Please answer yes or no.", "No", "OCR", "OCR/0.png"],
  ])
  qs = readers.read_benchmark(mme_path)
  assert [q.answer for q in qs] == ["Yes", "No"] and all(q.meta["scorer"] == "mme" for q in qs)
  assert qs[1].choices is None and qs[1].images[0].data == _png("white")
  chart = _write_tsv(tmp_path / "ChartQA_TEST.tsv", ["index", "image", "question", "answer", "split"], [
      [0, _b64("white"), "What is the peak value?", "12.5", "human"],
  ])
  q = readers.read_benchmark(chart)[0]
  assert q.question == "What is the peak value?\nAnswer the question using a single word or phrase."
  assert q.meta["scorer"] == "chartqa" and q.answer == "12.5"


def test_image_path_tsv_finds_images_where_vlmevalkit_does(tmp_path):
  (tmp_path / "images" / "MMStar").mkdir(parents=True)
  (tmp_path / "images" / "MMStar" / "q1.png").write_bytes(_png("green"))
  path = _write_tsv(tmp_path / "MMStar.tsv", ["index", "question", "A", "B", "answer", "image_path"],
                    [[1, "Q?", "x", "y", "B", "q1.png"]])
  q = readers.read_benchmark(path)[0]
  assert q.images[0].path == "q1.png"
  assert loop.to_example(q, image_root="/elsewhere").image.getpixel((0, 0)) == (0, 128, 0)


def test_mathvista_testmini_json_and_image_folder(tmp_path):
  (tmp_path / "images").mkdir()
  (tmp_path / "images" / "1.png").write_bytes(_png("blue"))
  data = {
      "2": {"question": "How long is the bar?", "image": "images/1.png", "choices": None, "answer": "1.5",
            "question_type": "free_form", "answer_type": "float", "precision": 1.0, "unit": None,
            "query": "Hint: ...float...\nQuestion: How long is the bar?",
            "metadata": {"category": "math-targeted-vqa", "task": "figure question answering",
                         "skills": ["arithmetic reasoning"], "grade": "high school"}},
      "1": {"question": "Which shape?", "image": "images/1.png", "choices": ["circle", "square"], "answer": "square",
            "question_type": "multi_choice", "answer_type": "text", "precision": None, "unit": None,
            "query": "Hint: ...\nQuestion: Which shape?\nChoices:\n(A) circle\n(B) square",
            "metadata": {"category": "general-vqa", "task": "textbook question answering", "skills": []}},
  }
  (tmp_path / "testmini.json").write_text(json.dumps(data))
  qs = readers.read_benchmark(str(tmp_path / "testmini.json"))
  assert [q.id for q in qs] == ["MathVista_testmini-1", "MathVista_testmini-2"]
  mc, free = qs
  assert mc.answer == "B" and mc.meta["row"]["answer"] == "square" and mc.meta["row"]["answer_option"] == "B"
  assert mc.question.endswith("(B) square") and mc.choices is None and mc.meta["scorer"] == "mathvista"
  assert free.answer == "1.5" and free.meta["row"]["skills"] == "['arithmetic reasoning']"
  assert free.meta["row"]["task"] == "figure question answering" and free.meta["category"] == "math-targeted-vqa"
  assert loop.to_example(free, image_root=None).image.size == (4, 3)


def test_jsonl_rows_get_the_vlmevalkit_shape(tmp_path):
  lines = [{"question": "Which?", "options": ["x", "y"], "answer": "B", "hint": "Think.", "category": "logic"},
           {"question": "Value?", "answer": "12.5"}]
  (tmp_path / "mmstar.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  mc, value = readers.read_benchmark(str(tmp_path / "mmstar.jsonl"))
  assert mc.question == "Hint: Think.\nQuestion: Which?" and mc.meta["scorer"] == "mcq"
  assert {k: mc.meta["row"][k] for k in ("index", "A", "B", "answer")} == {"index": 1, "A": "x", "B": "y",
                                                                          "answer": "B"}
  assert value.meta["scorer"] is None  # no official scorer: is_correct decides


def test_live_run_writes_official_aggregates(mmbench_tsv, tmp_path):
  """evaluate -> per-question rows decided by the official rule; write_report -> VLMEvalKit's circular numbers."""
  qs = readers.read_benchmark(mmbench_tsv)
  answers = {q.id: q.answer for q in qs}
  answers["MMBench_DEV_EN-2000001"] = "A"  # one rotation of question 1 wrong: question 1 fails

  def system(examples):
    return [{"reply": f"<output>{answers[ex.id]}</output>", "chain": "", "judgement": None} for ex in examples]

  out = str(tmp_path / "run")
  rows = loop.evaluate("direct", system, qs, out, batch_size=3)
  assert [r["correct"] for r in rows] == [True, True, True, False]  # per row: each rotation alone
  assert rows[0]["prediction"] == "A" and rows[0]["extracted"] == "A" and rows[0]["scorer"] == "mcq_circular"
  summary = report.write_report(out, {"direct": rows})
  card = summary["direct"]["official"]["MMBench_DEV_EN"]
  assert card["headline"] == {"name": "Overall", "value": 0.5} and card["n"] == 2
  assert card["aggregate"] == {"Overall": 0.5, "AR": 1.0, "CP": 0.0, "color": 0.0, "light": 1.0}
  saved = json.loads((tmp_path / "run" / "report.json").read_text())
  assert saved["direct"]["official"]["MMBench_DEV_EN"]["aggregate"]["CP"] == 0.0
  md = (tmp_path / "run" / "report.md").read_text()
  assert "## MMBench_DEV_EN: official score (circular accuracy, %" in md
  assert "| **Overall** | **50.00** |" in md and "| CP | 0.00 |" in md


def test_live_run_scores_mathvista_mme_and_chartqa(tmp_path):
  (tmp_path / "images").mkdir()
  (tmp_path / "images" / "1.png").write_bytes(_png("blue"))
  problem = {"image": "images/1.png", "unit": None, "metadata": {"category": "general-vqa", "skills": ["algebra"]}}
  (tmp_path / "testmini.json").write_text(json.dumps({
      "1": {**problem, "question": "Which?", "choices": ["circle", "square"], "answer": "square",
            "question_type": "multi_choice", "answer_type": "text", "precision": None, "query": "Which? (A) (B)"},
      "2": {**problem, "question": "How long?", "choices": None, "answer": "1.5", "question_type": "free_form",
            "answer_type": "float", "precision": 1.0, "query": "How long?"},
  }))
  mme_path = _write_tsv(tmp_path / "MME.tsv", ["index", "image", "question", "answer", "category", "image_path"], [
      [0, _b64("white"), "Text? Please answer yes or no.", "Yes", "OCR", "OCR/0.png"],
      [1, "0", "Cat? Please answer yes or no.", "No", "OCR", "OCR/0.png"],
  ])
  chart = _write_tsv(tmp_path / "ChartQA_TEST.tsv", ["index", "image", "question", "answer", "split"], [
      [0, _b64("white"), "Peak?", "100", "human"], [1, "0", "Label?", "Asia", "human"]])
  qs = [q for p in (str(tmp_path / "testmini.json"), mme_path, chart) for q in readers.read_benchmark(p)]
  replies = {"MathVista_testmini-1": "B", "MathVista_testmini-2": "The length is 1.5",
             "MME-0": "Yes, there is.", "MME-1": "Yes", "ChartQA_TEST-0": "96", "ChartQA_TEST-1": "asia."}
  system = lambda exs: [{"reply": replies[ex.id], "chain": "", "judgement": None} for ex in exs]
  rows = loop.evaluate("direct", system, qs, str(tmp_path / "run"))
  assert {r["id"]: r["correct"] for r in rows} == {
      "MathVista_testmini-1": True, "MathVista_testmini-2": True, "MME-0": True, "MME-1": False,
      "ChartQA_TEST-0": True, "ChartQA_TEST-1": False}
  cards = report.summarise(rows)["official"]
  assert cards["MathVista_testmini"]["headline"]["value"] == 1.0
  assert cards["MathVista_testmini"]["aggregate"]["skills/algebra"] == 1.0
  # OCR: acc 1/2, acc+ 0 -> 50; perception sums the perception categories present (VLMEvalKit needs all ten)
  assert cards["MME"]["aggregate"] == {"perception": 50.0, "OCR": 50.0}
  assert cards["MME"]["headline"] == {"name": "perception+reasoning", "value": 50.0}
  assert cards["ChartQA_TEST"]["aggregate"] == {"human": 50.0, "Overall": 50.0}


def test_mmmu_tsv_is_scored_live_by_the_official_mmmu_rules(tmp_path):
  """VLMEvalKit's MMMU rows (open questions have no options) are judged by scoring.mmmu, and the benchmark's
  aggregate is the official subject / domain table."""
  path = _write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", ["index", "id", "question", "A", "B", "C", "answer", "image"], [
      ["1", "validation_Art_1", "Which animal?", "cat", "dog", "cow", "B", _b64("red")],
      ["2", "validation_Art_2", "How many?", "", "", "", "12", "1"],
      ["3", "validation_Math_1", "Pick one", "x", "y", "", "A", "1"]])
  qs = readers.read_benchmark(path)
  assert [q.meta["scorer"] for q in qs] == ["mmmu"] * 3
  # MMMU's own rules: the last "(X)" wins; an open answer matches a number anywhere in the reply
  replies = ["Not (A) but (B)", "There are 12 of them.", "It is y, (B)"]
  rows = [{"id": q.id, "benchmark": q.meta["benchmark"], **official.score_one(q, r)} for q, r in zip(qs, replies)]
  assert [(r["extracted"], r["correct"]) for r in rows[::2]] == [("B", True), ("B", False)]
  assert rows[1]["correct"] and 12.0 in rows[1]["extracted"]
  card = official.official_scores(rows)["MMMU_DEV_VAL"]
  assert card.aggregate["Art"] == 1.0 and card.aggregate["Math"] == 0.0 and card.headline == ("Overall", 2 / 3)


def test_a_missing_image_fails_its_question_and_the_run_goes_on(tmp_path, caplog):
  """Like a bad training record: the question counts as wrong, named by benchmark file, line and id in a warning
  and in report.md / report.json; the journal does not keep it, so a rerun asks it again."""
  (tmp_path / "img").mkdir()
  (tmp_path / "img" / "1.png").write_bytes(_png("red"))
  (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
  bench = tmp_path / "mmstar.jsonl"
  bench.write_text("\n".join(json.dumps(x) for x in [
      {"id": "q1", "question": "Colour?", "answer": "red", "image": "img/1.png"},
      {"id": "q2", "question": "Colour?", "answer": "red", "image": "img/gone.png"},
      {"id": "q3", "question": "Colour?", "answer": "red", "image": "img/bad.png"},
      {"id": "q4", "question": "Colour?", "answer": "red", "image": "img/1.png"}]) + "\n")
  qs = readers.read_benchmark(str(bench))
  asked = []
  system = lambda exs: asked.extend(ex.id for ex in exs) or [{"reply": "red", "chain": "", "judgement": None}
                                                             for _ in exs]
  out = str(tmp_path / "run")
  with caplog.at_level("WARNING"):
    rows = loop.evaluate("direct", system, qs, out, image_root=str(tmp_path), batch_size=3)
  assert asked == ["q1", "q4"] and [r["correct"] for r in rows] == [True, False, False, True]
  assert rows[1]["file"] == str(bench) and rows[1]["line"] == 2 and "gone.png" in rows[1]["error"]
  assert f"{bench}:2: question 'q2' counts as failed" in caplog.text and f"{bench}:3: question 'q3'" in caplog.text
  summary = report.write_report(out, {"direct": rows})
  assert summary["direct"]["overall"] == 0.5 and summary["direct"]["n"] == 4
  saved = json.loads((tmp_path / "run" / "report.json").read_text())
  assert [(f["id"], f["file"], f["line"]) for f in saved["direct"]["failed"]] == [("q2", str(bench), 2),
                                                                                ("q3", str(bench), 3)]
  md = (tmp_path / "run" / "report.md").read_text()
  assert f"`{bench}:2` **q2**: image cannot be read" in md and "could not be asked (2; counted wrong)" in md
  # the image comes back: a rerun asks exactly the failed questions
  (tmp_path / "img" / "gone.png").write_bytes(_png("red"))
  asked.clear()
  rows = loop.evaluate("direct", system, qs, out, image_root=str(tmp_path))
  assert asked == ["q2"] and [r["correct"] for r in rows] == [True, True, False, True]
