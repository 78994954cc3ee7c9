"""Test setup: 8 fake CPU devices (set before jax is imported), fp32 matmuls, shared tiny fixtures."""

import os

# Compile fast, run slow: the tests' programs are tiny, so compiling is most of their time. LLVM's optimisation buys
# nothing back (measured: three training tests 269 -> 179 s of CPU, results equal), and XLA:CPU's MLIR fusion
# emitters take twice the time of its elemental emitter on these programs (the tiny SFT step: 8.0-9.5 s -> 4.1-4.3 s
# of compile at -O0; the elemental emitter without -O0 takes 21 s: the two go together). Every process the tests
# start gets them through xla_flags().
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process on `devices` fake CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the whole run, shared by the xdist workers and by the CLI subprocesses the
# tests start (they inherit this environment): the tiny model's programs, the same HLO in many tests, compile once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".cache", "jax_tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def model_preset(name: str = "tiny") -> dict:
  """A preset dict from configs/models.py (the configs folder is data, not a package)."""
  spec = importlib.util.spec_from_file_location("insightv_model_presets", ROOT / "configs" / "models.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(name).to_dict()


@pytest.fixture(scope="session")
def tiny_cfg():
  from insightv_jax.model.config import LlavaConfig
  return LlavaConfig.from_hf(model_preset("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
  from flax import nnx

  from insightv_jax.model.llava import LlavaNext
  return LlavaNext(tiny_cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="session", autouse=True)
def _absl_flags_parsed():
  """Grain reads absl flags; tests do not go through app.run."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def cli():
  """Runs command lines (`cli.run("pipelines.cli.train", args, ...)`) in fresh processes forked from one server that
  imported JAX, transformers and the library once (tests/cli_fork.py): ~10 s of CPU less per command line."""
  from cli_fork import ForkServer
  server = ForkServer()
  yield server
  server.close()
