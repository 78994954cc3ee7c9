"""The files beside a model's weights that make its folder usable on its own, for every layout and both writers
(`insightv-convert` and the training export):

    model_files.write(folder, tokenizer, model_cfg, layout="hf", template="llava_llama_3", prompts="ours")

    tokenizer.json, tokenizer_config.json ...   the tokenizer the model was trained / converted with (`<image>` and
                                                the agents' tokens included), its `chat_template` the Jinja of the
                                                template it was trained with (templates.py: the same ids and
                                                assistant mask as `encode_chat`)
    generation_config.json                      bos; eos = [the tokenizer's eos, the template's end-of-turn]; pad
    preprocessor_config.json, processor_config.json, chat_template.jinja
                                                "hf" only: `LlavaNextProcessor` with our image geometry (pinpoints,
                                                tile, mean / std, patch size, class-token count, feature strategy),
                                                so `AutoProcessor` expands `<image>` to as many tokens as we do.
                                                Pixels equal ours with transformers' PIL backend (what it uses
                                                without torchvision; its torchvision backend resizes slightly
                                                differently)
    insightv.json                               the template and prompt preset (checkpoints/model_card.py)

With no template known (an original release converted without --template), the tokenizer keeps the chat template
it came with and the end-of-turn is left out of generation_config.json.
"""

from __future__ import annotations

import json
import logging
import os

from insightv_jax.checkpoints import model_card
from insightv_jax.data.images import ImageProcessorConfig
from insightv_jax.data.prompts import DEFAULT_PRESET
from insightv_jax.data.templates import DEFAULT_TEMPLATE, IMAGE_PLACEHOLDER, TEMPLATES
from insightv_jax.model.config import LlavaConfig

log = logging.getLogger(__name__)


def apply_recorded_defaults(config, *, model: str = "model.init", template: str = "data.template",
                            prompts: str = "data.prompts") -> None:
  """Fills a job config's template and prompt preset left "" with what its model's folder records (insightv.json,
  checkpoints/model_card.py), else the defaults (templates.DEFAULT_TEMPLATE, prompts.DEFAULT_PRESET); logs where
  each value came from, and warns when a flag overrides a different recorded value. model / template / prompts:
  the dotted config fields (train: model.init, data.template, data.prompts; eval: reasoning_model, template,
  prompts); a field the config does not have is left out."""
  spec = _get(config, model) or ""
  card, where = model_card.for_spec(spec), f"--config.{model}={spec}"
  for key, field, fallback in ((template, "template", DEFAULT_TEMPLATE), (prompts, "prompts", DEFAULT_PRESET)):
    parent, _, name = key.rpartition(".")
    section = _get(config, parent) if parent else config
    if section is not None and name in section:
      section[name] = model_card.resolve(field, section[name], card, fallback=fallback, flag=f"--config.{key}",
                                         where=where)


def _get(config, dotted: str):
  for part in dotted.split("."):
    if part not in config:
      return None
    config = config[part]
  return config


def generation_config(tokenizer, template: str | None) -> dict:
  """bos_token_id, eos_token_id ([the tokenizer's eos, the template's end-of-turn], each once), pad_token_id."""
  eos = [tokenizer.eos_token_id]
  if template:
    stop = TEMPLATES[template].stop
    stop_id = tokenizer.convert_tokens_to_ids(stop)
    if stop_id is None or stop_id == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(stop_id) != stop:
      log.warning("template %r ends a turn with %r, which the tokenizer has no token for: generation_config.json "
                  "stops at the tokenizer's eos only", template, stop)
    else:
      eos.append(int(stop_id))
  eos = list(dict.fromkeys(int(i) for i in eos if i is not None))
  out = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": eos if len(eos) != 1 else eos[0],
         "pad_token_id": tokenizer.pad_token_id}
  return {k: v for k, v in out.items() if v is not None and v != []}


def token_ids(tokenizer, template: str | None) -> dict:
  """The bos / eos / pad ids config.json carries (eos: the first of generation_config's)."""
  gen = generation_config(tokenizer, template)
  eos = gen.get("eos_token_id")
  return {**gen, "eos_token_id": eos[0] if isinstance(eos, list) else eos} if eos is not None else gen


def processor(tokenizer, cfg: LlavaConfig, template: str | None = None):
  """A `transformers.LlavaNextProcessor` that preprocesses and counts image tokens as we do (data/images.py)."""
  from transformers import LlavaNextImageProcessor, LlavaNextProcessor
  proc = ImageProcessorConfig.for_model(cfg)
  image = LlavaNextImageProcessor(
      size={"shortest_edge": proc.tile}, crop_size={"height": proc.tile, "width": proc.tile},
      image_grid_pinpoints=[list(p) for p in proc.pinpoints], image_mean=list(proc.mean), image_std=list(proc.std),
      do_pad=True)
  return LlavaNextProcessor(image_processor=image, tokenizer=tokenizer, patch_size=cfg.vision.patch_size,
                            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                            num_additional_image_tokens=int(cfg.vision.has_class_token),
                            image_token=IMAGE_PLACEHOLDER,
                            chat_template=TEMPLATES[template].jinja if template else tokenizer.chat_template)


def save_complete(model, folder: str, tokenizer, *, layout: str, template: str | None, prompts: str | None,
                  source: str | None = None) -> None:
  """The training export: `model` saved in `layout` (every process calls this) with everything `write` adds, and
  what the model folder it started from records carried forward (source: a model spec, e.g. config.model.init):
  its original release config.json, tower name and bos / eos ids."""
  import jax

  from insightv_jax.checkpoints import save_model
  folder_in = model_card.spec_folder(source)
  save_model(model, folder, layout=layout,
             token_ids={**token_ids(tokenizer, template), **model_card.token_ids(folder_in)})
  if jax.process_index() != 0:
    return
  card = model_card.for_spec(source)
  if card != model_card.ModelCard():
    model_card.write(folder, card)
  write(folder, tokenizer, model.cfg, layout=layout, template=template, prompts=prompts)


def write(folder: str, tokenizer, cfg: LlavaConfig, *, layout: str, template: str | None = None,
          prompts: str | None = None) -> None:
  """Writes the tokenizer (with `template`'s chat template), generation_config.json, the processor ("hf") and
  the model card's template / prompts into `folder` (beside weights already there). `tokenizer` is changed in
  place (its chat_template)."""
  if template:
    tokenizer.chat_template = TEMPLATES[template].jinja
  tokenizer.save_pretrained(folder)
  if layout == "hf":
    proc = processor(tokenizer, cfg, template)
    proc.save_pretrained(folder)  # processor_config.json (transformers 5), chat_template.jinja
    proc.image_processor.save_pretrained(folder)  # preprocessor_config.json: what transformers 4 (and vLLM on it) read
  with open(os.path.join(folder, "generation_config.json"), "w") as f:
    json.dump(generation_config(tokenizer, template), f, indent=2)
  if template or prompts:
    model_card.update(folder, template=template, prompts=prompts)
