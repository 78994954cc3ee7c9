"""Prompt presets: ours stay byte-identical; "insightv" sends exactly what Insight-V's infer_two_models.py sends."""

from __future__ import annotations

import pytest

from insightv_jax import infer
from insightv_jax.data import insightv_compat, prompts, templates

# The question of Insight-V's infer_two_models.py (its origin_question without the leading "<image>\n").
QUESTION = ("Which method is best among the benchmarks?\nA.Baseline.\nB.Chain-of-Thought.\nC.Insight-V.\n"
            "Answer the question with the options provided.")
# What the released reasoning agent replies (decoded with skip_special_tokens=False, as the script decodes it).
REPLY = ("<thoughts>\nIdentifying Key Information: The chart compares three methods on five benchmarks.\n"
         "Comparing Overall Performance: Insight-V has the highest score on every benchmark.\n</thoughts><|eot_id|>")

# Written out from infer_two_models.py: reason_question = origin_question + "\n\nPerform step-by-step ...".
EXPECTED_REASONING = (
    "<image>\nWhich method is best among the benchmarks?\nA.Baseline.\nB.Chain-of-Thought.\nC.Insight-V.\n"
    "Answer the question with the options provided.\n\nPerform step-by-step reasoning of the problem. Only provide "
    "the reasoning process.")
# reason_chain = text.split("<thoughts>")[-1].split("</thoughts>")[0]: the newlines inside the tags stay.
EXPECTED_CHAIN = ("\nIdentifying Key Information: The chart compares three methods on five benchmarks.\n"
                  "Comparing Overall Performance: Insight-V has the highest score on every benchmark.\n")
# summary_question = "I will give you ..." + "\n\nQUESTION: " + origin_question + "\n\nREASON PROCESS: " +
# "<thoughts>\n" + reason_chain + "</thoughts>\n" ("shold" and "QUESTION  without" as released).
EXPECTED_SUMMARY = (
    "I will give you a reasoning process of the question. You should determine whether the reasoning process is "
    "correct about the question. If it is correct, please summarize the answer based on the reasoning process. If it "
    "is incorrect, answer the question and ignore the reasoning process. You shold directly give the summarization "
    "or answer as you are directly answer the QUESTION  without saying your judgement about the reasoning process."
    "\n\nQUESTION: <image>\nWhich method is best among the benchmarks?\nA.Baseline.\nB.Chain-of-Thought.\n"
    "C.Insight-V.\nAnswer the question with the options provided.\n\nREASON PROCESS: <thoughts>\n\n"
    "Identifying Key Information: The chart compares three methods on five benchmarks.\nComparing Overall "
    "Performance: Insight-V has the highest score on every benchmark.\n</thoughts>\n")
# preprocess_llama3: apply_chat_template([system]) + apply_chat_template([user])[1:] + the assistant header, with
# LLaMA-3's template (content | trim) and LLaVA's system prompt.
LLAVA_SYSTEM_TURN = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful language and vision "
    "assistant. You are able to understand the visual content that the user provides, and assist the user with a "
    "variety of tasks using natural language.<|eot_id|>")
USER_HEAD = "<|start_header_id|>user<|end_header_id|>\n\n"
GEN_PROMPT = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_insightv_preset_sends_what_infer_two_models_sends():
  p = prompts.get_preset("insightv")
  assert p.reasoning_messages(QUESTION) == [{"role": "user", "content": EXPECTED_REASONING}]
  chain = p.unwrap_chain(REPLY)
  assert chain == EXPECTED_CHAIN
  assert p.summary_messages(QUESTION, chain) == [{"role": "user", "content": EXPECTED_SUMMARY}]
  # the same conversations in LLaVA-NeXT's llava_llama_3 mode, as preprocess_llama3 renders them
  tpl = templates.TEMPLATES["llava_llama_3"]
  text, _ = tpl.render(p.reasoning_messages(QUESTION), add_generation_prompt=True)
  assert text == LLAVA_SYSTEM_TURN + USER_HEAD + EXPECTED_REASONING + "<|eot_id|>" + GEN_PROMPT
  text, _ = tpl.render(p.summary_messages(QUESTION, chain), add_generation_prompt=True)
  assert text == LLAVA_SYSTEM_TURN + USER_HEAD + EXPECTED_SUMMARY.strip() + "<|eot_id|>" + GEN_PROMPT


def test_insightv_chain_cut_and_steps():
  p = prompts.get_preset("insightv")
  # the script's cut: the last <thoughts>, up to </thoughts> or the end; no tag at all keeps the whole reply
  assert p.unwrap_chain("a<thoughts>x</thoughts>b<thoughts> y ") == " y "
  assert p.unwrap_chain("no tags here") == "no tags here"
  assert p.wrap_chain("A: b") == "<thoughts>\nA: b</thoughts>\n"
  # steps as infer_summary_model.py's reason_chain writes them: one "Title: content" line each
  steps = [("Identifying Key Information", "To determine which method is the best, we compare scores."),
           ("Comparing Overall Performance", "Insight-V has the highest total score")]
  assert p.format_chain(steps) == ("Identifying Key Information: To determine which method is the best, we compare "
                                   "scores.\nComparing Overall Performance: Insight-V has the highest total score")
  # training examples: the summary answers directly (the prompt forbids a verdict), the chain is the shown block
  msgs = p.summary_messages(QUESTION, "A: b", "C", "flawed")
  assert msgs[1] == {"role": "assistant", "content": "C"}
  assert p.reasoning_messages(QUESTION, "A: b")[1] == {"role": "assistant", "content": "<thoughts>\nA: b</thoughts>\n"}
  assert p.direct_messages(QUESTION, "C") == [{"role": "user", "content": "<image>\n" + QUESTION},
                                              {"role": "assistant", "content": "C"}]


def test_ours_preset_is_unchanged():
  """The demo's numbers rest on these exact strings and layouts."""
  p = prompts.get_preset("ours")
  assert (p.reasoning_messages, p.summary_messages, p.direct_messages, p.cot_messages, p.format_chain) == (
      prompts.reasoning_messages, prompts.summary_messages, prompts.direct_messages, prompts.cot_messages,
      prompts.format_chain)
  assert prompts.reasoning_messages("How many?", "c") == [
      {"role": "user", "content": "<image>\nHow many?\n\nReason about the image step by step, inside <thoughts> and "
                                  "</thoughts>. Do not give the final answer."},
      {"role": "assistant", "content": "<thoughts>\nc\n</thoughts>"}]
  assert prompts.summary_messages("How many?", "c", "3", "sound") == [
      {"role": "user", "content": "<image>\nHow many?\n\nAnother model's reasoning is below and may contain mistakes. "
                                  "Judge it: use it if it is sound, otherwise rely on the image. Then give only the "
                                  "final answer inside <output> and </output>.\n<thoughts>\nc\n</thoughts>"},
      {"role": "assistant", "content": "Judgement: the reasoning is sound.\n<output>3</output>"}]
  assert prompts.direct_messages("Q")[0]["content"] == ("<image>\nQ\n\nAnswer the question. Give only the final "
                                                        "answer inside <output> and </output>.")
  assert prompts.cot_messages("Q")[0]["content"] == (
      "<image>\nQ\n\nThink step by step inside <thoughts> and </thoughts>, then give only the final answer inside "
      "<output> and </output>.")
  assert prompts.format_chain([("Row 1", "1 red"), ("Total", "3")]) == "Step 1: Row 1\n1 red\n\nStep 2: Total\n3"
  assert p.wrap_chain("c") == prompts.reasoning_messages("Q", "c")[1]["content"]
  assert p.unwrap_chain("<thoughts>\n c \n</thoughts><output>3</output>") == "c"
  assert p.unwrap_chain("no tag") == "no tag"


def test_get_preset():
  assert prompts.get_preset("ours") is prompts.PROMPT_PRESETS["ours"]
  preset = prompts.PROMPT_PRESETS["insightv"]
  assert prompts.get_preset(preset) is preset
  with pytest.raises(ValueError, match="unknown prompt preset 'llava'"):
    prompts.get_preset("llava")
  # the compat strings are the released ones, typos included
  assert "You shold directly" in insightv_compat.SUMMARY_INSTRUCTION
  assert "QUESTION  without" in insightv_compat.SUMMARY_INSTRUCTION


class _Recorder:
  """Stands in for an Agent: records the conversations it is asked to complete and replies from a script."""

  def __init__(self, preset, replies):
    self.prompts, self.replies, self.seen = prompts.get_preset(preset), replies, []

  def complete(self, conversations, images, **_):
    self.seen.extend(conversations)
    return [self.replies for _ in conversations]


def test_agents_prompt_by_their_preset():
  ex = [infer.Example("q1", QUESTION, None)]
  reasoner, summarizer = _Recorder("insightv", REPLY), _Recorder("insightv", "C. Insight-V")
  out = infer.two_agents(reasoner, summarizer, ex)
  assert reasoner.seen == [[{"role": "user", "content": EXPECTED_REASONING}]]
  assert summarizer.seen == [[{"role": "user", "content": EXPECTED_SUMMARY}]]
  assert out == [{"chain": EXPECTED_CHAIN, "reply": "C. Insight-V", "judgement": None}]
  ours = _Recorder("ours", "<thoughts>\nx\n</thoughts>")
  assert infer.reason(ours, ex) == ["x"] and ours.seen == [prompts.reasoning_messages(QUESTION)]
  direct = _Recorder("insightv", "C")
  infer.direct(direct, ex)
  assert direct.seen == [[{"role": "user", "content": "<image>\n" + QUESTION}]]
  cot = _Recorder("ours", "<thoughts>\nx\n</thoughts><output>C</output>")
  assert infer.chain_of_thought(cot, ex)[0]["chain"] == "x" and cot.seen == [prompts.cot_messages(QUESTION)]


def test_agent_and_run_eval_take_the_preset(tiny_model, monkeypatch, tmp_path):
  from configs.eval import get_config
  from insightv_jax.data.tokenizer import train_bpe
  from insightv_jax.eval import runner

  tok = train_bpe(["Perform step-by-step reasoning of the problem."] * 10, 300, "llava_llama_3")
  agent = infer.Agent(tiny_model, tok, "llava_llama_3", preset="insightv")
  assert agent.prompts is prompts.PROMPT_PRESETS["insightv"]
  assert agent.with_generation(max_new_tokens=3).prompts is agent.prompts
  assert infer.Agent(tiny_model, tok, "llama3").prompts is prompts.PROMPT_PRESETS["ours"]
  # run_eval hands config.prompts to every agent it builds
  made = []
  monkeypatch.setattr(runner, "load_tokenizer", lambda path: tok)
  loaded = []
  monkeypatch.setattr(runner, "load_model", lambda spec, dtype, attention: loaded.append(attention) or tiny_model)
  monkeypatch.setattr(runner, "evaluate", lambda *a, **k: [])
  monkeypatch.setattr(runner, "write_report", lambda *a, **k: {})
  monkeypatch.setattr(runner.infer, "Agent", lambda *a, preset, **k: made.append(preset))
  cfg = get_config()
  assert cfg.prompts == "" and cfg.vlmeval_rules == "current"  # "": the model folder's preset, else "ours"
  cfg.reasoning_model, cfg.prompts, cfg.attention = "params:/nowhere", "insightv", "xla"
  runner.run_eval(cfg, str(tmp_path))
  assert made == ["insightv"] * 4  # reasoner, summarizer, direct, cot
  assert loaded == ["xla"]  # config.attention reaches model loading (one model plays every role here)


def test_messages_is_the_one_way_to_an_agents_conversation():
  """preset.messages(role, ...) renders exactly the per-role builders (ours: today's literal strings, above)."""
  for name in ("ours", "insightv"):
    p = prompts.get_preset(name)
    assert p.messages("reasoning", "Q") == p.reasoning_messages("Q")
    assert p.messages("reasoning", "Q", "c") == p.reasoning_messages("Q", "c")
    assert p.messages("summary", "Q", "c") == p.summary_messages("Q", "c")
    assert p.messages("summary", "Q", "c", answer="3", judgement="sound") == p.summary_messages("Q", "c", "3", "sound")
    assert p.messages("direct", "Q", answer="3") == p.direct_messages("Q", "3")
    assert p.messages("cot", "Q", "c", answer="3") == p.cot_messages("Q", "c", "3")
    assert p.parse_steps(p.format_chain([("Row 1", "1 red"), ("Total", "3")])) == [("Row 1", "1 red"), ("Total", "3")]
  ours = prompts.get_preset("ours")
  assert ours.messages("cot", "Q", "c", answer="3")[1]["content"] == "<thoughts>\nc\n</thoughts><output>3</output>"
  with pytest.raises(ValueError, match="unknown agent role 'critic'"):
    ours.messages("critic", "Q")
  with pytest.raises(ValueError, match="takes no answer"):
    ours.messages("reasoning", "Q", answer="3")
  with pytest.raises(ValueError, match="needs both the chain and the answer"):
    ours.messages("cot", "Q", "c")
  with pytest.raises(ValueError, match="needs the chain"):
    ours.messages("summary", "Q")


def test_image_placement_round_trips_the_reasoning_prompt():
  """A backend request carries the text without `<image>`; the Agent puts it back where every preset's reasoning
  prompt has it."""
  for name in ("ours", "insightv"):
    msgs = prompts.get_preset(name).messages("reasoning", "Q")
    request = prompts.strip_image(msgs)
    assert prompts.IMAGE_PLACEHOLDER not in request[0]["content"]
    assert prompts.place_image(request, 1) == msgs
    assert prompts.place_image(msgs, 1) == msgs  # a placeholder already there stays where it is
    assert prompts.place_image(msgs, 0) == request


def test_two_agent_is_a_deprecated_alias():
  ex = [infer.Example("q1", QUESTION, None)]
  with pytest.warns(DeprecationWarning, match="use infer.two_agents"):
    out = infer.two_agent(_Recorder("ours", "<thoughts>\nx\n</thoughts>"), _Recorder("ours", "C"), ex)
  assert out == [{"chain": "x", "reply": "C", "judgement": None}]
