"""`make demo` / insightv-demo: the whole Insight-V pipeline in miniature, on CPU, over several seeds.

World: 3 x 3 grids of four equally likely cell states and 3 x 3 lattices of two shapes, 24 px, one 8-px patch per
cell. Reasoning questions: "How many <colour> cells are in the grid?" (the chain counts cell by cell with a running
total, each step naming the colour it counts). Perception questions: "What colour is the cell in row r, column c?"
and "Is the <shape> to the left of the <shape>?". Seeds vary model init and data order; the generated data is
shared by all seeds.

Stability, measured on this task (2-core CPU, 2026-11-25): a reasoning agent learns to read the grid at once, but
the running count comes in one jump (loss ~0.06 -> ~0.01) that some seeds make and others do not: lr 3e-3 x 300
steps 8-18% of chains right on 3 of 3 seeds, lr 1e-3 x 600 steps 25% / 98% / 25% on 3 seeds. With the counted
colour named in every step title (tasks.grid_count) lr 1e-3 x 600 steps reached 97-99% on each of 3 seeds. Jobs
that started from the reasoning agent at lr 5e-4 - 1e-3 for 200-300 steps collapsed to one answer (summary agent,
direct baseline), and a base pretrained on captions did not transfer (reasoning SFT from it: 14-21% after 200
steps); so the summary agent and the direct baseline start from random init, and only the one-model chain baseline
(a chain writer that must learn to end with the answer) starts from the reasoning agent.

Past SFT (issue 20; probes on 2026-12-07, 2-core CPU, seed-0 reasoning agents of 600 SFT steps). Without
headroom nothing past SFT is measurable: at T 1.0 the SFT agents' chains are 93-99% right (DPO rounds found 6-28
pairs). Headroom from the sampling temperature failed: at T 1.35 (71.3% of held-out chains right) every stage
LOWERED it: DPO round of 128 x 8 chains (373 pairs) at lr 3e-5 x 2 epochs 42.6% (sft_weight 0) / ~51% (1.0), lr
3e-5 x 1 epoch with warmup 67.6%, lr 1e-5 x 1 epoch 70.5%; GRPO 24 rollouts of 16 x 8 at lr 3e-4 66.8% (61.1% with
warmup), at lr 1e-3 0% (collapsed after one step). The errors were sampling noise (garbled tokens), and training on
sampled noise raised it. Headroom by construction works: reasoning_slips (below) puts teacher chains with one
mistake into the SFT set, so the agent learns to slip now and then at T 1.0 (slips 1.0: 88.5% held-out chains
right, 0.5: 95.1%). From the slips-1.0 agent at T 1.0: one DPO round (128 x 8 chains, 881 right, 244 pairs, lr
3e-5, 1 epoch, warmup 0.1, sft_weight 1.0) 96.3%; GRPO (24 rollouts of 16 x 8, lr 1e-4) 99.6% (rollout
accuracy 0.84 -> 0.95+ within 4 rollouts). J-GRPO of the summary agent (first run with these settings, seed 0,
its SFT summary agent with the SFT reasoner: 57.4% of held-out reasoning questions): 30 rollouts at lr 3e-4 or
1e-3 raised its rollout accuracy on the reasoning agent's own chains from 0.39 to 0.5-0.6 but lowered the held-out
two-agent accuracy to 52.0% (both lrs); the demo keeps lr 1e-4 (16 rollouts: 77.5% vs 78.8% over 3 seeds, no
gain; 12 rollouts on 3f23dfa: 83.2% vs 83.4%).
"""

import ml_collections

from configs import datagen, dpo, dpo_iterative, grpo, models, train_base


def _train(job_cfg, steps: int, lr: float, max_len: int, batch: int = 16):
  c = job_cfg
  c.model.hf_config = models.get_config("demo")
  c.data.max_len = max_len
  c.data.batch_size = batch
  c.data.template = "llama3"
  c.data.prompts = "ours"  # explicit: the demo's evaluation prompts every agent with its SFT job's preset
  c.optim.total_steps = steps
  c.optim.lr = lr
  c.optim.warmup_ratio = 0.05
  c.optim.final_lr_ratio = 0.05
  c.optim.weight_decay = 0.01
  c.log_every = 20
  c.checkpoint.every = 0  # only the final state: a killed job restarts (each takes about a minute)
  c.loss_chunk = max_len
  c.mesh.fsdp = 1
  c.export_params = True
  # two reader threads, not Grain's 16: with two jobs side by side on 2 cores the reasoning agent's SFT step ran
  # 1.70 steps/s each at 16 and 1.75-1.78 at 2 (one job alone: 3.36 at 16, 3.32 at 2, 2.72 at 0: the encoding then
  # waits for the step); the batches are the same
  c.data.read_threads = 2
  return c


def _rl(agent: str, steps: int, lr: float, max_new_tokens: int, max_len: int, questions: int = 16,
        generations: int = 8):
  """One GRPO job (pipelines/grpo.py) of the demo: answer reward only, constant lr (pipelines/demo_rl.py runs the
  reasoning agent's GRPO in segments that resume one another), chains sampled as the DPO rounds sample them."""
  c = grpo.get_config("tiny")
  c.model.hf_config = models.get_config("demo")
  c.data.template = "llama3"
  c.data.prompts = "ours"
  c.data.paths = ""  # set by the demo: its own question records (reasoning) or none (summary: chain_source)
  c.data.max_len = max_len  # prompt + G x (max_new_tokens + 1): one group per row
  c.loss_chunk = max_len
  c.mesh.fsdp = 1
  c.optim.lr = lr
  c.optim.total_steps = steps
  c.optim.warmup_ratio = 0.0
  c.optim.final_lr_ratio = 1.0  # constant: a segment resumed with more total_steps continues the same schedule
  c.optim.weight_decay = 0.0
  c.checkpoint.every = 0  # the final state of each segment only
  c.log_every = 1
  c.export_params = True
  g = c.grpo
  g.agent = agent
  g.num_generations = generations  # G
  g.questions_per_step = questions  # B
  g.max_new_tokens = max_new_tokens
  g.temperature = 1.0  # the reasoning agent's: dpo_iterative.sample_temperature (set in get_config)
  g.top_p = 0.95  # = the DPO rounds' datagen.progressive.top_p
  g.rewards = ("answer",)  # the final answer right (reasoning: the total its chain reaches)
  g.reward_weights = (1.0,)
  return c


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.seeds = 3  # independent repetitions (model init + data order) of everything after the shared data
  c.first_seed = 0
  # processes that run jobs side by side (1 = all in this process). A job's XLA step already uses both cores: the
  # reasoning agent's SFT step alone 3.35 steps/s, two side by side 1.89 steps/s each (1.13x the work per second;
  # 2-core AMD EPYC, 2026-12-07), so the second worker gains ~13%, mostly by overlapping compiles and sampling
  c.workers = 2
  # each worker on its own share of the CPUs (one core each here): two pinned SFT jobs ran 1.90 + 1.87 steps/s
  # against 1.75-1.78 each unpinned (2-core AMD EPYC, 2026-12-07); a job alone on one core 2.02
  c.pin_workers = True
  c.n_train = 3000  # training questions (data generation runs over all of them)
  c.n_test = 300  # held-out questions (reasoning and perception) for the evaluation
  c.chain_samples = 1  # chains per held-out reasoning question for the per-round chain accuracy
  c.tokenizer_vocab = 512  # BPE trained on the demo's own text (words of the chains become single tokens)
  # flawed chains whose running count slips, per reasoning question, added to the summary agent's mix (0: none; at
  # 1.0 two of three chains it saw were flawed, and it judged the reasoning agent's sound chains flawed: measured)
  c.summary_slips = 0.0
  # teacher chains with one mistake (a skipped row, a cell read wrong, a slipped count), per reasoning question,
  # added to the reasoning agent's SFT set (2 sound chains per question: reasoning_per_question). Headroom by
  # construction: the SFT agent learns to slip now and then, and what DPO / GRPO must do past SFT is unlearn it
  c.reasoning_slips = 1.0
  c.start_from = "cot:reasoning"  # job:job pairs, comma-separated: SFT jobs that start from another job's model

  c.datagen = datagen.get_config()
  c.datagen.questions = f"synthetic:{c.n_train}"
  c.datagen.world.kinds = "count:3,cell_colour:1,left_of:1"  # 60% reasoning, 40% perception
  c.datagen.world.grid = 3
  c.datagen.world.image_size = 24
  c.datagen.world.shapes = 2
  c.datagen.world.shape_grid = 3
  c.datagen.chunk_questions = 200
  c.datagen.progressive.paths_per_question = 4
  c.datagen.backend.mistake_rate = 0.5
  c.datagen.assembly.perception_ratio = 0.5  # plain question -> answer examples keep the summary agent's perception
  # up to 3 sound chains per wrong one in the summary agent's mix (measured: at 1 to 1 it took every chain as sound
  # yet answered 1 below a sound chain's total in 18% of reasoning questions, and 2 of 3 seeds stayed under 60%)
  c.datagen.assembly.summary_high = 3

  # max_len: above the longest example of each job (an over-long reply loses its end: the total). Steps: the first
  # run with reasoning_slips (600 / 300 / 200 / 200 steps of 16) took 32 min on 2 cores. Fewer steps broke agents:
  # at 400 / 150 / 100 / 150 the summary agent answered one number to every reasoning question on 2 of 3 seeds
  # (22.3%), the one-model chain collapsed on 1 seed (57.9 +- 31.0%), and the 400-step reasoning agent of seed 2
  # (69% of chains right) got no better with DPO or GRPO. XLA CPU flags did not speed the step (thunk runtime off,
  # XNNPACK off, fast math, single-threaded Eigen: 49.7-54.3 examples/s against 53.6).
  # Toward 20 minutes (2026-12-07, 2-core CPU): max_len just above each job's longest example (reasoning 149 tokens,
  # summary 179, direct 89, cot 150; a step's work is max_len x batch, padded). What the agents need is updates for
  # the reasoning agent and the one-model chain, and examples for the summary agent: a run with the reasoning agent
  # at 600 steps of 8 (was 16) gave chains as good as before (greedy: 174-175 of 175 right; sampled 83.8%, more
  # headroom), but the one-model chain at 120 steps of 16 answered "2" after right chains (42.3-73.1%), and the
  # summary agent at 300 of 12 departed from right totals (two agents 48.0-77.1%). Probes on that run's agents
  # (held-out reasoning questions): one-model chain 200 x 8 94.3%, 200 x 16 96.6% (seed 2); summary agent 300 x 8
  # 22.3% (collapsed to one answer), 300 x 12 48.0%, 300 x 16 81.1% (seed 1). These settings (3f23dfa): make demo
  # 19 min 13 s with its install, one-model chain 95.6 +- 3.3%, two agents 83.4 +- 11.6% (README)
  c.reasoning = _train(train_base.base("sft", "tiny"), 600, 1e-3, 152, batch=8)  # reasoning_sft + slips
  c.summary = _train(train_base.base("sft", "tiny"), 300, 3e-3, 184)  # summary_sft [+ slips]
  # baseline: question -> answer. At max_len 72 the loader skipped the long perception questions as over-long (prompt
  # alone 69-85 tokens; 2388 records skipped in 200 steps) and the model answered a number to every perception
  # question (0.0%; so did a 400-step lr 1e-3 probe): 92 holds every question (the longest: 89 tokens)
  c.direct = _train(train_base.base("sft", "tiny"), 120, 3e-3, 92)
  # baseline: one model writing chain and answer; trained on the reasoning agent's chains, each followed by its
  # answer, starting from the reasoning agent (a chain writer already: it learns to end with the answer)
  c.cot = _train(train_base.base("sft", "tiny"), 200, 1e-3, 152, batch=8)
  c.cot.data.target = "cot"

  c.eval_batch_size = 50
  c.reasoning_max_new_tokens = 96
  c.answer_max_new_tokens = 10

  # iterative DPO of the reasoning agent; the demo sets start_model and the tokenizer paths at run time
  i = c.dpo_iterative = dpo_iterative.get_config("tiny")
  i.rounds = 3
  # sampling temperature of the reasoning agent's chains (DPO rounds, GRPO rollouts, the chain accuracy): the
  # agent's own distribution; the headroom comes from reasoning_slips (temperature headroom failed: module doc)
  i.sample_temperature = 1.0
  i.datagen = datagen.get_config()
  i.datagen.update(c.datagen)  # the demo's world and assessment ...
  i.datagen.world.kinds = "count"  # ... on reasoning questions (chains that reach a total the scorer can check)
  i.datagen.world.split = "dpo"  # questions of their own, neither training nor held-out ones
  i.datagen.questions = "synthetic:48"  # questions sampled by the reasoning agent per round (GRPO asks the same)
  i.datagen.synthesis = "chains"
  i.datagen.progressive.paths_per_question = 8  # a round samples 48 x 8 = 384 chains
  i.datagen.assembly.pairs_per_question = 4  # best vs worst chain, walking inward: up to 4 pairs per question
  i.datagen.progressive.max_chain_tokens = c.reasoning_max_new_tokens
  i.datagen.backend.template = c.reasoning.data.template
  i.datagen.backend.batch_size = c.eval_batch_size
  i.datagen.assembly.min_score_gap = 10.0
  i.epochs = 1.0  # passes over each round's own pairs (Insight-V: 1 epoch; 2 lowered accuracy at T 1.35: doc)
  # one DPO round (total_steps: from epochs), at the SFT rate / 50 (Insight-V: 5e-7 after SFT at 2e-5 ... 1e-5),
  # constant: a round is 2-12 steps here, and a schedule over them puts the round's length into the compiled step
  # (each round of each seed compiled anew, ~20 s each: 2 of the ~3.5 min a seed's DPO took); one compiled step now
  # serves every round. Probes and the first runs used 3e-5 with warmup 0.1 and a cosine to 5%: ~1.6e-5 on average
  i.train = _train(dpo.get_config("tiny"), 40, 2e-5, 160, batch=8)
  i.train.dpo.sft_weight = 1.0  # the released Insight-V code's NLL term on the chosen chain
  i.train.optim.warmup_ratio = 0.0
  i.train.optim.final_lr_ratio = 1.0

  # GRPO of the SFT reasoning agent on the DPO rounds' questions (data/rl_questions.jsonl), in grpo_points segments
  # of as many rollouts as one DPO round samples chains (pipelines/demo_rl.py): point k and round k have sampled
  # the same number of chains
  c.grpo_points = i.rounds
  # lr 1e-4 (3e-4 lowered accuracy at T 1.35, 1e-3 collapsed it: module doc); 3 rollouts of 16 x 8 per point
  c.grpo = _rl("reasoning", 0, 1e-4, c.reasoning_max_new_tokens, 896)  # total_steps: set per segment
  c.grpo.grpo.temperature = i.sample_temperature
  # J-GRPO of the SFT summary agent on the SFT reasoning agent's own chains (DPO round 1's samples)
  c.summary_rl = _rl("summary", 12, 1e-4, c.answer_max_new_tokens, 320)  # lr not probed: GRPO's
  return c
