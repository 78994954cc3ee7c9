"""The Grain loader: exact resume, packing == padding in the model's loss, multi-process coverage, bad records,
typed batches whose shapes the train step can know from the config."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_data import loader_config

from data_gen.synthetic.world import World, WorldConfig
from insightv_jax.data import loader, prompts, records, sources
from insightv_jax.data.batches import BatchStats, DpoBatch, Loaded, SftBatch
from insightv_jax.data.tokenizer import fit_model_config, train_bpe
from insightv_jax.model.llava import LlavaNext
from insightv_jax.train.losses import masked_cross_entropy

N = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_cfg):
  root = tmp_path_factory.mktemp("synthetic")
  world = World(WorldConfig(kinds=("left_of", "chart_range"), image_size=56, bars=3), seed=1)
  qs = world.write(str(root), "train", N)
  sft = [records.ReasoningSFT(id=q.id, images=q.images, question=q.question,
                              reasoning=prompts.format_chain(world.teacher_path(q).steps)) for q in qs]
  records.write_array_record(str(root / "sft.ar"), sft)
  pairs = [records.DPOPair(id=r.id, images=r.images, prompt=r.question, chosen=r.reasoning,
                           rejected=sft[(i + 1) % N].reasoning) for i, r in enumerate(sft)]
  records.write_array_record(str(root / "dpo.ar"), pairs)
  tok = train_bpe([r.reasoning + " " + r.question for r in sft], 400, "llama3")
  cfg = fit_model_config(tiny_cfg, tok)
  return dict(root=str(root), sft=sft, tok=tok, cfg=cfg, src=sources.ArrayRecordSource(str(root / "sft.ar")),
              dpo_src=sources.open_source("array_record", str(root / "dpo.ar")))


def _cfg(data, **kw):
  base = dict(max_len=384, batch_size=4, image_root=data["root"], template="llama3", seed=3)
  base.update(kw)
  return loader_config(**base)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a: list[Loaded], b: list[Loaded]):
  assert len(a) == len(b)
  for (x, x_stats), (y, y_stats) in zip(a, b):
    assert type(x) is type(y) and x_stats == y_stats
    paths = jax.tree_util.tree_leaves_with_path(x)
    assert [p for p, _ in paths] == [p for p, _ in jax.tree_util.tree_leaves_with_path(y)]
    for (path, u), v in zip(paths, jax.tree.leaves(y)):
      np.testing.assert_array_equal(u, v, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("pack", [False, True])
def test_resume_is_exact(data, pack):
  cfg = _cfg(data, pack=pack, images_per_row=3 if pack else 1, max_len=700 if pack else 384)
  it = iter(loader.make_dataset(data["src"], cfg, data["cfg"], data["tok"]))
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # the state survives JSON (Orbax stores it so)
  expected = _take(it, 5)  # crosses an epoch boundary (16 records, 4+ per batch)
  in_thread = dataclasses.replace(cfg, read_threads=0)  # the reader threads change no batch
  fresh = iter(loader.make_dataset(data["src"], in_thread, data["cfg"], data["tok"]))
  fresh.set_state(state)
  _assert_same(expected, _take(fresh, 5))
  if pack:
    assert max(b.tokens.segment_ids.max() for b, _ in expected) >= 2, "packing put several examples in a row"


def test_resume_with_worker_processes(data):
  cfg = _cfg(data, worker_count=2)
  it = iter(loader.make_dataset(data["src"], cfg, data["cfg"], data["tok"]))
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 3)
  fresh = iter(loader.make_dataset(data["src"], cfg, data["cfg"], data["tok"]))
  fresh.set_state(state)
  _assert_same(expected, _take(fresh, 3))
  it.close()
  fresh.close()


def _segments(batch: SftBatch):
  """Every example in a batch as a token tuple, in reading order."""
  t = batch.tokens
  return [tuple(t.input_ids[r][t.segment_ids[r] == s].tolist())
          for r in range(t.input_ids.shape[0]) for s in range(1, t.segment_ids[r].max() + 1)]


def test_process_sharding_is_disjoint_and_complete(data):
  def examples(pi, pc, batch):
    cfg = _cfg(data, num_epochs=1, batch_size=batch)
    return [seg for b, _ in loader.make_dataset(data["src"], cfg, data["cfg"], data["tok"], process_index=pi,
                                                process_count=pc) for seg in _segments(b)]
  everything = examples(0, 1, 4)
  a, b = examples(0, 2, 4), examples(1, 2, 4)
  assert len(everything) == N and len(set(everything)) == N
  assert not set(a) & set(b)
  assert set(a) | set(b) == set(everything)


def test_packed_and_padded_batches_give_the_same_token_losses(data):
  model = LlavaNext(data["cfg"], rngs=nnx.Rngs(1))
  padded, _ = next(iter(loader.make_dataset(data["src"], _cfg(data, num_epochs=1), data["cfg"], data["tok"])))
  packed, _ = next(iter(loader.make_dataset(data["src"], _cfg(data, num_epochs=1, pack=True, images_per_row=4,
                                                                  max_len=384 * 4, batch_size=1),
                                            data["cfg"], data["tok"])))
  assert packed.tokens.segment_ids.max() == 4

  @jax.jit
  def per_example(model, b: SftBatch):
    t = b.tokens
    h, _ = model.hidden_states(t.input_ids, b.pixel_values, b.image_sizes, segment_ids=t.segment_ids,
                               positions=t.positions)
    _, nll, w = masked_cross_entropy(h, model.logits, t.input_ids, t.loss_mask, t.segment_ids, chunk=128)
    seg = t.segment_ids
    return jnp.stack([jnp.where(seg == s, nll, 0).sum(-1) for s in range(1, 5)], -1), \
        jnp.stack([jnp.where(seg == s, w, 0).sum(-1) for s in range(1, 5)], -1)

  loss_pad, w_pad = per_example(model, jax.tree.map(jnp.asarray, padded))
  loss_pack, w_pack = per_example(model, jax.tree.map(jnp.asarray, packed))
  # padded: example i is segment 1 of row i; packed: example i is segment i + 1 of row 0 (same order)
  np.testing.assert_array_equal(np.asarray(w_pad)[:, 0], np.asarray(w_pack)[0])
  np.testing.assert_allclose(np.asarray(loss_pad)[:, 0], np.asarray(loss_pack)[0], rtol=2e-5)


def test_bad_records_are_skipped_counted_and_named(data, tmp_path, caplog):
  good = data["sft"][:3]
  lines = [r.dumps() for r in good]
  lines.append(records.ReasoningSFT(id="missing-img", images=(records.ImageRef(path="images/none.png"),),
                                    question="Q?", reasoning="c").dumps())
  lines.append(records.ReasoningSFT(id="corrupt-img", images=(records.ImageRef(data=b"not a png"),),
                                    question="Q?", reasoning="c").dumps())
  no_field = json.loads(good[0].dumps())
  no_field["id"] = "no-question"
  del no_field["question"]
  lines.append(json.dumps(no_field))
  lines.append(records.ReasoningSFT(id="too-long", images=good[0].images, question="Q " * 400,
                                    reasoning="c").dumps())
  (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
  src = sources.open_source("jsonl", str(tmp_path / "mixed.jsonl"))
  batches = list(loader.make_dataset(src, _cfg(data, num_epochs=1, batch_size=1), data["cfg"], data["tok"]))
  assert sum(int((b.tokens.loss_mask.sum() > 0)) for b, _ in batches) == 3
  assert sum(stats.skipped for _, stats in batches) == 4
  logged = caplog.text
  for rid in ("missing-img", "corrupt-img", "no-question", "too-long"):
    assert rid in logged
  assert "mixed.jsonl:6" in logged and "'question': is missing" in logged and "over-long" in logged
  with pytest.raises(loader.BadRecord, match=r"mixed.jsonl:\d \(id=.(missing-img|corrupt-img|no-question|too-long)"):
    list(loader.make_dataset(src, _cfg(data, num_epochs=1, batch_size=1, strict=True, seed=0), data["cfg"],
                             data["tok"]))


def test_missing_data_or_tokenizer_paths_are_named(tmp_path):
  from insightv_jax.data.tokenizer import load_tokenizer
  from insightv_jax.utils.inputs import InputError
  for kind in ("array_record", "jsonl", "tfds"):
    with pytest.raises(FileNotFoundError, match=f"{kind} data source: no such file or folder: '.*nope'"):
      sources.open_source(kind, [str(tmp_path / "nope")])
  with pytest.raises(InputError, match="tokenizer folder '.*absent' does not exist"):
    load_tokenizer(str(tmp_path / "absent"))


@pytest.mark.parametrize("kind", ["sft", "sft_packed", "dpo"])
def test_abstract_batch_from_the_config_matches_what_the_loader_yields(data, kind):
  """The train step is compiled against `abstract_batch` before any data is read: the shapes must agree."""
  kw = dict(pack=True, images_per_row=2, max_len=768) if kind == "sft_packed" else {}
  cfg = _cfg(data, **kw)
  batch_type = DpoBatch if kind == "dpo" else SftBatch
  src = data["dpo_src"] if kind == "dpo" else data["src"]
  batch, stats = next(iter(loader.make_dataset(src, cfg, data["cfg"], data["tok"], batch_type=batch_type)))
  assert type(batch) is batch_type and stats == BatchStats(skipped=0)
  abstract = loader.abstract_batch(cfg, data["cfg"], batch_type=batch_type)
  assert jax.tree.structure(abstract) == jax.tree.structure(batch)
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(batch)):
    assert (want.shape, want.dtype) == (got.shape, got.dtype), jax.tree_util.keystr(path)
  if kind == "dpo":  # one forward over [chosen; rejected]: the pair shares its images, once
    assert batch.pixel_values.shape[0] == batch.chosen.input_ids.shape[0] == cfg.batch_size
    assert (batch.chosen.input_ids != batch.rejected.input_ids).any()


def _write_jsonl(path, recs) -> str:
  path.write_text("\n".join(r.dumps() for r in recs) + "\n")
  return str(path)


def _missing_image(i: int) -> records.ReasoningSFT:
  return records.ReasoningSFT(id=f"gone-{i}", images=(records.ImageRef(path=f"images/gone-{i}.png"),), question="Q?",
                              reasoning="c")


def test_data_with_no_usable_record_stops_at_once_naming_the_file_and_first_bad_record(data, tmp_path, caplog):
  """Corrupt images, escaping paths: whatever the reason, data with nothing usable fails in make_dataset (before
  a train step would compile), not after thousands of warnings."""
  corrupt = [records.ReasoningSFT(id=f"corrupt-{i}", images=(records.ImageRef(data=b"not a png"),), question="Q?",
                                  reasoning="c") for i in range(3)]
  escaping = json.loads(corrupt[0].dumps())
  escaping.update(id="escaping", images=[{"path": "../../etc/passwd"}])
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join([r.dumps() for r in corrupt] + [json.dumps(escaping)]) + "\n")
  src = sources.open_source("jsonl", str(path))
  with pytest.raises(loader.BadData) as forever:  # repeating: the first 100 records read (25 epochs)
    loader.make_dataset(src, _cfg(data), data["cfg"], data["tok"])
  message = str(forever.value)
  assert message.startswith(f"{path}: none of the first 100 records read is usable (data.max_bad_prefix=100). "
                            f"First bad record: {path}:")
  assert "corrupt-" in message or "escapes the dataset root" in message
  assert "\n" not in message and "Hint" not in message  # our records: no other format to suggest
  assert "skipping record" not in caplog.text
  with pytest.raises(loader.BadData, match=r"none of the 4 records read is usable\. First bad record"):
    loader.make_dataset(src, _cfg(data, num_epochs=1), data["cfg"], data["tok"])
  with pytest.raises(loader.BadData, match=r"none of the first 6 records read is usable \(data.max_bad_prefix=6\)"):
    loader.make_dataset(src, _cfg(data, max_bad_prefix=6), data["cfg"], data["tok"])
  # max_bad_prefix=0: the checks are off; the finite pipeline reports its skips in an all-padding batch
  batches = list(loader.make_dataset(src, _cfg(data, num_epochs=1, max_bad_prefix=0), data["cfg"], data["tok"]))
  assert [stats.skipped for _, stats in batches] == [4] and batches[0][0].tokens.loss_mask.sum() == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_mostly_bad_data_stops_in_the_batcher_with_its_message(data, tmp_path, workers):
  """One record in three usable: the start-up probe finds a good one, then the Batcher (in the worker processes
  when there are some) stops once more than max_skip_fraction of the records read were skipped."""
  recs = [r for i, good in enumerate(data["sft"][:4]) for r in (good, _missing_image(2 * i), _missing_image(2 * i + 1))]
  src = sources.open_source("jsonl", _write_jsonl(tmp_path / "mostly_bad.jsonl", recs))
  it = iter(loader.make_dataset(src, _cfg(data, batch_size=2, max_bad_prefix=10, worker_count=workers),
                                data["cfg"], data["tok"]))
  try:
    with pytest.raises(loader.BadData) as e:
      _take(it, 10)
  finally:
    if workers:
      it.close()
  message = str(e.value)
  assert re.search(r"mostly_bad.jsonl: (\d+) of the first (\d+) records read were skipped, more than "
                   r"data.max_skip_fraction=0.5\. First bad record: .*mostly_bad.jsonl:\d+ \(id='gone-\d+'\): image "
                   r"not found: .*gone-\d+.png$", message), message
  # max_skip_fraction=1.0: the same data trains, skips counted
  loaded = _take(iter(loader.make_dataset(src, _cfg(data, batch_size=2, max_bad_prefix=10, max_skip_fraction=1.0),
                                          data["cfg"], data["tok"])), 10)
  assert sum(stats.skipped for _, stats in loaded) >= 20


def test_cot_target_and_the_deprecated_cot_format(data):
  """data.target='cot' trains summary_sft records as one chain + answer reply; data.format='cot' (the old spelling)
  still does, with a deprecation message; the preset and the target are checked by name."""
  rec = records.SummarySFT(id="s1", images=data["sft"][0].images, question=data["sft"][0].question,
                           reasoning=data["sft"][0].reasoning, answer="3", chain_quality="high")
  enc = loader.Encoder(_cfg(data, target="cot"), data["cfg"], data["tok"])
  ids, mask = enc.encode("mem[0]", rec.dumps().encode())["sft"]
  assert data["tok"].decode(ids[mask == 1]).endswith("</thoughts><output>3</output><|eot_id|>")
  with pytest.warns(DeprecationWarning, match="data.format='cot' is deprecated.*data.target='cot'"):
    old = _cfg(data, format="cot")
  assert (old.format, old.target) == ("auto", "cot")
  np.testing.assert_array_equal(loader.Encoder(old, data["cfg"], data["tok"]).encode("mem[0]", rec.dumps().encode())
                                ["sft"][0], ids)
  with pytest.raises(ValueError, match="data.prompts='llava'"):
    loader.make_dataset(data["src"], _cfg(data, prompts="llava"), data["cfg"], data["tok"])
  with pytest.raises(ValueError, match="data.target='chain'"):
    loader.make_dataset(data["src"], _cfg(data, target="chain"), data["cfg"], data["tok"])
  with pytest.raises(ValueError, match="data.read_threads=-1; expected 0"):
    loader.make_dataset(data["src"], _cfg(data, read_threads=-1), data["cfg"], data["tok"])
