"""`insightv-convert`: checkpoint layouts <-> each other (`insightv_jax.checkpoints`).

    insightv-convert --to=orbax --input=/ckpts/llama3-llava-next-8b-hf --output=/ckpts/ours
    insightv-convert --to=hf --input=/runs/dpo/export --output=/serve/llava --dtype=bfloat16
    insightv-convert --to=orbax --input=llava:/ckpts/llama3-llava-next-8b --output=/ckpts/ours
    insightv-convert --to=llava-original --input=/runs/dpo/export --output=/ckpts/insight-v-reason

"hf" is what `transformers.LlavaNextForConditionalGeneration.from_pretrained` reads (and vLLM or SGLang
serve); "orbax" is our params folder, what `insightv-train` / `insightv-eval` read as `params:<folder>`;
"llava-original" is LLaVA-NeXT's own layout (LlavaLlamaForCausalLM / LlavaQwenForCausalLM), what the released
Insight-V agents and lmms-lab/llama3-llava-next-8b are.
--input is a model spec ('hf:<folder>', 'params:<folder>', 'llava:<folder>') or a folder whose layout is detected.
Tokenizer and processor files found in --input are copied across. For --to=orbax / hf, a tokenizer without
`<image>` (original LLaVA-NeXT / Insight-V ones have none) gets it, appended after its other tokens (the four
`<thoughts>`/`<output>` tokens of an Insight-V tokenizer keep their ids), the model takes its id as
image_token_index and grows a mean-initialised embedding row if the id is past its vocabulary, and the updated
tokenizer is written to --output.
"""

from __future__ import annotations

import os

from absl import flags

from insightv_jax.utils.inputs import InputError, existing, writable_dir
from pipelines.cli import _inputs
from pipelines.cli._app import run_main

FLAGS = flags.FLAGS
# --to value -> layout name in insightv_jax.checkpoints.LAYOUTS
TARGETS = {"orbax": "params", "hf": "hf", "llava-original": "llava"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
flags.DEFINE_enum("to", None, list(TARGETS), "Target layout: 'orbax' (our params folder), 'hf' (llava-hf) or "
                  "'llava-original' (LLaVA-NeXT's own layout).")
flags.DEFINE_string("input", None, "Source checkpoint: a folder (layout detected) or '<layout>:<folder>'.")
flags.DEFINE_string("output", None, "Destination folder; must not exist yet unless --overwrite.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype to store (float32 or bfloat16).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output folder.")
flags.DEFINE_string("vision_config", None, "Original LLaVA-NeXT --input only, when its vision tower is no preset: "
                    "the path of the tower's CLIP / SigLIP config.json.")


def convert_checkpoint(src: str, dst: str, *, to: str, dtype: str = "float32", overwrite: bool = False,
                       vision_config: str | None = None) -> None:
  """What the command runs; `to` is a --to value ('orbax', 'hf', 'llava-original')."""
  # here: a bad flag is named before jax is imported
  from insightv_jax.checkpoints import convert, parse_spec
  from insightv_jax.data.tokenizer import add_image_token, load_tokenizer
  layout = TARGETS[to]
  _, folder = parse_spec(src)
  tokenizer = image_token = None
  if layout != "llava" and any(os.path.exists(os.path.join(folder, n)) for n in TOKENIZER_FILES):
    tokenizer = load_tokenizer(folder)
    size = len(tokenizer)
    image_token = add_image_token(tokenizer)
    if len(tokenizer) == size:
      tokenizer = None  # it had <image> already: the copied files are right
  convert(src, dst, to=layout, dtype=dtype, overwrite=overwrite, vision_config=vision_config,
          image_token_index=image_token)
  if tokenizer is not None:
    tokenizer.save_pretrained(dst)


def check_flags() -> None:
  """--input a checkpoint folder, --output a new (or empty, or --overwrite) folder, --vision_config a file."""
  _inputs.model(FLAGS.input, "--input")
  out = writable_dir(FLAGS.output, "--output")
  if os.path.isdir(out) and os.listdir(out) and not FLAGS.overwrite:
    raise InputError(f"--output={FLAGS.output}: the folder exists and is not empty; pass --overwrite to replace it "
                     "or give a new folder")
  if FLAGS.vision_config:
    existing(FLAGS.vision_config, "--vision_config", what="the vision tower's config.json")


def main(argv):
  del argv
  check_flags()
  convert_checkpoint(FLAGS.input, FLAGS.output, to=FLAGS.to, dtype=FLAGS.dtype, overwrite=FLAGS.overwrite,
                     vision_config=FLAGS.vision_config)


def run():
  flags.mark_flags_as_required(["to", "input", "output"])
  run_main(main)


if __name__ == "__main__":
  run()
