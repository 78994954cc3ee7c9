"""LLaVA-NeXT / Insight-V data (`data.format="llava"`): JSON arrays, JSON lines, YAML mixtures and their sampling
strategies (as LLaVA-NeXT's train.py reads them), multi-turn conversations trained as given, text-only records,
DPO JSON, datagen questions, format hints, and the CLI: a LLaVA file trains, a file of the wrong format stops
within seconds naming the file and record."""

from __future__ import annotations

import json
import math
import os
import random
import time

import numpy as np
import pytest
from conftest import xla_flags
from PIL import Image
from train_data import loader_config, write_llava_data, write_training_data

from insightv_jax.data import llava_format, loader, records, sources, templates
from insightv_jax.data.batches import DpoBatch
from insightv_jax.data.tokenizer import fit_model_config, train_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = ["What colour is the cat? The cat is black. And the dog? Brown, with white paws. Count the shapes.",
          "Step 1: Count\nThere are 3 circles.\n\nStep 2: Total\nSo the answer is 3. Which one is bigger?"] * 20


def _conv(i: int, turns: int = 1, image: str | None = "imgs/a.png") -> dict:
  """A LLaVA conversation record with `turns` human/gpt exchanges; the image placeholder opens the first turn."""
  conv = []
  for t in range(turns):
    conv += [{"from": "human", "value": ("<image>\n" if image and t == 0 else "") + f"Question {i}.{t}?"},
             {"from": "gpt", "value": f"Answer {i}.{t}."}]
  return {"id": f"r{i}", "conversations": conv, **({"image": image} if image else {})}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_cfg):
  root = tmp_path_factory.mktemp("llava")
  os.makedirs(root / "imgs")
  rng = np.random.default_rng(0)
  for name in ("a", "b"):
    Image.fromarray(rng.integers(0, 255, (56, 48, 3), np.uint8)).save(root / "imgs" / f"{name}.png")
  tok = train_bpe(CORPUS, 320, "llama3")
  return dict(root=str(root), tok=tok, cfg=fit_model_config(tiny_cfg, tok))


def _encoder(data, fmt="llava", template="llava_llama_3", dpo=False, tok=None, **kw):
  cfg = loader_config(max_len=512, batch_size=2, image_root=data["root"], template=template, format=fmt, **kw)
  tok = tok or data["tok"]
  return loader.Encoder(cfg, fit_model_config(data["cfg"], tok), tok, dpo=dpo)


def _runs(mask: np.ndarray) -> list[slice]:
  """The contiguous runs of 1s in a mask."""
  edges = np.flatnonzero(np.diff(np.concatenate([[0], mask, [0]])))
  return [slice(a, b) for a, b in zip(edges[::2], edges[1::2])]


# ------------------------------------------------------------------------------------------- files

def test_json_array_and_json_lines_give_the_same_records_named_by_index_or_line(tmp_path):
  recs = [_conv(i) for i in range(3)]
  (tmp_path / "a.json").write_text(json.dumps(recs, indent=2))  # pretty-printed: one record spans many lines
  (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
  array = sources.open_source("json", str(tmp_path / "a.json"))
  lines = sources.open_source("jsonl", str(tmp_path / "a.jsonl"))
  assert [w for w, _ in array] == [f"{tmp_path}/a.json[{i}]" for i in range(3)]
  assert [w for w, _ in lines] == [f"{tmp_path}/a.jsonl:{i}" for i in (1, 2, 3)]
  assert [json.loads(r) for _, r in array] == [json.loads(r) for _, r in lines] == recs
  rec = llava_format.loads(array[1][1], array[1][0])
  assert isinstance(rec, llava_format.Conversation) and rec.id == "r1"
  assert rec.images == (records.ImageRef(path="imgs/a.png"),)
  assert rec.messages == ({"role": "user", "content": "<image>\nQuestion 1.0?"},
                          {"role": "assistant", "content": "Answer 1.0."})


def _ids(source) -> list[str]:
  return [json.loads(raw)["id"] for _, raw in source]


@pytest.mark.parametrize("strategy, expected", [
    (None, list(range(10))),  # the default: all
    ("all", list(range(10))),
    ("first:3", [0, 1, 2]),
    ("end:3", [7, 8, 9]),
    ("first:25%", [0, 1, 2]),  # ceil(25 * 10 / 100) = 3
    ("end:11%", [8, 9]),  # ceil(1.1) = 2
    ("first:40", list(range(10))),  # past the end: every record
    ("end:0", []),
    ("random:4", "shuffle"),
    ("random:30%", "shuffle"),
])
def test_yaml_mixture_sampling_strategies(tmp_path, strategy, expected):
  (tmp_path / "part").mkdir()
  (tmp_path / "part" / "ten.json").write_text(json.dumps([_conv(i) for i in range(10)]))
  entry = {"json_path": "part/ten.json"}  # relative: to the YAML file's folder
  if strategy is not None:
    entry["sampling_strategy"] = strategy
  (tmp_path / "mix.yaml").write_text(json.dumps({"datasets": [entry]}))  # JSON is YAML
  got = sources.open_source("json", str(tmp_path / "mix.yaml"))
  if expected == "shuffle":  # train.py: random.shuffle(list), then the first N (ours: a seeded random.Random(0))
    order = list(range(10))
    random.Random(0).shuffle(order)
    n = int(strategy.split(":")[1]) if "%" not in strategy else math.ceil(30 * 10 / 100)
    expected = order[:n]
  assert _ids(got) == [f"r{i}" for i in expected]
  assert all(w.startswith(f"{tmp_path}/part/ten.json[") for w, _ in got)  # named in their own file
  if expected:
    assert got[0][0] == f"{tmp_path}/part/ten.json[{expected[0]}]"  # by their index in that file


def test_yaml_mixture_concatenates_entries_in_order_and_draws_from_one_seeded_generator(tmp_path):
  (tmp_path / "ten.json").write_text(json.dumps([_conv(i) for i in range(10)]))
  (tmp_path / "five.jsonl").write_text("\n".join(json.dumps(_conv(100 + i)) for i in range(5)))
  (tmp_path / "mix.yaml").write_text(
      "datasets:\n"
      f"  - json_path: {tmp_path}/ten.json\n    sampling_strategy: random:3\n"
      "  - json_path: five.jsonl\n    sampling_strategy: end:2\n"
      "  - json_path: ten.json\n    sampling_strategy: random:2\n")
  rng = random.Random(0)
  first, third = list(range(10)), list(range(10))
  rng.shuffle(first)
  rng.shuffle(third)
  want = [f"r{i}" for i in first[:3]] + ["r103", "r104"] + [f"r{i}" for i in third[:2]]
  assert _ids(sources.open_source("json", str(tmp_path / "mix.yaml"))) == want
  assert _ids(sources.JsonSource(str(tmp_path / "mix.yaml"), seed=0)) == want


@pytest.mark.parametrize("text, match", [
    ("datasets:\n  - json_path: ten.json\n    sampling_strategy: 10%\n", r"datasets\[0\]: sampling_strategy '10%'"),
    ("datasets:\n  - json_path: ten.json\n    sampling_strategy: last:3\n", "expected all, first:N, end:N"),
    ("datasets:\n  - json_path: nine.json\n", r"datasets\[0\]: json_path '.*nine.json': no such file"),
    ("train: [ten.json]\n", "expected a 'datasets:' list"),
])
def test_yaml_mixture_errors_name_the_file_and_entry(tmp_path, text, match):
  (tmp_path / "ten.json").write_text(json.dumps([_conv(i) for i in range(10)]))
  (tmp_path / "mix.yaml").write_text(text)
  with pytest.raises((ValueError, FileNotFoundError), match=match) as e:
    sources.open_source("json", str(tmp_path / "mix.yaml"))
  assert "mix.yaml" in str(e.value)


def test_json_and_array_record_sources_name_the_other_kind(tmp_path):
  (tmp_path / "a.json").write_text(json.dumps([_conv(0)]))
  with pytest.raises(ValueError, match="is JSON or YAML text, not an ArrayRecord file: set --config.data.source=json"):
    sources.open_source("array_record", str(tmp_path / "a.json"))
  records.write_array_record(str(tmp_path / "r.ar"), [records.Question(id="q", images=(), question="Q?", answer="A")])
  with pytest.raises(ValueError, match="is an ArrayRecord file: set --config.data.source=array_record"):
    sources.open_source("json", str(tmp_path / "r.ar"))


# ----------------------------------------------------------------------------------------- records

@pytest.mark.parametrize("template", ["llava_llama_3", "qwen_1_5"])
def test_multi_turn_record_every_reply_and_its_end_of_turn_are_the_only_targets(data, template):
  tok = data["tok"] if template == "llava_llama_3" else train_bpe(CORPUS, 320, "chatml")
  rec = {"id": 7, "image": "imgs/a.png", "conversations": [
      {"from": "gpt", "value": "A first gpt turn: train.py drops it."},
      {"from": "human", "value": "What colour is the cat?"},
      {"from": "gpt", "value": "The cat is black."},
      {"from": "human", "value": "And the dog? <image>"},  # the placeholder stays where the record puts it
      {"from": "gpt", "value": "Brown, with white paws."},
      {"from": "human", "value": "Count the shapes."},
      {"from": "gpt", "value": "There are 3 circles."}]}
  enc = _encoder(data, template=template, tok=tok)
  out = enc(("talk.json[0]", json.dumps(rec).encode()))
  ids, mask = out["sft"]
  tpl = templates.TEMPLATES[template]
  messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
              for t in rec["conversations"][1:]]
  n_img = enc.proc.num_image_tokens(*out["sizes"][0])
  want_ids, want_mask = templates.encode_chat(tok, tpl, messages, image_token_id=enc.image_token_id,
                                              image_token_counts=[n_img])
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(mask, want_mask)
  # the token stream: the template's default system turn, then the turns in order, the image where it was put
  text = tok.decode(ids[ids != enc.image_token_id])
  assert text.startswith(tpl.bos + ("<|start_header_id|>system" if template == "llava_llama_3" else "<|im_start|>"))
  assert tpl.default_system in text and "train.py drops it" not in text
  assert text.index("The cat is black.") < text.index("And the dog?") < text.index("Brown, with")
  image_at = np.flatnonzero(ids == enc.image_token_id)
  assert len(image_at) == n_img and (np.diff(image_at) == 1).all() and mask[image_at].sum() == 0
  # the loss mask: exactly three runs, each one reply and its end-of-turn token, in order
  replies = ["The cat is black.", "Brown, with white paws.", "There are 3 circles."]
  runs = _runs(mask)
  assert [tok.decode(ids[r]) for r in runs] == [r + tpl.stop for r in replies]
  assert sum(r.stop - r.start for r in runs) == mask.sum()
  assert tok.decode(ids[image_at[-1] + 1:runs[1].start]).strip().endswith(
      "<|start_header_id|>assistant<|end_header_id|>" if template == "llava_llama_3" else "<|im_start|>assistant")


def test_text_only_record_trains_without_images(data):
  rec = _conv(3, turns=2, image=None)
  out = _encoder(data)(("t.json[3]", json.dumps(rec).encode()))
  ids, mask = out["sft"]
  assert out["tiles"] == [] and out["sizes"] == []
  assert len(_runs(mask)) == 2
  # through the loader: a batch row with no image (an empty slot of size (0, 0))
  path = os.path.join(data["root"], "text_only.json")
  with open(path, "w") as f:
    json.dump([rec], f)
  cfg = loader_config(max_len=512, batch_size=1, image_root=data["root"], template="llava_llama_3",
                            format="llava", num_epochs=1)
  (batch, stats), = list(loader.make_dataset(sources.open_source("json", path), cfg, data["cfg"], data["tok"]))
  assert stats.skipped == 0 and batch.image_sizes.tolist() == [[0, 0]]
  np.testing.assert_array_equal(batch.tokens.loss_mask[0, :len(mask)], mask)


@pytest.mark.parametrize("change, field, message", [
    (lambda r: r["conversations"][1].update({"from": "bot"}), "conversations[1].from", "'bot' is not one of"),
    (lambda r: r["conversations"][0].update({"value": 3}), "conversations[0].value", "must be a string"),
    (lambda r: r["conversations"][1].update({"value": "<image> here"}), "conversations[1].value", "in a gpt turn"),
    (lambda r: r.update({"image": "/etc/passwd"}), "image", "is absolute"),
    (lambda r: r.update({"image": "../../outside.png"}), "image", "escapes the dataset root"),
    (lambda r: r.update({"image": ["imgs/a.png", "imgs/b.png"]}), "conversations", "1 <image> placeholders for 2"),
    (lambda r: r.pop("image"), "conversations", "1 <image> placeholders for 0 images"),
    (lambda r: r.update({"video": "v.mp4"}), "video", "not supported"),
    (lambda r: r.pop("conversations"), "conversations", "is missing"),
    (lambda r: r.update({"conversations": r["conversations"][:1]}), "conversations", "no gpt turn"),
])
def test_invalid_records_name_the_file_index_id_and_field(change, field, message):
  rec = _conv(5)
  change(rec)
  with pytest.raises(records.RecordError) as e:
    llava_format.loads(json.dumps(rec), "data/llava.json[5]")
  assert str(e.value).startswith(f"data/llava.json[5] (id='r5'): field {field!r}: ")
  assert message in str(e.value)


def test_two_images_with_two_placeholders(data):
  rec = {"id": "two", "image": ["imgs/a.png", "imgs/b.png"], "conversations": [
      {"from": "human", "value": "<image>\n<image>\nSame cat?"}, {"from": "gpt", "value": "Yes."}]}
  out = _encoder(data, images_per_row=2)(("two.json[0]", json.dumps(rec).encode()))
  assert len(out["tiles"]) == 2
  skipped = _encoder(data)(("two.json[0]", json.dumps(rec).encode()))  # images_per_row=1
  assert isinstance(skipped, loader.Skipped) and "2 images, more than images_per_row=1" in skipped.reason


def test_dpo_json_pairs(data):
  pair = {"id": "p0", "image": "imgs/a.png", "prompt": "What colour is <image> the cat?", "chosen": "The cat is black.",
          "rejected": "The cat is white.", "answer": "black", "chosen_score": 9.0, "rejected_score": 2}
  rec = llava_format.loads(json.dumps(pair), "dpo.json[0]")
  assert isinstance(rec, llava_format.Preference)
  assert rec.prompt == "<image>\nWhat colour is  the cat?"  # train_dpo.py: placeholders out, one per image first
  assert rec.messages_for("rejected") == [{"role": "user", "content": rec.prompt},
                                          {"role": "assistant", "content": "The cat is white."}]
  out = _encoder(data, dpo=True)(("dpo.json[0]", json.dumps(pair).encode()))
  for side in ("chosen", "rejected"):
    ids, mask = out[side]
    assert [data["tok"].decode(ids[r]) for r in _runs(mask)] == [pair[side] + "<|eot_id|>"]
  assert "ref_logps" not in out and len(out["tiles"]) == 1
  # an SFT job given pairs (and a DPO job given conversations) skips them, saying why
  sft = _encoder(data)(("dpo.json[0]", json.dumps(pair).encode()))
  assert isinstance(sft, loader.Skipped) and "train pairs with configs/dpo.py" in sft.reason
  dpo = _encoder(data, dpo=True)(("c.json[0]", json.dumps(_conv(0)).encode()))
  assert isinstance(dpo, loader.Skipped) and "not a preference pair" in dpo.reason
  with pytest.raises(records.RecordError, match=r"dpo.json\[0\] \(id='p0'\): field 'chosen_score': must be a number"):
    llava_format.loads(json.dumps({**pair, "chosen_score": "high"}), "dpo.json[0]")


def test_dpo_json_through_the_loader(data):
  path = os.path.join(data["root"], "pairs.json")
  pairs = [{"id": f"p{i}", "image": "imgs/a.png", "prompt": f"Question {i}?", "chosen": f"Right {i}.",
            "rejected": f"Wrong {i}, long wrong."} for i in range(4)]
  with open(path, "w") as f:
    json.dump(pairs, f)
  cfg = loader_config(max_len=512, batch_size=4, image_root=data["root"], template="llava_llama_3",
                            format="llava", num_epochs=1)
  (batch, stats), = list(loader.make_dataset(sources.open_source("json", path), cfg, data["cfg"], data["tok"],
                                             batch_type=DpoBatch))
  assert isinstance(batch, DpoBatch) and stats.skipped == 0 and batch.ref_logps is None
  assert batch.pixel_values.shape[0] == 4
  assert (batch.chosen.loss_mask.sum(1) < batch.rejected.loss_mask.sum(1)).all()


def test_format_hints():
  conv = json.dumps(_conv(0))
  pair = json.dumps({"prompt": "Q?", "chosen": "a", "rejected": "b"})
  ours = records.Question(id="q", images=(), question="Q?", answer="A").dumps()
  hint = llava_format.format_hint
  assert hint(conv, "auto") == "this looks like LLaVA conversation JSON: add --config.data.format=llava"
  assert "LLaVA-NeXT DPO JSON: add --config.data.format=llava (with configs/dpo.py)" in hint(pair, "cot")
  assert "insightv-jax 'question' records" in hint(ours, "llava")
  assert hint(conv, "llava") is None and hint(ours, "auto") is None and hint(b"[", "auto") is None


def test_datagen_reads_questions_from_llava_json(tmp_path):
  from configs.datagen import get_config
  from data_gen import pipeline
  recs = [_conv(0, turns=2), _conv(1, image=None), {**_conv(0), "image": "imgs/b.png"}]
  (tmp_path / "q.json").write_text(json.dumps(recs))
  cfg = get_config()
  cfg.questions = f"llava:{tmp_path}/q.json"
  cfg.backend.kind, cfg.scorer = "openai", "llm"
  qs, world = pipeline.load_questions(cfg)
  assert world is None
  assert [(q.id, q.question, q.answer) for q in qs] == [("r0", "Question 0.0?", "Answer 0.0."),
                                                        ("r1", "Question 1.0?", "Answer 1.0."),
                                                        ("r0#1", "Question 0.0?", "Answer 0.0.")]
  assert [q.images for q in qs] == [(records.ImageRef(path="imgs/a.png"),), (), (records.ImageRef(path="imgs/b.png"),)]
  (tmp_path / "bad.json").write_text(json.dumps([_conv(0), {"id": "x", "conversations": []}]))
  cfg.questions = f"llava:{tmp_path}/bad.json"
  with pytest.raises(records.RecordError, match=r"bad.json\[1\] \(id='x'\): field 'conversations'"):
    pipeline.load_questions(cfg)


# ----------------------------------------------------------------------------------------------- CLI

def _cli(cli, workdir, *overrides, job="sft_reasoning"):
  args = [f"--config={ROOT}/configs/{job}.py:tiny",
          f"--workdir={workdir}", "--config.checkpoint.every=0", "--config.export_params=False"]
  args += [f"--config.{o}" for o in overrides]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1)}
  t0 = time.time()
  done = cli.run("pipelines.cli.train", args, env=env, workdir=f"{workdir}-logs")
  return done, time.time() - t0


@pytest.fixture(scope="module")
def llava_files(tmp_path_factory):
  return write_llava_data(str(tmp_path_factory.mktemp("llava_cli")))


def test_cli_trains_on_llava_json_and_an_image_folder(llava_files, tmp_path, cli):
  d = llava_files
  done, _ = _cli(cli, tmp_path / "run", f"tokenizer={d['tok']}", f"data.paths={d['llava']}",
                 f"data.image_root={d['root']}", "data.format=llava", "data.template=llava_llama_3",
                 "optim.total_steps=3")  # source: auto
  assert done.returncode == 0, done.stderr[-3000:]
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) and r["skipped_records"] == 0 for r in rows)


@pytest.mark.parametrize("case", ["llava_as_ours", "ours_as_llava"])
def test_cli_on_the_wrong_format_stops_within_seconds_naming_the_file_and_record(llava_files, tmp_path, case, cli):
  d = llava_files
  if case == "llava_as_ours":
    path, flags, hint = d["llava"], [], "this looks like LLaVA conversation JSON: add " \
        "--config.data.format=llava"
  else:
    path = write_training_data(str(tmp_path / "ours"), n=8)["sft"]
    flags, hint = ["data.format=llava"], "this looks like insightv-jax 'reasoning_sft' records"
  done, seconds = _cli(cli, tmp_path / "run", f"tokenizer={d['tok']}", f"data.paths={path}",
                       f"data.image_root={d['root']}", *flags)
  assert done.returncode != 0
  assert seconds < 30, seconds
  last = done.stderr.strip().splitlines()[-1]
  name = path if case == "llava_as_ours" else os.path.basename(path)
  assert last.startswith(f"error: {name}: none of the first 100 records read is usable"), last
  assert f"First bad record: {name}[" in last and hint in last, last
  assert done.stderr.count("skipping record") == 0  # stopped before the pipeline started: no warning flood
