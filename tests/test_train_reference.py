"""Precomputed reference log-probs (train/reference.py): scored as the train step scores its reference model,
truncated replies included; a DPO loss on them equals the model-reference loss; a wrong or missing ref_hash stops
training with a named error; a run on them trains like the run with the reference model."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_data import loader_config, tiny_train_config, write_training_data

from insightv_jax import sharding
from insightv_jax.data import loader, records, sources
from insightv_jax.data.tokenizer import load_tokenizer
from insightv_jax.train import reference, steps, tasks
from insightv_jax.train import state as state_lib

N = 12
# tests/train_data's pairs: prompts of ~120 tokens (image included), replies of 48-77 tokens, so unshared rows of
# 169-198 tokens and shared rows of 221-275: max_len 180 cuts the longer unshared replies, 240 the longer shared rows
CASES = {
    "plain": {"dpo.shared_prompt": False, "data.max_len": 180},
    "shared": {"dpo.shared_prompt": True, "data.max_len": 240},
    "shared_packed": {"dpo.shared_prompt": True, "data.max_len": 480, "data.pack": True, "data.pairs_per_row": 2,
                      "data.images_per_row": 2},
}
COMMON = {"mesh.fsdp": 1, "checkpoint.every": 0, "export_params": False, "data.batch_size": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return write_training_data(str(tmp_path_factory.mktemp("reference")), N)


def _config(data, job="ref_logprobs", **overrides):
  return tiny_train_config(data, job, **{**COMMON, "data.paths": data["dpo"], **overrides})


def _model(config):
  """The reference model of `config` (model.init, seed), as score_reference and the train loop build it."""
  tok = load_tokenizer(config.tokenizer)
  model_cfg = state_lib.model_config(config.model, tok)
  mesh = sharding.make_mesh(1, 1, 1)
  with sharding.use_mesh(mesh):
    graphdef, params = state_lib.params_of(state_lib.init_model(config.model, model_cfg, mesh, seed=config.seed))
  return tok, model_cfg, graphdef, params


class _Scored(dict):
  """case -> (config, summary, workdir): the case's pair file scored by score_reference into its own output, on
  first use."""

  def __init__(self, data, tmp_path_factory):
    super().__init__()
    self.data, self.tmp = data, tmp_path_factory

  def __missing__(self, case):
    work = str(self.tmp.mktemp(f"score_{case}"))
    config = _config(self.data, **CASES[case], **{"ref.output": os.path.join(work, "pairs.ref.ar")})
    self[case] = (config, reference.score_reference(config, work), work)
    return self[case]


@pytest.fixture(scope="module")
def scored(data, tmp_path_factory):
  return _Scored(data, tmp_path_factory)


def _train_batches(config, path, n=3):
  """The first `n` batches DPO training (configs/dpo.py with config's data settings) reads from `path`."""
  tok, model_cfg, _, _ = _model(config)
  cfg = loader.LoaderConfig.from_config(config.data)
  ds = loader.make_dataset(sources.open_source("array_record", path), cfg, model_cfg, tok,
                           batch_type=tasks.get("dpo").batch_type(config))
  it = iter(ds)
  return [next(it)[0] for _ in range(n)]


@pytest.mark.parametrize("case", list(CASES))
def test_scored_logps_are_the_reference_logps_of_the_train_step(scored, case):
  """The ref_logps a training batch carries equal what the train step computes with the reference params on that
  batch (its `pair_logprobs`), pair slot by pair slot, including replies the loader truncated."""
  config, summary, _ = scored[case]
  (f,) = summary["files"]
  assert f["written"] == N and f["skipped"] == 0 and f["scored_this_run"] == N
  _, _, graphdef, params = _model(config)
  fn = jax.jit(lambda p, b: steps.pair_logprobs(graphdef, p, b, chunk=config.loss_chunk))
  truncated, packed = 0, 0
  for batch in _train_batches(config, f["output"]):
    assert batch.ref_logps is not None
    logp, count = map(np.asarray, fn(params, batch.replace(ref_logps=None)))
    p = len(count) // 2
    filled = count[:p] > 0
    ref = np.asarray(batch.ref_logps).reshape(-1, 2)
    assert (ref[~filled] == 0).all() and np.abs(ref[filled]).min() > 10
    np.testing.assert_allclose(ref[filled, 0], logp[:p][filled], rtol=1e-6, atol=2e-5)
    np.testing.assert_allclose(ref[filled, 1], logp[p:][filled], rtol=1e-6, atol=2e-5)
    rows = [batch.chosen, batch.rejected] if case == "plain" else [batch.tokens]
    truncated += sum(int(((r.segment_ids > 0).sum(1) == config.data.max_len).sum()) for r in rows)
    if case == "shared_packed":
      packed += int((batch.tokens.segment_ids.max(1) == 2).sum())
  if case == "shared_packed":
    assert packed > 0  # some rows hold two pairs: the slot map of packed rows is exercised
  else:
    assert truncated > 0  # the loader cut replies here: the precomputed log-prob is of the cut reply


def test_truncated_replies_are_scored_truncated(data, scored, tmp_path):
  """The same pairs scored with room for the whole replies give other log-probs exactly for the pairs that
  max_len cut, and another ref_hash."""
  config, summary, _ = scored["plain"]
  full = _config(data, **{**CASES["plain"], "data.max_len": 384, "ref.output": str(tmp_path / "full.ar")})
  full_summary = reference.score_reference(full, str(tmp_path / "work"))
  assert full_summary["ref_hash"] != summary["ref_hash"]
  cut = _read(summary["files"][0]["output"])
  whole = _read(full_summary["files"][0]["output"])
  tok, model_cfg, _, _ = _model(config)
  enc = loader.Encoder(loader_config(max_len=384, image_root=data["root"]), model_cfg, tok, dpo=True)
  src = sources.open_source("array_record", data["dpo"])
  n_cut = 0
  for i in range(N):
    where, raw = src[i]
    ex = enc.encode(where, raw)
    rid = records.loads(raw).id
    for side in ("chosen", "rejected"):
      longer = len(ex[side][0]) > config.data.max_len
      a, b = getattr(cut[rid], f"ref_{side}_logp"), getattr(whole[rid], f"ref_{side}_logp")
      if longer:
        n_cut += 1
        assert a > b + 1.0  # fewer reply tokens, less negative log-prob
      else:
        assert a == pytest.approx(b, rel=1e-6, abs=2e-5)
  assert n_cut > 0


def _read(path):
  src = sources.open_source("array_record", path)
  return {r.id: r for r in (records.loads(src[i][1], src[i][0]) for i in range(len(src)))}


def test_dpo_loss_on_precomputed_refs_equals_the_model_reference_loss(scored):
  """Policy != reference: steps.dpo_loss with batch.ref_logps equals it with ref_params, to 1e-6."""
  for case in ("plain", "shared"):
    config, summary, _ = scored[case]
    _, _, graphdef, ref_params = _model(config)
    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(ref_params))))
    policy = jax.tree.map(lambda x: x + 0.02 * jax.random.normal(next(keys), x.shape, x.dtype), ref_params)
    loss = jax.jit(lambda p, b, r: steps.dpo_loss(graphdef, p, b, beta=0.1, sft_weight=1.0, chunk=128,
                                                  ref_params=r))
    for batch in _train_batches(config, summary["files"][0]["output"], n=2):
      pre, pre_aux = loss(policy, batch, None)
      ref, ref_aux = loss(policy, batch.replace(ref_logps=None), ref_params)
      assert abs(float(ref_aux["rewards/chosen"])) > 1e-3  # the policy moved away from the reference
      np.testing.assert_allclose(float(pre), float(ref), rtol=1e-6)
      for k in ("rewards/chosen", "rewards/rejected", "rewards/margin"):
        np.testing.assert_allclose(float(pre_aux[k]), float(ref_aux[k]), rtol=1e-5, atol=1e-5)


def test_a_run_whose_settings_differ_stops_with_a_named_error(data, scored):
  """dpo.reference=precomputed: a file scored with other settings, or not scored, stops the run before its first
  step with a RefLogpsError naming the file, the record, both hashes and the flag."""
  from insightv_jax.train.loop import train
  config, summary, work = scored["plain"]
  out = summary["files"][0]["output"]
  run = lambda **o: train(_config(data, "dpo", **{**CASES["plain"], "dpo.reference": "precomputed",
                                                  "data.paths": out, **o}), os.path.join(work, "train"))
  with pytest.raises(reference.RefLogpsError) as e:
    run(**{"data.max_len": 200})
  msg = str(e.value)
  assert "pairs.ref.ar[" in msg and "(id=" in msg and summary["ref_hash"] in msg and msg.count("'ref1-") == 2
  assert "--config.dpo.reference=model" in msg and "--config.data.max_len=200" in msg
  with pytest.raises(reference.RefLogpsError, match="another reference"):
    run(**{"seed": 1})  # another reference model (random init, another seed)
  with pytest.raises(reference.RefLogpsError, match=r"dpo\.ar\[\d+\] \(id=.*no precomputed reference"):
    run(**{"data.paths": data["dpo"]})


def test_scoring_resumes_from_its_journal(scored):
  """A second run with the same workdir scores nothing again and writes the same records."""
  config, summary, work = scored["shared"]
  out = summary["files"][0]["output"]
  before = _read(out)
  os.remove(out)
  again = reference.score_reference(config, work)
  assert again["ref_hash"] == summary["ref_hash"] and again["files"][0]["scored_this_run"] == 0
  assert _read(out) == before
  with open(os.path.join(work, "ref_identity.json")) as f:
    assert json.load(f)["ref_hash"] == summary["ref_hash"]


def test_training_on_precomputed_refs_gives_the_model_reference_losses(data, scored, tmp_path):
  """End to end: score, then 3 DPO steps with dpo.reference=precomputed log the same losses and rewards as 3 steps
  with the reference model in the state, on the same pairs in the same order."""
  from insightv_jax.train.loop import train
  config, summary, _ = scored["shared"]
  common = {**CASES["shared"], "optim.total_steps": 3}
  train(_config(data, "dpo", **common), str(tmp_path / "model"))
  train(_config(data, "dpo", **common, **{"dpo.reference": "precomputed",
                                          "data.paths": summary["files"][0]["output"]}), str(tmp_path / "pre"))
  rows = {}
  for name in ("model", "pre"):
    with open(tmp_path / name / "metrics.jsonl") as f:
      rows[name] = [json.loads(line) for line in f]
  assert [r["step"] for r in rows["pre"]] == [1, 2, 3]
  for a, b in zip(rows["model"], rows["pre"]):
    for k in ("loss", "rewards/margin", "rewards/chosen", "grad_norm"):  # two programs' fp32 sums of ~100 token
      np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)  # log-probs: a few ulps x beta apart
  assert jnp.isfinite(rows["pre"][-1]["loss"])
