"""Encoding: (where, record bytes) -> an example of numpy arrays (or `Skipped`): parse and validate the record, read
and decode its images, AnyRes tiles, the agent's conversation (`prompts.PromptPreset.messages`: by record kind, or
the `target`) tokenized by `prompts.encode`, truncation.

Truncation policy: an example longer than max_len keeps its whole prompt (image tokens are never cut) and loses
the end of its reply, provided at least `min_target_tokens` reply tokens remain; otherwise it is skipped as
over-long.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from insightv_jax.data import llava_format, prompts, records, shared_pairs, templates
from insightv_jax.data.bad_data import RECORD_ERRORS, BadRecord, Skipped, Stop
from insightv_jax.data.images import ImageProcessorConfig, check_image_tokens, decode, preprocess
from insightv_jax.data.loader_config import LoaderConfig
from insightv_jax.model.config import LlavaConfig

log = logging.getLogger(__name__)


class Encoder:
  """(where, record bytes) -> example dict of numpy arrays, or `Skipped` (raises `BadRecord` if strict).

  dpo: whether examples are preference pairs ("chosen" / "rejected") rather than SFT examples ("sft").
  shared: pairs also as one shared-prompt example ("shared": ids, mask, positions, branches).
  """

  def __init__(self, cfg: LoaderConfig, model_cfg: LlavaConfig, tokenizer, *, dpo: bool = False,
               shared: bool = False, stop: Stop | None = None):
    self.cfg = cfg
    self.dpo = dpo
    self.shared = shared
    self.stop = stop or Stop()
    self.tokenizer = tokenizer
    self.template = templates.TEMPLATES[cfg.template]
    self.prompts = prompts.get_preset(cfg.prompts)
    self.proc = ImageProcessorConfig.for_model(model_cfg)
    self.image_token_id = model_cfg.image_token_index

  def __call__(self, element: tuple[str, bytes]):
    where, raw = element
    if self.stop.stopped:
      return Skipped(where, "not read: the data was stopped")
    try:
      return self.encode(where, raw)
    except RECORD_ERRORS as e:
      skipped = self._skipped(element, e)
      if self.cfg.strict:
        raise BadRecord(skipped.reason) from e
      if not self.stop.stopped:
        log.warning("skipping record %s", skipped.reason)
      return skipped

  def try_encode(self, element: tuple[str, bytes]):
    """The example or `Skipped`, without logging or raising (the start-up probe in `make_dataset`)."""
    try:
      return self.encode(*element)
    except RECORD_ERRORS as e:
      return self._skipped(element, e)

  def _skipped(self, element: tuple[str, bytes], e: Exception) -> Skipped:
    where, raw = element
    reason = str(e) if where in str(e) else f"{where}: {e}"
    return Skipped(where, reason, llava_format.format_hint(raw, self.cfg.format))

  def encode(self, where: str, raw: bytes) -> dict[str, Any]:
    llava = self.cfg.format == "llava"
    rec = llava_format.loads(raw, where) if llava else records.loads(raw, where)
    images = getattr(rec, "images", ())
    if len(images) > self.cfg.images_per_row:
      raise BadRecord(f"{where} (id={rec.id!r}): {len(images)} images, more than images_per_row="
                      f"{self.cfg.images_per_row}")
    tiles, sizes, counts = [], [], []
    for ref in images:
      try:
        data = ref.read(self.cfg.image_root)
      except FileNotFoundError as e:
        raise BadRecord(f"{where} (id={rec.id!r}): image not found: {e.filename}") from e
      t, (h, w) = preprocess(decode(data, f"{where} (id={rec.id!r})"), self.proc)
      tiles.append(t)
      sizes.append((h, w))
      counts.append(self.proc.num_image_tokens(h, w))
    out: dict[str, Any] = {"tiles": tiles, "sizes": sizes}
    pair = isinstance(rec, (records.DPOPair, llava_format.Preference))
    if pair != self.dpo:
      raise BadRecord(f"{where} (id={rec.id!r}): " + (
          "a preference pair is not an SFT example (train pairs with configs/dpo.py)" if pair else
          "not a preference pair: DPO trains on dpo_pair records, or LLaVA DPO JSON (prompt, chosen, rejected)"))
    if pair:
      for side in ("chosen", "rejected"):
        msgs = rec.messages_for(side) if llava else self.prompts.messages("reasoning", rec.prompt, getattr(rec, side))
        out[side] = self._tokenize(msgs, counts, where, rec.id)
      if self.shared:
        try:
          out["shared"] = shared_pairs.share_prompt(out["chosen"], out["rejected"], max_len=self.cfg.max_len,
                                                    min_target_tokens=self.cfg.min_target_tokens,
                                                    image_token_id=self.image_token_id)
        except ValueError as e:
          raise BadRecord(f"{where} (id={rec.id!r}): {e}") from e
      if getattr(rec, "ref_chosen_logp", None) is not None:
        out["ref_logps"] = np.asarray([rec.ref_chosen_logp, rec.ref_rejected_logp], np.float32)
      return out
    msgs = list(rec.messages) if llava else self._messages(rec, where)
    out["sft"] = self._tokenize(msgs, counts, where, rec.id)
    return out

  def _messages(self, rec: records.Record, where: str) -> list[dict]:
    p = self.prompts
    if self.cfg.target == "cot":
      if not isinstance(rec, records.SummarySFT) or not rec.reasoning:
        raise BadRecord(f"{where} (id={rec.id!r}): target='cot' needs summary_sft records with a chain")
      return p.messages("cot", rec.question, rec.reasoning, answer=rec.answer)
    if isinstance(rec, records.ReasoningSFT):
      return p.messages("reasoning", rec.question, rec.reasoning)
    if isinstance(rec, records.SummarySFT):
      judgement = None if rec.chain_quality == "none" else ("flawed" if rec.chain_quality == "wrong" else "sound")
      return p.messages("summary", rec.question, rec.reasoning, answer=rec.answer, judgement=judgement)
    if isinstance(rec, records.Question):
      return p.messages("direct", prompts.format_question(rec.question, rec.choices), answer=rec.answer)
    raise BadRecord(f"{where} (id={rec.id!r}): a {rec.KIND!r} record is not a training example")

  def _tokenize(self, msgs, counts, where, rid) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = prompts.encode(self.tokenizer, self.template, msgs, image_token_id=self.image_token_id,
                               image_token_counts=counts)
    limit = self.cfg.max_len
    if len(ids) > limit:
      first_target = int(np.argmax(mask)) if mask.any() else len(ids)
      if first_target + self.cfg.min_target_tokens > limit:
        raise BadRecord(f"{where} (id={rid!r}): over-long: {len(ids)} tokens, prompt alone {first_target}, "
                        f"max_len={limit}")
      ids, mask = ids[:limit], mask[:limit]
    check_image_tokens(ids, counts, self.image_token_id, f"{where} (id={rid!r})")
    if not mask.any():
      raise BadRecord(f"{where} (id={rid!r}): no trainable tokens")
    return ids, mask
