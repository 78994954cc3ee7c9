"""`insightv-convert`: checkpoint layouts <-> each other (`insightv_jax.checkpoints`).

    insightv-convert --to=params --input=/ckpts/llama3-llava-next-8b-hf --output=/ckpts/ours
    insightv-convert --to=hf --input=/runs/dpo/export --output=/serve/llava --dtype=bfloat16
    insightv-convert --to=params --input=llava:/ckpts/llama3-llava-next-8b --output=/ckpts/ours
    insightv-convert --to=llava-original --input=/runs/dpo/export --output=/ckpts/insight-v-reason

"hf" is what `transformers.LlavaNextForConditionalGeneration.from_pretrained` reads (and vLLM or SGLang
serve); "params" is our params folder (Orbax), what `insightv-train` / `insightv-eval` read as `params:<folder>`
("orbax", its old name, still works for one release, with a deprecation warning); "llava-original" is LLaVA-NeXT's
own layout (LlavaLlamaForCausalLM / LlavaQwenForCausalLM), what the released Insight-V agents and
lmms-lab/llama3-llava-next-8b are.
--input is a model spec ('hf:<folder>', 'params:<folder>', 'llava:<folder>') or a folder whose layout is detected.

Every --output is a complete model folder (insightv_jax/data/model_files.py): the tokenizer, with the chat template
the model was trained with, generation_config.json (stopping at the template's end of turn), for "hf" the
LlavaNextProcessor files, and insightv.json (template, prompt preset, and an original release's config.json, which
--to=llava-original writes back field for field). For --to=params / hf, a tokenizer without `<image>` (original
LLaVA-NeXT / Insight-V ones have none) gets it, then the agents' `<thoughts>` / `<output>` tokens when missing, all
appended after its other tokens (an Insight-V tokenizer's four keep their ids); the model takes `<image>`'s id as
image_token_index and grows mean-initialised embedding rows up to the tokenizer's length.
"""

from __future__ import annotations

import logging
import os

from absl import flags

from insightv_jax.utils.inputs import InputError, writable_dir
from pipelines.cli import _inputs
from pipelines.cli._app import run_main

FLAGS = flags.FLAGS
# --to value -> layout name in insightv_jax.checkpoints.LAYOUTS
TARGETS = {"params": "params", "hf": "hf", "llava-original": "llava"}
DEPRECATED_TARGETS = {"orbax": "params"}  # old spelling -> new one; accepted with a warning for one release
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
flags.DEFINE_enum("to", None, [*TARGETS, *DEPRECATED_TARGETS], "Target layout: 'params' (our params folder), 'hf' "
                  "(llava-hf, for transformers / vLLM / SGLang) or 'llava-original' (LLaVA-NeXT's own layout); "
                  "'orbax' is the deprecated name of 'params'.")
flags.DEFINE_string("input", None, "Source checkpoint: a folder (layout detected) or '<layout>:<folder>'.")
flags.DEFINE_string("output", None, "Destination folder; must not exist yet unless --overwrite.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype to store (float32 or bfloat16).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output folder.")
flags.DEFINE_string("vision_config", None, "Original LLaVA-NeXT --input only, when its vision tower is no preset: "
                    "the path of the tower's CLIP / SigLIP config.json.")
flags.DEFINE_string("template", "", "The chat template the model was trained with (llama3 | chatml | vicuna | "
                    "llava_llama_3 | qwen_1_5), written as the tokenizer's chat_template; '' = the one --input "
                    "records (insightv.json), else the tokenizer keeps its own.")
flags.DEFINE_string("prompts", "", "The prompt preset the agents were trained with (ours | insightv); '' = the one "
                    "--input records, else none recorded.")
flags.DEFINE_string("vision_tower", "", "--to=llava-original: the vision tower's name (hub id or folder) for "
                    "mm_vision_tower, when --input does not name it (an original source's own is kept).")


def convert_checkpoint(src: str, dst: str, *, to: str, dtype: str = "float32", overwrite: bool = False,
                       vision_config: str | None = None, template: str = "", prompts: str = "",
                       vision_tower: str = "") -> None:
  """What the command runs; `to` is a --to value ('params', 'hf', 'llava-original'; 'orbax' deprecated)."""
  # here: a bad flag is named before jax is imported
  from insightv_jax.checkpoints import convert, model_card, parse_spec
  from insightv_jax.data import model_files
  from insightv_jax.data.tokenizer import add_model_tokens, load_tokenizer
  if to in DEPRECATED_TARGETS:
    logging.warning("--to=%s is deprecated and goes in the next release: write --to=%s (the same folder)", to,
                    DEPRECATED_TARGETS[to])
  layout = {**TARGETS, **DEPRECATED_TARGETS}[to]
  _, folder = parse_spec(src)
  card = model_card.read(folder)
  template, prompts = template or card.template, prompts or card.prompts
  tokenizer = image_token = vocab = None
  if any(os.path.exists(os.path.join(folder, n)) for n in TOKENIZER_FILES):
    tokenizer = load_tokenizer(folder)
    if layout != "llava":
      image_token, vocab = add_model_tokens(tokenizer), len(tokenizer)
  else:
    logging.warning("--input=%s holds no tokenizer: --output gets none (and no chat template, generation config or "
                    "processor); copy the model's tokenizer into --input and convert again", src)
  cfg = convert(src, dst, to=layout, dtype=dtype, overwrite=overwrite, vision_config=vision_config,
                image_token_index=image_token, vocab_size=vocab, vision_tower=vision_tower or None,
                token_ids=model_files.token_ids(tokenizer, template) if tokenizer is not None else None)
  if tokenizer is not None:
    model_files.write(dst, tokenizer, cfg, layout=layout, template=template, prompts=prompts)


def check_flags() -> None:
  """--template / --prompts registered names, --vision_config a CLIP / SigLIP config, --input a checkpoint folder
  (read with it), --output a new (or empty, or --overwrite) folder."""
  _inputs.template(FLAGS.template, "--template")
  _inputs.prompts(FLAGS.prompts, "--prompts")
  if FLAGS.vision_config:
    _inputs.vision_config(FLAGS.vision_config, "--vision_config")
  _inputs.model(FLAGS.input, "--input", vision_config=FLAGS.vision_config, vision_flag="--vision_config")
  out = writable_dir(FLAGS.output, "--output")
  if os.path.isdir(out) and os.listdir(out) and not FLAGS.overwrite:
    raise InputError(f"--output={FLAGS.output}: the folder exists and is not empty; pass --overwrite to replace it "
                     "or give a new folder")


def main(argv):
  del argv
  check_flags()
  convert_checkpoint(FLAGS.input, FLAGS.output, to=FLAGS.to, dtype=FLAGS.dtype, overwrite=FLAGS.overwrite,
                     vision_config=FLAGS.vision_config, template=FLAGS.template, prompts=FLAGS.prompts,
                     vision_tower=FLAGS.vision_tower)


def run():
  flags.mark_flags_as_required(["to", "input", "output"])
  run_main(main)


if __name__ == "__main__":
  run()
