"""`insightv-convert`: Hugging Face llava-hf checkpoints <-> our Orbax params folders.

    insightv-convert --to=orbax --input=/ckpts/llama3-llava-next-8b-hf --output=/ckpts/ours
    insightv-convert --to=hf --input=/runs/dpo/export --output=/serve/llava --dtype=bfloat16

The HF side is what `transformers.LlavaNextForConditionalGeneration.from_pretrained` reads (and what vLLM
or SGLang serve); the Orbax side is what `insightv-train` / `insightv-eval` read (`params_io`).
Tokenizer and processor files found in --input are copied across unchanged.
"""

from __future__ import annotations

import os
import shutil

from absl import app, flags, logging

from insightv_jax import params_io
from insightv_jax.hf import load_llava_next, save_llava_next

FLAGS = flags.FLAGS
flags.DEFINE_enum("to", None, ["orbax", "hf"], "Target format: 'orbax' (HF -> ours) or 'hf' (ours -> HF).")
flags.DEFINE_string("input", None, "Source folder (llava-hf checkpoint for --to=orbax, params folder for --to=hf).")
flags.DEFINE_string("output", None, "Destination folder; must not exist yet unless --overwrite.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype to store (float32 or bfloat16).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output folder.")

_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
               "preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja",
               "generation_config.json")


def convert(to: str, src: str, dst: str, dtype: str = "float32", overwrite: bool = False) -> None:
  if not os.path.isdir(src):
    raise FileNotFoundError(f"--input={src} is not a folder")
  if os.path.exists(dst) and os.listdir(dst) and not overwrite:
    raise FileExistsError(f"--output={dst} exists and is not empty; pass --overwrite to replace it")
  if to == "orbax":
    model = load_llava_next(src, dtype=dtype)
    params_io.save_params(model, dst)
  else:
    model = params_io.load_params(src, dtype=dtype)
    save_llava_next(model, dst, dtype=dtype)
  for name in _SIDE_FILES:
    if os.path.exists(os.path.join(src, name)):
      shutil.copy(os.path.join(src, name), os.path.join(dst, name))
  logging.info("converted %s -> %s (%s)", src, dst, to)


def main(argv):
  del argv
  convert(FLAGS.to, FLAGS.input, FLAGS.output, FLAGS.dtype, FLAGS.overwrite)


def run():
  flags.mark_flags_as_required(["to", "input", "output"])
  app.run(main)


if __name__ == "__main__":
  run()
