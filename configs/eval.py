"""insightv-eval: the two-agent system and single-model baselines on benchmark files.

Benchmark files: VLMEvalKit .tsv (MMBench, MMStar, MME, ChartQA, ...), MathVista's testmini .json and our JSONL
(insightv_jax/eval/readers.py has the shapes). The chat template and prompt preset default to what the reasoning
model's folder records (its insightv.json: every training export, and insightv-convert --template / --prompts); a
released Insight-V pair converted without them: --config.prompts=insightv --config.template=llava_llama_3.

    insightv-eval --config=configs/eval.py --workdir=/tmp/eval --config.reasoning_model=params:/runs/dpo/export \
        --config.summary_model=params:/runs/sft_summary/export --config.tokenizer=/data/tok \
        --config.benchmarks=/bench/mmstar.jsonl,/bench/chartqa.jsonl --config.image_root=/bench
"""

import ml_collections


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.reasoning_model = ""  # 'params:<dir>' or 'hf:<dir>': the reasoning agent
  c.summary_model = ""  # the summary agent ('' = the reasoning model plays both roles)
  c.baseline_model = ""  # model for the single-model baselines ('' = the summary model)
  c.tokenizer = ""  # Hugging Face tokenizer folder
  # chat template: llama3 | chatml | vicuna | llava_llama_3 | qwen_1_5 (LLaVA-NeXT's modes); "" = the one the
  # reasoning model's folder records (insightv.json, written by insightv-convert and every training export), else llama3
  c.template = ""
  # How the agents are prompted (insightv_jax/data/prompts.py PROMPT_PRESETS): "ours" | "insightv": the exact
  # prompts of Insight-V's released inference scripts (insightv_jax/data/insightv_compat.py), for its checkpoints;
  # Insight-V sampled (infer_two_models.py: both agents at temperature 0.2, top_p 0.95; VLMEvalKit's insight_v.py:
  # the chain at 0.7, the summary at 0.2), we decode greedily.
  # "" = the preset the reasoning model's folder records, else "ours".
  c.prompts = ""
  # comma-separated benchmark files: VLMEvalKit .tsv, MathVista testmini .json or JSONL (insightv_jax/eval/readers.py)
  c.benchmarks = ""
  c.image_root = ""  # root for relative image paths in the benchmark files
  c.systems = "two_agents,direct,cot"  # which systems to run (two_agents | direct | cot)
  c.dtype = "float32"  # compute dtype (bfloat16 on accelerators)
  # attention implementation of every model loaded: auto | xla | cudnn | splash (auto: cudnn on GPU in bf16, splash
  # on TPU, xla otherwise; insightv_jax/model/attention.py). Prefills run through it, decode steps always take xla.
  c.attention = "auto"
  c.batch_size = 8  # prompts per generate call
  c.reasoning_max_new_tokens = 512  # chain length budget
  c.answer_max_new_tokens = 32  # summary / direct answer budget
  c.cot_max_new_tokens = 544  # chain + answer in one reply
  c.limit = 0  # evaluate only the first N questions of each benchmark (0 = all)
  # VLMEvalKit rule set for MMBench/MMStar/MME/ChartQA: "current" or "legacy" (what Insight-V's published numbers
  # used); see insightv_jax/scoring/vlmeval_compat.py
  c.vlmeval_rules = "current"
  return c
