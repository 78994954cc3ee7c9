"""`insightv-train --dry_run`: the 8B SFT and DPO steps compile on a fake 8-device mesh and report memory."""

from __future__ import annotations

import json
import os

from conftest import FAST_COMPILE, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1)}


def _dry_run(cli, tmp_path, job: str, *overrides: str) -> dict:
  out = cli.run("pipelines.cli.train", [f"--config={ROOT}/configs/{job}.py:8b", f"--workdir={tmp_path}", "--dry_run",
                                        "--dry_run_devices=8", *overrides],
                env={**ENV, "XLA_FLAGS": FAST_COMPILE}, workdir=f"{tmp_path}-logs")
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout[out.stdout.index("{"):out.stdout.rindex("}") + 1])


def test_dry_run_compiles_the_8b_step_on_8_fake_devices(tmp_path, cli):
  report = _dry_run(cli, tmp_path, "sft_reasoning", "--config.data.max_len=4096", "--config.data.batch_size=8")
  assert report["task"] == "sft" and report["devices"] == 8 and report["mesh"]["fsdp"] == 8
  assert 7.5 < report["params_billion"] < 9.0
  assert 0 < report["per_device_GiB"]["arguments"] < 40 and report["per_device_GiB"]["temporaries"] > 0
  assert report["model_TFLOPs_per_step"] > 1000
  assert "ref_params" not in report["state_GiB_per_device"]


def test_dry_run_compiles_the_8b_dpo_step_with_its_reference_model(tmp_path, cli):
  """The DPO step (policy and frozen reference over shared-prompt [prompt | chosen | rejected] rows, the default)
  compiles from the config alone."""
  report = _dry_run(cli, tmp_path, "dpo", "--config.data.max_len=1024", "--config.data.batch_size=8")
  assert report["task"] == "dpo" and report["reference_model"] and report["mesh"]["fsdp"] == 8
  state = report["state_GiB_per_device"]
  params_gib = report["params_billion"] * 1e9 * 4 / 8 / 2**30  # fp32 master weights over 8 devices
  assert abs(state["params"] - params_gib) < 0.05 * params_gib
  # the reference's trained part is part of the train state; the frozen vision tower (~4%) is the policy's
  assert 0.9 * state["params"] < state["ref_params"] < state["params"]
  assert report["per_device_GiB"]["arguments"] >= state["params"] + state["ref_params"] + state["opt_state"]
  # one row per pair (the prompt once, both replies): the FLOPs of 8 rows (unshared: 2 x 8)
  from configs.dpo import get_config
  from insightv_jax.train.flops import train_flops
  from insightv_jax.train.state import model_config
  mc = model_config(get_config("8b").model)
  assert report["model_TFLOPs_per_step"] == round(train_flops(mc, 1024, 8, report["tiles_per_row"]) / 1e12, 1)


def test_dry_run_compiles_the_8b_grpo_step_and_counts_the_rollout_cache(tmp_path, cli):
  """The GRPO step (group rows [prompt | reply_1 | ... | reply_G], a frozen reference since beta > 0) compiles from
  configs/grpo.py:8b, and the report counts the sampler's B x G KV cache."""
  report = _dry_run(cli, tmp_path, "grpo", "--config.data.max_len=512", "--config.grpo.num_generations=4",
                    "--config.grpo.max_new_tokens=32", "--config.grpo.questions_per_step=8",
                    "--config.grpo.prompts_per_call=4", "--config.grpo.beta=0.04")
  assert report["task"] == "grpo" and report["reference_model"] and report["mesh"]["fsdp"] == 8
  assert report["batch"] == 8 and report["seq"] == 512
  state = report["state_GiB_per_device"]
  assert 0.9 * state["params"] < state["ref_params"] < state["params"]
  assert report["per_device_GiB"]["arguments"] >= state["params"] + state["ref_params"] + state["opt_state"]
  # the KV cache by hand: LLaMA-3-8B holds 32 layers x (k, v) x 8 kv heads x 128 dims in bf16 per slot, plus the
  # int32 segment ids; prompt = 512 - 4 x 33 = 380 tokens, + 32 reply slots; rows = prompts x G
  rollout = report["rollout"]
  assert rollout["prompt_tokens"] == 380 and rollout["cache_slots"] == 412
  per_row = 412 * (32 * 2 * 8 * 128 * 2 + 4) / 2**30
  assert abs(rollout["kv_cache_GiB_per_call"] - 4 * 4 * per_row) < 1e-3
  assert abs(rollout["kv_cache_GiB_all_B_x_G_per_device"] - 8 * 4 * per_row / 8) < 1e-3
  # one optimizer step: 8 group rows forward + backward, and the reference's forward (a third of it)
  from configs.grpo import get_config
  from insightv_jax.train.flops import train_flops
  from insightv_jax.train.state import model_config
  mc = model_config(get_config("8b").model)
  assert report["model_TFLOPs_per_step"] == round(train_flops(mc, 512, 8, 5) * 4 / 3 / 1e12, 1)
