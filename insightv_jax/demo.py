"""`insightv-demo` / `make demo`: the main job on the embedded default (tiny model, CPU).

Current stage: writes a tiny random LLaVA-NeXT checkpoint in the llava-hf layout, loads it back through
`load_llava_next`, preprocesses an image with AnyRes and prints one forward pass. Later stages (synthetic
data, SFT, DPO, evaluation) extend this job.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx
from PIL import Image

from insightv_jax.data.images import ImageProcessorConfig, preprocess, stack_batch
from insightv_jax.hf import load_llava_next, save_llava_next
from insightv_jax.model import anyres
from insightv_jax.model.config import LlavaConfig
from insightv_jax.model.llava import LlavaNext

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "demo_out", "Where the demo writes its checkpoint and report.")
flags.DEFINE_string("model_config", os.path.join(os.path.dirname(__file__), "..", "configs", "models.py"),
                    "Python file with PRESETS (configs/models.py).")
flags.DEFINE_string("preset", "tiny", "Model preset in --model_config.")


def _load_preset(path: str, name: str) -> dict:
  namespace: dict = {}
  with open(path) as f:
    exec(compile(f.read(), path, "exec"), namespace)  # noqa: S102 - a config file of this repo
  return namespace["get_config"](name).to_dict()


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  t0 = time.time()
  cfg = LlavaConfig.from_hf(_load_preset(FLAGS.model_config, FLAGS.preset))
  ckpt = os.path.join(FLAGS.workdir, "tiny_random_hf")
  save_llava_next(LlavaNext(cfg, rngs=nnx.Rngs(0)), ckpt)
  model = load_llava_next(ckpt)
  logging.info("checkpoint written and loaded from %s", ckpt)

  rng = np.random.default_rng(0)
  image = Image.fromarray(rng.integers(0, 256, (45, 100, 3), dtype=np.uint8))
  pixel_values, sizes = stack_batch([preprocess(image, ImageProcessorConfig.for_model(cfg))])
  v = cfg.vision
  n_img = int(anyres.num_image_tokens(sizes[:, 0], sizes[:, 1], cfg.image_grid_pinpoints, v.image_size,
                                      v.patches_per_side, cfg.tokens_per_tile)[0])
  ids = np.concatenate([[1, 2], np.full(n_img, cfg.image_token_index), [3, 4, 5]])[None]
  logits = jax.jit(lambda m, *a: m(*a))(model, jnp.asarray(ids), jnp.asarray(pixel_values), jnp.asarray(sizes),
                                        jnp.ones_like(jnp.asarray(ids)))
  summary = {
      "image_size": sizes[0].tolist(),
      "tiles": int(pixel_values.shape[1]),
      "image_tokens": n_img,
      "logits_shape": list(logits.shape),
      "next_token": int(jnp.argmax(logits[0, -1])),
      "seconds": round(time.time() - t0, 2),
  }
  with open(os.path.join(FLAGS.workdir, "forward.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(summary))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
