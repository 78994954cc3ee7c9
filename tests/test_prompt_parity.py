"""One prompt source: for each preset and each agent, the ids the loader trains on up to the reply are the ids the
Agent sends at inference, the ids the data-generation / iterative-DPO sampler sends (LocalBackend) and the ids of
`prompts.prompt_ids` (the entry point of RL rollouts).

The tokenizer is trained on text where "\\n\\n" ends a pre-token, so it holds the merged token; a byte-level BPE
then tokenizes "<assistant header>\\n\\nJudgement" differently from the header alone (checked below), which is
what a single tokenization of prompt + reply got wrong.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from train_data import loader_config

from configs.datagen import get_config as datagen_config
from data_gen import progressive
from data_gen.backends import LocalBackend
from data_gen.synthetic.world import World, WorldConfig
from insightv_jax import infer
from insightv_jax.data import loader, prompts, records, templates
from insightv_jax.data.images import decode
from insightv_jax.data.tokenizer import fit_model_config, train_bpe
from insightv_jax.infer import replies

CASES = [("ours", "llama3"), ("ours", "chatml"), ("insightv", "llava_llama_3")]


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("parity")
  world = World(WorldConfig(kinds=("left_of", "chart_range"), image_size=56, bars=3), seed=1)
  qs = world.write(str(root), "train", 3)
  return dict(root=str(root), world=world, qs=qs)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def case(request, world_data, tiny_cfg):
  preset, template = request.param
  world, qs = world_data["world"], world_data["qs"]
  texts = [prompts.get_preset(preset).format_chain(world.teacher_path(q).steps) for q in qs] * 5
  texts += [prompts.format_question(q.question, q.choices) + " " + q.answer for q in qs] * 5
  texts += ["Judgement: the reasoning is sound.", "a\n\n", "b\n\n"] * 20
  tok = train_bpe(texts, 400, template)
  model = types.SimpleNamespace(cfg=fit_model_config(tiny_cfg, tok))  # generation is never reached (see _sent)
  return dict(preset=preset, template=template, tok=tok, model=model, **world_data)


class _Sent(Exception):
  """Raised by the spy in place of generation, once the Agent has built its batch."""


@pytest.fixture
def sent(monkeypatch):
  """The prompt ids of each row the Agent sends to `generate` (left padding removed)."""
  rows = []

  def spy(model, ids, pixel_values, image_sizes, mask, **kw):
    rows.extend(np.asarray(i)[np.asarray(m) == 1] for i, m in zip(ids, mask))
    raise _Sent

  monkeypatch.setattr(replies, "generate", spy)  # Agent's one generate call (infer/replies.py)
  return rows


def _loader_prefix(case, rec, *, dpo=False, target="auto"):
  """The ids the loader trains on before the first trained token, per side (SFT: one; DPO: chosen, rejected)."""
  cfg = loader_config(max_len=2048, batch_size=1, template=case["template"], image_root=case["root"],
                            prompts=case["preset"], target=target)
  enc = loader.Encoder(cfg, case["model"].cfg, case["tok"], dpo=dpo)
  out = enc.encode(f"mem[{rec.id}]", rec.dumps().encode())
  return [ids[:int(np.argmax(mask))] for ids, mask in (out[k] for k in (("chosen", "rejected") if dpo else ("sft",)))]


def _agent_sends(case, sent, run) -> np.ndarray:
  sent.clear()
  with pytest.raises(_Sent):
    run(infer.Agent(case["model"], case["tok"], case["template"], preset=case["preset"]))
  return sent[0]


def _entry_point(case, role, question, chain=None, image=None):
  from insightv_jax.data.images import ImageProcessorConfig, preprocess
  proc = ImageProcessorConfig.for_model(case["model"].cfg)
  _, (h, w) = preprocess(image, proc)
  return prompts.prompt_ids(case["tok"], case["template"], case["preset"], role, question, chain,
                            image_token_id=case["model"].cfg.image_token_index,
                            image_token_counts=[proc.num_image_tokens(h, w)])


def test_loader_agent_and_sampler_send_the_same_prompt(case, sent):
  p = prompts.get_preset(case["preset"])
  for q in case["qs"]:
    text = prompts.format_question(q.question, q.choices)
    chain = p.format_chain(case["world"].teacher_path(q).steps)
    raw_image = q.images[0].read(case["root"])
    image = decode(raw_image)
    ex = [infer.Example(q.id, text, image)]

    # reasoning agent: SFT, both sides of a DPO pair, Agent, the chain sampler, the entry point
    trained = _loader_prefix(case, records.ReasoningSFT(id=q.id, images=q.images, question=text, reasoning=chain))
    trained += _loader_prefix(case, records.DPOPair(id=q.id, images=q.images, prompt=text, chosen=chain,
                                                    rejected="Step 1: x\ny"), dpo=True)
    agent = _agent_sends(case, sent, lambda a: infer.reason(a, ex))
    backend = LocalBackend(None)

    def sample(a):
      backend.agent = a
      list(progressive.synthesize_chains([(q, raw_image, 0)], backend,
                                         progressive.ProgressiveConfig(**datagen_config().progressive.to_dict()),
                                         preset=case["preset"]))
    sampler = _agent_sends(case, sent, sample)
    for ids in trained + [sampler, _entry_point(case, "reasoning", text, image=image)]:
      np.testing.assert_array_equal(ids, agent)

    # summary agent: the chain is part of its prompt
    (trained,) = _loader_prefix(case, records.SummarySFT(id=q.id, images=q.images, question=text, reasoning=chain,
                                                         answer=q.answer, chain_quality="high"))
    agent = _agent_sends(case, sent, lambda a: a.complete([a.prompts.messages("summary", text, chain)], [image]))
    np.testing.assert_array_equal(trained, agent)
    np.testing.assert_array_equal(_entry_point(case, "summary", text, chain, image=image), agent)

    # the baselines: direct answer (question records) and one-model chain of thought (target='cot')
    (trained,) = _loader_prefix(case, records.Question(id=q.id, images=q.images, question=q.question,
                                                       choices=q.choices, answer=q.answer))
    np.testing.assert_array_equal(trained, _agent_sends(case, sent, lambda a: infer.direct(a, ex)))
    (trained,) = _loader_prefix(case, records.SummarySFT(id=q.id, images=q.images, question=text, reasoning=chain,
                                                         answer=q.answer, chain_quality="high"), target="cot")
    np.testing.assert_array_equal(trained, _agent_sends(case, sent, lambda a: infer.chain_of_thought(a, ex)))


def test_one_tokenization_of_prompt_and_reply_would_drift(case):
  """Why the loader tokenizes prompt and reply apart: this tokenizer merges the header's "\\n\\n" when it ends the
  text, not before a word, so one tokenization of prompt + reply trains on ids the agent is never sent."""
  if case["template"] != "llama3":
    pytest.skip("the llama3 header ends in \\n\\n")
  tok, img = case["tok"], case["model"].cfg.image_token_index
  msgs = prompts.get_preset("ours").messages("summary", "How many?", "Step 1: a\nb", answer="3", judgement="sound")
  joint, mask = templates.encode_chat(tok, templates.TEMPLATES["llama3"], msgs, image_token_id=img,
                                      image_token_counts=[4])
  sent = prompts.encode(tok, "llama3", msgs[:1], image_token_id=img, image_token_counts=[4], prompt=True)[0]
  assert not np.array_equal(joint[:int(np.argmax(mask))], sent)
  ids, mask = prompts.encode(tok, "llama3", msgs, image_token_id=img, image_token_counts=[4])
  np.testing.assert_array_equal(ids[:int(np.argmax(mask))], sent)
  assert tok.decode(ids[mask == 1]) == "Judgement: the reasoning is sound.\n<output>3</output><|eot_id|>"
