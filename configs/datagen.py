"""insightv-datagen: progressive path synthesis -> assessment -> dataset assembly (Insight-V section 3.1).

    insightv-datagen --config=configs/datagen.py --workdir=/data/gen                        # synthetic, scripted
    insightv-datagen --config=configs/datagen.py --workdir=/data/gen --config.questions=/data/q.jsonl \
        --config.backend.kind=openai --config.backend.base_url=http://vllm:8000/v1 --config.backend.model=Qwen2-VL-72B \
        --config.scorer=llm --config.shard=$RANK --config.num_shards=$WORLD
"""

import ml_collections


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  # JSONL of question records, "synthetic:N" (the embedded world), or "llava:<file>": LLaVA-NeXT JSON / JSONL /
  # YAML mixture, question = first human turn, ground truth = first gpt turn (with backend.kind=openai|local and
  # scorer=llm: the scripted backend and the synthetic scorer know only the synthetic world's questions)
  c.questions = "synthetic:64"
  c.image_root = ""  # root of relative image paths in the questions file
  c.shard = 0  # this process's shard of the questions (by id)
  c.num_shards = 1
  c.chunk_questions = 8  # questions per journal append (work lost on a kill is at most one chunk)
  c.synthesis = "progressive"  # "progressive" (one JSON step per call) or "chains" (a reasoning agent's whole chain)
  c.scorer = "synthetic"  # "synthetic" (programmatic, exact) or "llm" (the backend rates paths 1-100)
  c.answer_judge = "rule"  # "rule" (option letters, numbers, normalised text) or "llm"
  c.debug_kill_at = ""  # tests only: SIGKILL after that journal append, e.g. "chunk_3" (utils/faults.py)
  # the agents' prompt preset (insightv_jax/data/prompts.py PROMPT_PRESETS): "ours" | "insightv". It writes the
  # reasoning agent's prompt of synthesis='chains' (sent to the backend), the chain layout that assembly writes into
  # the datasets (PromptPreset.format_chain) and reads back from sampled chains; train on the datasets with the same
  # --config.data.prompts (configs/dpo_iterative.py sets both from its own `prompts`)
  c.prompts = "ours"

  c.world = ml_collections.ConfigDict()  # the synthetic world (used when questions/scorer/backend need it)
  c.world.seed = 0
  c.world.split = "train"
  c.world.kinds = "count,compare,row_max,shape_count,left_of,chart_sum,chart_range"
  c.world.grid = 6
  c.world.image_size = 336
  c.world.bars = 5
  c.world.shapes = 6
  c.world.shape_grid = 4

  c.backend = ml_collections.ConfigDict()
  c.backend.kind = "scripted"  # scripted | local | openai
  c.backend.mistake_rate = 0.5  # scripted: share of paths with an injected mistake
  c.backend.malformed_rate = 0.0  # scripted: share of malformed step replies (exercises retries)
  c.backend.base_url = ""  # openai: e.g. http://127.0.0.1:8000/v1
  c.backend.model = ""  # openai: model name; local: 'params:<dir>' or 'hf:<dir>'
  c.backend.api_key_env = "OPENAI_API_KEY"  # openai: environment variable holding the key (never logged)
  c.backend.concurrency = 8  # openai: requests in flight
  c.backend.max_retries = 5  # openai: retries on 429 / 5xx / timeouts / malformed responses
  c.backend.timeout_s = 60.0
  c.backend.backoff_s = 1.0  # openai: first retry delay (doubles, with jitter)
  c.backend.tokenizer = ""  # local: tokenizer folder
  c.backend.template = "llama3"  # local: chat template
  c.backend.dtype = "float32"  # local: compute dtype
  c.backend.batch_size = 8  # local: prompts per generate call

  # data_gen/progressive.py ProgressiveConfig (its only defaults: the dataclass has none)
  c.progressive = ml_collections.ConfigDict()
  c.progressive.paths_per_question = 4  # N paths sampled per question
  c.progressive.temperature = 0.7  # sampling temperature (the Insight-V code's 0.7)
  c.progressive.top_p = 0.95  # nucleus sampling (the Insight-V code's 0.95)
  c.progressive.max_steps = 16  # step budget of a progressive path
  c.progressive.min_steps = 2  # steps demanded before a "summary" is accepted (an early one counts as "continue")
  c.progressive.max_retries = 3  # retries of a malformed step or failed request (new seed each), then the path drops
  c.progressive.max_step_tokens = 256  # reply budget of one step
  c.progressive.max_answer_tokens = 64  # reply budget of the final answer
  c.progressive.max_chain_tokens = 1024  # synthesis='chains': budget of a whole chain

  # data_gen/assemble.py AssemblyConfig (its only defaults: the dataclass has none); bands of correct paths by
  # reasoning score: high >= high_threshold, mid >= mid_threshold, low below
  c.assembly = ml_collections.ConfigDict()
  c.assembly.high_threshold = 100.0  # the synthetic scorer is exact: only flawless chains; ~80 with an LLM scorer
  c.assembly.mid_threshold = 50.0
  c.assembly.reasoning_per_question = 2  # reasoning SFT: up to this many high-band paths per question, best first
  # summary SFT per question: this many chains of each band, and of wrong-answer chains, each with the correct
  # answer as target and its quality, so the summary agent learns to judge chains
  c.assembly.summary_high = 1
  c.assembly.summary_mid = 1
  c.assembly.summary_low = 1
  c.assembly.summary_wrong = 1
  c.assembly.perception_ratio = 0.0  # plain question -> answer examples per question (0.5 = every other question)
  c.assembly.min_score_gap = 20.0  # a DPO pair needs chosen score > rejected score + this
  c.assembly.pairs_per_question = 1  # DPO pairs per question (best vs worst, walking inward)
  return c
