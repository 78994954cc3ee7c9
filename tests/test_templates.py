"""Chat templates and loss masks against `tokenizer.apply_chat_template`; vocabulary growth for agent tokens."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from insightv_jax.data import prompts, templates
from insightv_jax.data.tokenizer import add_agent_tokens, train_bpe
from insightv_jax.model.resize import grow_vocab

CORPUS = ["How many red cells are in the grid? Row 1 is red, blue, white. It has 1 red. Running total: 1.",
          "The bars add up to 17. Answer with the option's letter. A chat between a user and an assistant.",
          "Step 1: Count the shapes\nThere are 3 green circles.\n\nStep 2: Total\nSo the answer is 3."] * 20

MESSAGES = [
    {"role": "system", "content": "You answer questions about images."},
    {"role": "user", "content": "<image>\nHow many red cells are in the grid?"},
    {"role": "assistant", "content": "<thoughts>\nStep 1: Row 1\nIt has 1 red.\n</thoughts>"},
    {"role": "user", "content": "And the total?  "},
    {"role": "assistant", "content": " <output>3</output>"},
]


@pytest.mark.parametrize("name", sorted(templates.TEMPLATES))
def test_encode_chat_matches_apply_chat_template(name):
  tok = train_bpe(CORPUS, 320, name)
  image_id = tok.convert_tokens_to_ids(templates.IMAGE_PLACEHOLDER)
  for msgs in (MESSAGES, MESSAGES[1:3]):
    ours, mask = templates.encode_chat(tok, templates.TEMPLATES[name], msgs, image_token_id=image_id,
                                       image_token_counts=[1])
    ref = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours.tolist() == list(ref["input_ids"]), name
    assert mask.tolist() == list(ref["assistant_masks"]), name
    # the masked tokens decode to exactly the assistant replies and their end-of-turn text
    text = tok.decode(ours[mask == 1])
    assert "<output>3</output>" in text or len(msgs) == 2
    assert "How many" not in text
  # generation prompt
  ours, _ = templates.encode_chat(tok, templates.TEMPLATES[name], MESSAGES[:2], image_token_id=image_id,
                                  image_token_counts=[1], add_generation_prompt=True)
  ref = tok.apply_chat_template(MESSAGES[:2], tokenize=True, add_generation_prompt=True, return_dict=True)
  assert ours.tolist() == list(ref["input_ids"])


def test_image_placeholder_expansion_and_errors():
  tok = train_bpe(CORPUS, 320, "chatml")
  image_id = tok.convert_tokens_to_ids(templates.IMAGE_PLACEHOLDER)
  ids, mask = templates.encode_chat(tok, templates.TEMPLATES["chatml"], prompts.reasoning_messages("Q?", "chain"),
                                    image_token_id=image_id, image_token_counts=[37])
  assert (ids == image_id).sum() == 37 and mask[ids == image_id].sum() == 0
  run = np.flatnonzero(ids == image_id)
  assert (np.diff(run) == 1).all()  # one contiguous block
  with pytest.raises(ValueError, match="1 <image> placeholders but 2 images"):
    templates.encode_chat(tok, templates.TEMPLATES["chatml"], prompts.reasoning_messages("Q?", "c"),
                          image_token_id=image_id, image_token_counts=[3, 4])


def test_agent_prompts_round_trip_tags():
  chain = prompts.format_chain([("Row 1", "1 red"), ("Total", "3 red")])
  msgs = prompts.summary_messages("How many?", chain, "3")
  assert prompts.extract_tag(msgs[0]["content"], "<thoughts>", "</thoughts>") == chain
  assert prompts.extract_tag(msgs[1]["content"], "<output>", "</output>") == "3"
  assert prompts.extract_tag("no tags", "<output>", "</output>") is None
  assert prompts.extract_tag("<output> B", "<output>", "</output>") == "B"  # unterminated reply


def test_grow_vocab_mean_init_keeps_old_logits(tiny_model):
  tok = train_bpe(CORPUS, 300, "llama3", agent_tokens=False)
  n = add_agent_tokens(tok)
  assert n == len(tok) and tok.convert_tokens_to_ids("<thoughts>") >= 296
  model = tiny_model
  old_v = model.cfg.text.vocab_size
  grown = grow_vocab(model, old_v + 4)
  emb = grown.language_model.embed_tokens.embedding.get_value()
  old = model.language_model.embed_tokens.embedding.get_value()
  np.testing.assert_array_equal(emb[:old_v], old)
  np.testing.assert_allclose(emb[old_v:], np.broadcast_to(old.mean(0), (4, old.shape[1])), rtol=1e-6)
  head = grown.language_model.lm_head.kernel.get_value()
  np.testing.assert_allclose(head[:, old_v:], np.broadcast_to(
      model.language_model.lm_head.kernel.get_value().mean(1, keepdims=True), (head.shape[0], 4)), rtol=1e-6)
  ids = jnp.asarray([[1, 2, 3, 4]])
  np.testing.assert_allclose(np.asarray(grown(ids))[..., :old_v], np.asarray(model(ids)), atol=1e-6)
  assert grown.cfg.text.vocab_size == old_v + 4
  with pytest.raises(ValueError, match="smaller"):
    grow_vocab(model, 10)
