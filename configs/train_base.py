"""Fields shared by every training job (SFT of either agent, DPO). Each field is documented where set.

Job configs (sft_reasoning.py, sft_summary.py, dpo.py) call `base(...)` and change what differs.
Variants: `--config=configs/sft_reasoning.py:tiny` (CPU tests / demo) or `:8b` (real hardware).
"""

import ml_collections

from configs import models


def base(task: str, variant: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = task  # "sft" or "dpo"
  c.seed = 0  # model init seed (random init only)
  c.tokenizer = ""  # folder of a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json)
  c.log_every = 10  # steps between metrics.jsonl / TensorBoard entries
  c.loss_chunk = 512  # positions per LM-head chunk in the loss (bounds fp32 logits memory)
  c.export_params = True  # write workdir/export (params-only Orbax) at the end, for the next stage
  c.debug_kill_at = ""  # tests only: SIGKILL after that step, e.g. "step_12" (insightv_jax/utils/faults.py)
  c.device_peak_flops = 0.0  # per-device peak FLOP/s for MFU (0: from the device kind, e.g. TPU v5p, H100)

  c.model = ml_collections.ConfigDict()
  c.model.init = "random"  # "random" (from hf_config), "hf:<llava-hf folder>" or "params:<our export folder>"
  c.model.hf_config = models.get_config("tiny" if variant == "tiny" else "llava-next-llama3-8b")
  c.model.dtype = "float32"  # compute dtype: float32 on CPU, bfloat16 on TPU/GPU
  c.model.param_dtype = "float32"  # master weights
  c.model.remat = "none"  # none | full | dots_saveable | nothing_saveable
  c.model.scan_layers = False  # nnx.scan over layers (faster compiles for deep models)
  # attention kernel: auto | xla | cudnn | splash (auto: cudnn on GPU in bf16, splash on TPU, xla otherwise; see
  # insightv_jax/model/attention.py). Runtime only, never written into config.json.
  c.model.attention = "auto"

  c.data = data_section()

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-5
  c.optim.warmup_ratio = 0.05  # linear warmup over this fraction of total_steps, then cosine decay
  c.optim.final_lr_ratio = 0.0  # lr at the end of the cosine, as a fraction of lr
  c.optim.total_steps = 1000
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 1.0  # global-norm clipping of the trained parameters' gradients (0 = off)
  c.optim.accum_steps = 1  # micro-batches per optimizer step (batch_size must divide)
  c.optim.freeze = ("^vision_tower/",)  # regexes over parameter paths; matches are not trained

  c.dpo = ml_collections.ConfigDict()
  c.dpo.beta = 0.1
  c.dpo.loss_type = "sigmoid"  # sigmoid | hinge | ipo | robust
  c.dpo.label_smoothing = 0.0  # conservative DPO (sigmoid) / robust DPO noise rate
  c.dpo.sft_weight = 0.0  # weight of an NLL term on the chosen chain (the Insight-V code uses 1.0)
  # "model": a frozen copy of the starting policy, run in every step; "precomputed": the records' ref_chosen_logp /
  # ref_rejected_logp, written by configs/ref_logprobs.py with this run's model.init, tokenizer and data settings
  # (each record's ref_hash is checked before the first step: train/reference.py)
  c.dpo.reference = "model"
  # True: each pair is ONE row [prompt | chosen | rejected] (the rejected reply sees the prompt, not the chosen
  # one; positions continue from the prompt on both; images spliced once), so the prompt runs through the decoder
  # once per pair instead of twice; log-probs equal the unshared path's (tests/test_train_shared_dpo.py). The row
  # holds prompt + both replies in data.max_len tokens (replies cut from the end to fit, the longer first), where
  # the unshared path gives each side a max_len row of its own. False: chosen and rejected rows (`DpoBatch`).
  # attention='splash' cannot run shared rows (named error; 'auto' runs them through xla on TPU).
  c.dpo.shared_prompt = True

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1  # pure data parallelism
  c.mesh.fsdp = -1  # parameter/optimizer sharding (-1: all remaining devices)
  c.mesh.tensor = 1  # tensor parallelism over heads / MLP / vocab

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 500  # steps between (async) checkpoints; 0 = only at the end
  c.checkpoint.keep = 3  # checkpoints kept
  c.checkpoint.async_save = True

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # "" single process; "host:port" explicit; "auto" (TPU slices, SLURM)
  c.distributed.num_processes = 1
  c.distributed.process_id = 0

  if variant == "tiny":
    c.data.max_len = 384
    c.data.batch_size = 4
    c.optim.total_steps = 20
    c.optim.lr = 1e-3
    c.log_every = 1
    c.checkpoint.every = 5
    c.loss_chunk = 128
    c.optim.freeze = ()
  elif variant == "8b":
    c.model.dtype = "bfloat16"
    c.model.remat = "dots_saveable"
    c.model.scan_layers = True
    c.data.max_len = 12288
    c.data.batch_size = 128
  else:
    raise ValueError(f"unknown variant {variant!r}; expected 'tiny' or '8b'")
  return c


def data_section() -> ml_collections.ConfigDict:
  """The `data` section of every training job: the one home of the loader's defaults (insightv_jax/data/
  loader_config.py `LoaderConfig` has none; `LoaderConfig.from_config(config.data)` reads this)."""
  d = ml_collections.ConfigDict()
  # auto | array_record | json | tfds. json (or jsonl): JSON lines, a JSON array, or a LLaVA-NeXT YAML mixture
  # (.yaml: datasets: [{json_path, sampling_strategy: all | first:N | end:N | random:N, N a count or P%}]), by
  # content; auto: a folder is tfds, JSON / YAML text is json, other files array_record
  d.source = "auto"
  d.paths = ""  # comma-separated files (array_record / json), or the prepared TFDS builder folder
  d.image_root = ""  # root that relative image paths resolve against
  d.max_len = 2048  # tokens per row
  d.batch_size = 8  # global rows per optimizer step
  d.pack = False  # pack several examples per row (SFT)
  d.images_per_row = 1  # image slots per row (> 1 with packing)
  # chat template: llama3 | chatml | vicuna | llava_llama_3 | qwen_1_5 (LLaVA-NeXT's conv modes); "" = the one the
  # model.init folder records (its insightv.json, written by insightv-convert and every export), else llama3
  d.template = ""
  d.seed = 0  # shuffling seed
  d.num_epochs = ml_collections.config_dict.placeholder(int)  # None: repeat forever (steps bound the run)
  d.worker_count = 0  # Grain worker processes
  # threads that read and encode records in each process (Grain's ReadOptions.num_threads, whose default this is,
  # chosen by Grain for remote disks; 0 = in the thread that iterates, which Grain advises for data in memory: no GIL
  # contention). On 2 busy cores 16 threads spent 77 ms of CPU per demo batch against 38 ms at 0-2 (configs/demo.py)
  d.read_threads = 16
  d.strict = False  # raise on the first bad record instead of skipping it
  d.min_target_tokens = 4  # reply tokens that must survive truncation
  # batches buffered per worker process, and the examples the reader threads keep ready (this many batches' worth,
  # at least one per thread; Grain's own default is 500 examples, and its iterator checks every buffered one at each
  # example: one job alone on one core ran the demo's reasoning SFT at 2.30-2.32 steps/s with 16-32 examples
  # buffered against 2.02-2.19 with 500)
  d.prefetch_buffer_size = 4
  # the record format: "auto" (our records, insightv_jax/data/records.py) or "llava": LLaVA-NeXT / Insight-V JSON:
  # {"image", "conversations": [{"from": "human"|"gpt", "value"}]} trained as given (every gpt turn a target), or
  # with configs/dpo.py {"image", "prompt", "chosen", "rejected"}. ("cot" here is the deprecated spelling of
  # data.target="cot", accepted with a warning for one release.)
  d.format = "auto"
  # what our records train: "auto" (by record kind: reasoning_sft -> the reasoning agent, summary_sft -> the
  # summary agent, question -> the direct-answer baseline, dpo_pair -> the reasoning agent) or "cot" (summary_sft
  # records as chain + answer in ONE reply: the single-model chain-of-thought baseline)
  d.target = "auto"
  # how our records are written as the agents' conversations: "ours" | "insightv" (Insight-V's released prompts;
  # insightv_jax/data/prompts.py PROMPT_PRESETS). Prompt the trained agents with the same preset (configs/eval.py
  # prompts, configs/datagen.py prompts); configs/dpo_iterative.py sets it from its own `prompts`. "" = the preset
  # the model.init folder records (its insightv.json), else "ours".
  d.prompts = ""
  # stop with an error naming the file, the first bad record and its reason (and a hint when it looks like
  # another format) when none of the first max_bad_prefix records read is usable (0: never stop) ...
  d.max_bad_prefix = 100
  # ... or when more than this fraction of the records read were skipped, once max_bad_prefix were read (1.0: never)
  d.max_skip_fraction = 0.5
  # shared-prompt DPO (dpo.shared_prompt) with pack=True: at most this many [prompt | chosen | rejected] pairs per
  # row (the batch's pair slots are batch_size x pairs_per_row; set images_per_row to match for image pairs)
  d.pairs_per_row = 1
  return d
