"""`make demo` / insightv-demo: the whole Insight-V pipeline in miniature, on CPU, in minutes.

Task: "How many <colour> cells are in the grid?" on a 3 x 3 grid of four equally likely cell states. The
demo model sees one 8-px patch per cell. Answering directly needs counting in one forward pass; the
reasoning chain counts row by row with a running total, which the tiny model learns far more easily.
"""

import ml_collections

from configs import datagen, dpo, dpo_iterative, models, train_base


def _train(job_cfg, steps: int, lr: float, max_len: int = 256, batch: int = 16):
  c = job_cfg
  c.model.hf_config = models.get_config("demo")
  c.data.max_len = max_len
  c.data.batch_size = batch
  c.data.template = "llama3"
  c.optim.total_steps = steps
  c.optim.lr = lr
  c.optim.warmup_ratio = 0.05
  c.optim.final_lr_ratio = 0.05
  c.optim.weight_decay = 0.01
  c.log_every = 20
  c.checkpoint.every = 100
  c.loss_chunk = max_len
  c.mesh.fsdp = 1
  c.export_params = True
  return c


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.n_train = 3000  # training questions (data generation runs over all of them)
  c.n_test = 200  # held-out questions for the evaluation
  c.n_dpo = 300  # questions sampled by the reasoning agent in the DPO round
  c.tokenizer_vocab = 512  # BPE trained on the demo's own text (words of the chains become single tokens)

  c.datagen = datagen.get_config()
  c.datagen.questions = f"synthetic:{c.n_train}"
  c.datagen.world.kinds = "count"
  c.datagen.world.grid = 3
  c.datagen.world.image_size = 24
  c.datagen.chunk_questions = 200
  c.datagen.progressive.paths_per_question = 4
  c.datagen.backend.mistake_rate = 0.5
  c.datagen.assembly.perception_ratio = 0.5  # plain question -> answer examples keep the summary agent's perception

  steps = 400
  # max_len: the longest example of each job (measured: reasoning 139, summary 169, direct 70 tokens)
  c.reasoning = _train(train_base.base("sft", "tiny"), steps, 3e-3, 144)  # reasoning agent (reasoning_sft)
  c.summary = _train(train_base.base("sft", "tiny"), steps, 3e-3, 176)  # summary agent (summary_sft)
  c.direct = _train(train_base.base("sft", "tiny"), steps, 3e-3, 72)  # baseline: question -> answer
  # baseline: one model trained on the reasoning agent's chains, each followed by its answer, in one reply
  c.cot = _train(train_base.base("sft", "tiny"), steps, 3e-3, 176)
  c.cot.data.format = "cot"

  c.eval_batch_size = 50
  c.reasoning_max_new_tokens = 96
  c.answer_max_new_tokens = 10

  # iterative DPO of the reasoning agent; the demo sets start_model and the tokenizer paths at run time
  i = c.dpo_iterative = dpo_iterative.get_config("tiny")
  i.rounds = 1
  i.sample_temperature = 1.0  # sampling temperature of the reasoning agent's chains
  i.datagen = datagen.get_config()
  i.datagen.update(c.datagen)  # the demo's world and assessment
  i.datagen.questions = f"synthetic:{c.n_dpo}"  # questions sampled by the reasoning agent per round
  i.datagen.synthesis = "chains"
  i.datagen.progressive.max_chain_tokens = c.reasoning_max_new_tokens
  i.datagen.backend.template = c.reasoning.data.template
  i.datagen.backend.batch_size = c.eval_batch_size
  i.datagen.assembly.min_score_gap = 10.0
  i.train = _train(dpo.get_config("tiny"), 40, 3e-5, 144)  # one DPO round
  i.train.data.batch_size = 16
  i.train.dpo.sft_weight = 1.0
  i.train.optim.warmup_ratio = 0.0
  return c
