"""insightv-eval: the two-agent system and single-model baselines on benchmark JSONL files.

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
  c.template = "llama3"  # chat template: llama3 | chatml | vicuna
  c.benchmarks = ""  # comma-separated JSONL files (see insightv_jax/eval/readers.py for the shapes)
  c.image_root = ""  # root for relative image paths in the benchmark files
  c.systems = "two_agent,direct,cot"  # which systems to run
  c.dtype = "float32"  # compute dtype (bfloat16 on accelerators)
  c.batch_size = 8  # prompts per generate call
  c.reasoning_max_new_tokens = 512  # chain length budget
  c.answer_max_new_tokens = 32  # summary / direct answer budget
  c.cot_max_new_tokens = 544  # chain + answer in one reply
  c.limit = 0  # evaluate only the first N questions of each benchmark (0 = all)
  return c
