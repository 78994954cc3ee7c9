"""Model I/O: every checkpoint layout behind one registry (see `registry.py`).

    from insightv_jax.checkpoints import load_model, save_model, read_config
    model = load_model("hf:/ckpts/llama3-llava-next-8b-hf", dtype="bfloat16", mesh=mesh)
    model = load_model("llava:/ckpts/llama3-llava-next-8b")      # the original LLaVA-NeXT / Insight-V layout
    save_model(model, "/runs/export", layout="params")

What a folder records besides its weights (chat template, prompt preset, an original release's config.json, the
tower's name) is `model_card.py`'s file, insightv.json; the tokenizer and the other serving files are written by
`insightv_jax.data.model_files`.
"""

from insightv_jax.checkpoints.convert import convert
from insightv_jax.checkpoints.llava_hf import CheckpointMismatchError
from insightv_jax.checkpoints.registry import LAYOUTS, Layout, load_model, parse_spec, read_config, save_model

__all__ = ["LAYOUTS", "Layout", "CheckpointMismatchError", "convert", "load_model", "parse_spec", "read_config",
           "save_model"]
