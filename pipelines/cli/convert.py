"""`insightv-convert`: checkpoint layouts <-> each other (`insightv_jax.checkpoints`).

    insightv-convert --to=orbax --input=/ckpts/llama3-llava-next-8b-hf --output=/ckpts/ours
    insightv-convert --to=hf --input=/runs/dpo/export --output=/serve/llava --dtype=bfloat16

"hf" is what `transformers.LlavaNextForConditionalGeneration.from_pretrained` reads (and vLLM or SGLang
serve); "orbax" is our params folder, what `insightv-train` / `insightv-eval` read as `params:<folder>`.
--input is a model spec ('hf:<folder>', 'params:<folder>') or a folder whose layout is detected.
Tokenizer and processor files found in --input are copied across unchanged.
"""

from __future__ import annotations

from absl import app, flags

from insightv_jax.checkpoints import convert

FLAGS = flags.FLAGS
TARGETS = {"orbax": "params", "hf": "hf"}  # --to value -> layout name in insightv_jax.checkpoints.LAYOUTS
flags.DEFINE_enum("to", None, list(TARGETS), "Target layout: 'orbax' (our params folder) or 'hf' (llava-hf).")
flags.DEFINE_string("input", None, "Source checkpoint: a folder (layout detected) or '<layout>:<folder>'.")
flags.DEFINE_string("output", None, "Destination folder; must not exist yet unless --overwrite.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype to store (float32 or bfloat16).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output folder.")


def main(argv):
  del argv
  convert(FLAGS.input, FLAGS.output, to=TARGETS[FLAGS.to], dtype=FLAGS.dtype, overwrite=FLAGS.overwrite)


def run():
  flags.mark_flags_as_required(["to", "input", "output"])
  app.run(main)


if __name__ == "__main__":
  run()
