"""`insightv-train`: SFT (either agent), DPO, iterative DPO or DPO reference log-probs (configs/ref_logprobs.py),
by config.

    insightv-train --config=configs/sft_reasoning.py:tiny --workdir=/tmp/run \
        --config.tokenizer=/data/tok --config.data.paths=/data/sft.ar --config.data.image_root=/data

Flags override any config field (`--config.optim.lr=1e-5`); the resolved config is written to the workdir.
"""

from absl import flags

from pipelines.cli import _inputs
from pipelines.cli._app import define_job_flags, run_job

FLAGS = flags.FLAGS
define_job_flags("Job config file, e.g. configs/sft_reasoning.py:tiny.", "Run folder: config, metrics, "
                 "checkpoints, export. Reused to resume.")
flags.DEFINE_bool("dry_run", False, "Compile the train step ahead of time on a fake mesh with abstract inputs "
                  "and print per-device memory and FLOPs; allocates nothing (see insightv_jax/train/dry_run.py).")
flags.DEFINE_integer("dry_run_devices", 8, "Fake devices for --dry_run.")


def job(config, workdir: str):
  # imports inside: --dry_run must set the fake devices (XLA_FLAGS) before anything imports jax
  if FLAGS.dry_run:
    from insightv_jax.train.dry_run import dry_run
    return dry_run(config, FLAGS.dry_run_devices)
  if config.get("task") == "dpo_iterative":
    from pipelines.iterative_dpo import run_iterative
    return run_iterative(config, workdir)
  if config.get("task") == "grpo":  # configs/grpo.py: on-policy RL of either agent (pipelines/grpo.py)
    from pipelines.grpo import train_grpo
    return train_grpo(config, workdir)
  if config.get("task") == "ref_logprobs":  # configs/ref_logprobs.py: score a DPO file with the reference model
    from insightv_jax.train.reference import score_reference
    return score_reference(config, workdir)
  from insightv_jax.train.loop import train
  return train(config, workdir)


def inputs(config) -> dict:
  """The config fields that name inputs, by kind (pipelines/cli/_inputs.py)."""
  if config.get("task") == "dpo_iterative":
    table = {"train.data.template": _inputs.template, "start_model": _inputs.model,
             "train.tokenizer": _inputs.tokenizer, "datagen.questions": _inputs.questions,
             ("train.tokenizer", "train.data.template", "start_model"): _inputs.chat_tokenizer}
    if config.sampler == "local":  # the chains are sampled with the datagen backend's tokenizer and template
      table.update({"datagen.backend.template": _inputs.template,
                    ("datagen.backend.tokenizer", "datagen.backend.template", "start_model"): _inputs.chat_tokenizer})
    return {**{f: _inputs.prompts for f in _inputs.present(config, "prompts", "train.data.prompts")}, **table}
  if config.get("task") == "grpo":  # the GRPO fields (G, rewards, agent, chain_source) are checked first
    from pipelines.grpo import check_config
    check_config(config)
  if FLAGS.dry_run:  # abstract inputs: no tokenizer, no data
    return {"model.init": _inputs.init_model}
  synthetic = config.get("task") == "grpo" and config.data.paths.startswith("synthetic:")  # GRPO's tiny questions
  return {"data.template": _inputs.template, **{f: _inputs.prompts for f in _inputs.present(config, "data.prompts")},
          "tokenizer": _inputs.tokenizer, "model.init": _inputs.init_model,
          "data.paths": _inputs.questions if synthetic else _inputs.data_files, "data.image_root": _inputs.optional_dir,
          ("tokenizer", "data.template", "model.init"): _inputs.chat_tokenizer}


def run():
  run_job(job, inputs)


if __name__ == "__main__":
  run()
