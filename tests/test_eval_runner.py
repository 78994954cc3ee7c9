"""The two-agent pipeline and the baselines end to end on the synthetic world, with a resumable report."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_data import write_training_data

from insightv_jax.checkpoints import save_model
from insightv_jax.data import prompts, templates
from insightv_jax.data.tokenizer import fit_model_config, load_tokenizer
from insightv_jax.eval import readers
from insightv_jax.model.llava import LlavaNext

TEMPLATE = "llama3"
# what the scripted model writes after any prompt: a chain, then its answer (the CoT baseline's reply shape)
SCRIPT = (prompts.THOUGHTS_OPEN, "x", prompts.THOUGHTS_CLOSE, prompts.OUTPUT_OPEN, "A", prompts.OUTPUT_CLOSE)


def scripted_model(cfg, tok, template: str, script) -> LlavaNext:
  """A real LlavaNext whose greedy reply to any prompt of `template` is `script` (tokens), then end-of-turn.

  Every layer's output projections are zero, so the hidden state at a position is its token's embedding (a
  bigram model); the embeddings of the prompt's last token and of the script's tokens are orthonormal, and
  lm_head sends each of them to the next token of the script.
  """
  model = LlavaNext(cfg, rngs=nnx.Rngs(0))
  lm = model.language_model
  stack = lm.layers.layers
  for layer in (stack if isinstance(stack, nnx.List) else [stack]):
    for dense in (layer.self_attn.o_proj, layer.mlp.down_proj):
      dense.kernel[...] = jnp.zeros_like(dense.kernel[...])
  tpl = templates.TEMPLATES[template]
  last = int(templates.encode_chat(tok, tpl, [{"role": "user", "content": "q"}], image_token_id=cfg.image_token_index,
                                   add_generation_prompt=True)[0][-1])
  ids = [last] + [tok.convert_tokens_to_ids(t) for t in (*script, tpl.stop)]
  assert len(set(ids)) == len(ids) and tok.unk_token_id not in ids, ids
  d = cfg.text.hidden_size
  basis = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(0), (d, len(ids) - 1))))[0]  # [d, n] orthonormal
  emb = np.asarray(lm.embed_tokens.embedding[...]).copy()
  head = np.zeros_like(np.asarray(lm.lm_head.kernel[...]))  # [d, vocab]
  for i, (src, dst) in enumerate(zip(ids, ids[1:])):
    emb[src] = basis[:, i]
    head[:, dst] = 10 * basis[:, i]
  lm.embed_tokens.embedding[...] = jnp.asarray(emb)
  lm.lm_head.kernel[...] = jnp.asarray(head)
  return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_cfg):
  root = str(tmp_path_factory.mktemp("agents"))
  data = write_training_data(root, n=6)
  tok = load_tokenizer(data["tok"])
  cfg = fit_model_config(tiny_cfg, tok)
  save_model(scripted_model(cfg, tok, TEMPLATE, SCRIPT), f"{root}/model", layout="params")
  return data, f"{root}/model"


def test_two_agents_and_baselines_write_a_resumable_report(setup, tmp_path):
  from configs.eval import get_config
  from insightv_jax.eval.runner import run_eval
  data, model = setup
  cfg = get_config()
  cfg.template = TEMPLATE
  cfg.reasoning_model = f"params:{model}"
  cfg.tokenizer = data["tok"]
  cfg.benchmarks = os.path.join(data["root"], "train.jsonl")
  cfg.image_root = data["root"]
  cfg.batch_size = 4
  cfg.reasoning_max_new_tokens = 12
  cfg.answer_max_new_tokens = 6
  cfg.cot_max_new_tokens = 12
  summary = run_eval(cfg, str(tmp_path))
  assert set(summary) == {"two_agents", "direct", "cot"} and all(s["n"] == 6 for s in summary.values())
  report = (tmp_path / "report.md").read_text()
  assert "| two_agents |" in report and "failure examples" in report
  rows = [json.loads(x) for x in (tmp_path / "two_agents.jsonl").read_text().splitlines()]
  assert len(rows) == 6 and all("chain" in r and "reply" in r for r in rows)
  # the chain-of-thought baseline writes its chain and then its answer: generation does not stop at </thoughts>
  cot = [json.loads(x) for x in (tmp_path / "cot.jsonl").read_text().splitlines()]
  assert [(r["chain"], r["prediction"]) for r in cot] == [("x", "A")] * 6, cot[0]["reply"]
  # the reasoning agent stops at </thoughts>: the summary agent reads the chain alone
  assert all(r["chain"] == "x" for r in rows)
  # a kill mid-write leaves a partial last line: the rerun redoes only that example
  lines = (tmp_path / "two_agents.jsonl").read_text().splitlines()
  (tmp_path / "two_agents.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
  run_eval(cfg, str(tmp_path))
  rows = [json.loads(x) for x in (tmp_path / "two_agents.jsonl").read_text().splitlines()]
  assert sorted(r["id"] for r in rows) == sorted(q.id for q in readers.read_benchmark(cfg.benchmarks))
  assert rows[:4] == [json.loads(x) for x in lines[:4]]  # finished examples were not recomputed


def test_benchmark_readers(tmp_path):
  lines = [
      {"question": "Which?", "options": ["x", "y", "z"], "answer": "B", "category": "logic"},
      {"question": "Which?", "A": "x", "B": "y", "answer": "y"},
      {"question": "Value?", "answer": "12.5", "image": "img/1.png"},
      {"question": "Is it?", "answer": "Yes"},
  ]
  (tmp_path / "mmstar.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  qs = readers.read_benchmark(str(tmp_path / "mmstar.jsonl"))
  assert [q.answer for q in qs] == ["B", "B", "12.5", "Yes"]
  assert qs[0].choices == ("x", "y", "z") and qs[0].meta["category"] == "logic"
  assert qs[2].images[0].path == "img/1.png"
  (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "Q", "options": ["a", "b"], "answer": "c"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'answer'"):
    readers.read_benchmark(str(tmp_path / "bad.jsonl"))
