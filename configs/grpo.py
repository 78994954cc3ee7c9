"""On-policy RL (GRPO / DAPO) of either agent, with image-conditioned group rollouts (pipelines/grpo.py).

    insightv-train --config=configs/grpo.py:tiny --workdir=/tmp/grpo --config.tokenizer=/data/tok \
        --config.model.init=params:/runs/sft_reasoning/export --config.data.paths=/data/questions.jsonl \
        --config.data.image_root=/data

Each step: `grpo.questions_per_step` questions -> G = `grpo.num_generations` sampled replies each (one prefill per
question) -> rewards -> group advantages -> `grpo.num_iterations` optimizer steps over the group rows (each
micro-batched by optim.accum_steps). optim.total_steps counts optimizer steps (rollouts x num_iterations). The
model, mesh, freezing, remat and checkpoint fields are train_base.py's; data.max_len is the row length of the group
rows (prompt + G x (max_new_tokens + 1) per group, groups_per_row groups per row). Questions: `question` records, or
LLaVA conversation JSON with --config.data.format=llava (question: the first human turn; gold answer: the record's
`answer` field, else the last gpt turn's final answer; pipelines/grpo_questions.py).
"""

import ml_collections

from configs.train_base import base


def get_config(variant: str = "tiny"):
  c = base("grpo", variant)
  c.optim.warmup_ratio = 0.0
  c.optim.clip_norm = 1.0
  g = c.grpo = ml_collections.ConfigDict()
  # reasoning (the ST-GRPO role: question -> chain) | summary (the J-GRPO role: question + chain -> answer)
  g.agent = "reasoning"
  # summary agent: comma-separated files of summary_sft or path records (pipelines/grpo_questions.py)
  g.chain_source = ""
  g.num_generations = 8  # G: replies sampled per question (>= 2: advantages compare replies within a group)
  # B: questions per rollout, global (rows = B / groups_per_row; divisible by mesh data x fsdp and by the process
  # count: each process samples its share, questions_per_step / processes)
  g.questions_per_step = 16
  g.groups_per_row = 1  # questions packed per group row (each row gets that many image slots)
  g.temperature = 1.0  # sampling temperature; the loss's log-probs are of logits / temperature (as TRL)
  g.top_p = 1.0  # nucleus sampling (1.0 = off)
  g.top_k = 0  # top-k sampling (0 = off)
  g.max_new_tokens = 256  # reply budget; a reply that has not stopped by then is cut (and trained as sampled)
  g.prompts_per_call = 0  # prompts per sampler call (0: all B questions in one call)
  # by name (insightv_jax/train/rewards.py REWARDS): answer | format | length | verdict (summary agent: its stated
  # verdict on the chain is the truth about it; None for a preset that writes no verdict)
  g.rewards = ("answer", "format")
  g.reward_weights = (1.0, 0.2)  # one weight per reward; the total is the weighted sum (NaN entries skipped)
  # reasoning agent: whose answer the `answer` reward scores: "chain" (the answer the chain reaches) | "summary"
  # (a frozen summary agent reads each sampled chain and answers: what counts at inference, the two-agent pipeline)
  g.reward_judge = "chain"
  # reward_judge="summary": the frozen summary agent's model, a model spec as model.init takes it (params:<dir> |
  # hf:<dir> | llava:<dir>); prompted with data.template / data.prompts and the run's tokenizer, greedy, all B x G
  # chains of a rollout in one call
  g.summary_model = ""
  g.summary_max_new_tokens = 64  # the frozen summary agent's reply budget
  g.min_steps = 2  # format reward: steps the reasoning chain must hold
  g.length_budget = 512  # length reward: words without penalty ...
  g.length_interval = 128  # ... then linearly down to -1 over this many more (DAPO's soft overlong penalty)
  g.scale = "group"  # advantage scale: group (GRPO) | batch | none (Dr. GRPO: no division by the std)
  g.loss_type = "dapo"  # grpo | bnpo | dr_grpo | dapo (token-level, DAPO/TRL default); losses.grpo_loss
  g.epsilon = 0.2  # lower clip: ratio >= 1 - epsilon
  g.epsilon_high = 0.28  # upper clip: ratio <= 1 + epsilon_high (DAPO's clip-higher; 0 = epsilon)
  g.importance_sampling_level = "token"  # token | sequence (GSPO)
  g.beta = 0.0  # KL weight to the reference (= the starting params, frozen in the train state); 0: no reference
  g.num_iterations = 1  # optimizer steps per rollout; > 1: old log-probs computed once before the first update
  g.dynamic_sampling = False  # DAPO: drop groups whose rewards are all equal and refill with fresh questions ...
  g.max_resamples = 3  # ... at most this many extra rollouts per step (then the zero-spread groups fill the rest)
  g.seed = 0  # first sampling seed (one seed per reply, counted on; checkpointed with the question position)
  if variant == "tiny":
    c.data.paths = "synthetic:32"  # 32 questions of the synthetic world, written into the run folder (or files)
    c.data.max_len = 256
    c.optim.lr = 1e-3
    c.optim.total_steps = 10
    c.checkpoint.every = 5
    g.num_generations = 4
    g.questions_per_step = 4
    g.max_new_tokens = 16
  else:
    c.optim.lr = 1e-6
    c.data.max_len = 12288  # a 5-tile AnyRes prompt (~2,900 tokens) + G x (max_new_tokens + 1) = ~11,100
    g.questions_per_step = 64
    g.groups_per_row = 1
    g.max_new_tokens = 1024
    g.prompts_per_call = 16
    c.checkpoint.every = 50
  return c
