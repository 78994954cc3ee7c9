"""Model I/O: every checkpoint layout behind one registry (see `registry.py`).

    from insightv_jax.checkpoints import load_model, save_model, read_config
    model = load_model("hf:/ckpts/llama3-llava-next-8b-hf", dtype="bfloat16", mesh=mesh)
    model = load_model("llava:/ckpts/llama3-llava-next-8b")      # the original LLaVA-NeXT / Insight-V layout
    save_model(model, "/runs/export", layout="params")
"""

from insightv_jax.checkpoints.convert import convert
from insightv_jax.checkpoints.llava_hf import CheckpointMismatchError
from insightv_jax.checkpoints.registry import LAYOUTS, Layout, load_model, parse_spec, read_config, save_model

__all__ = ["LAYOUTS", "Layout", "CheckpointMismatchError", "convert", "load_model", "parse_spec", "read_config",
           "save_model"]
