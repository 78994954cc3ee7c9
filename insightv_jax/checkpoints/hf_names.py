"""The one table between our parameter paths and llava-hf tensor names, with their transforms.

Our path (from `nnx.to_flat_state`)                        llava-hf name (transformers v5 on-disk layout)
('vision_tower','layers','layers',[i],'fc1','kernel')    vision_tower.encoder.layers.{i}.mlp.fc1.weight   (T)
('vision_tower','patch_embedding','kernel')              vision_tower.embeddings.patch_embedding.weight   (conv)
('language_model','layers','layers',[i],...,'kernel')    language_model.model.layers.{i}....weight        (T)
('language_model','lm_head','kernel')                    language_model.lm_head.weight                    (T)
... norms: 'scale' <-> 'weight'; embeddings: 'embedding' <-> 'weight'.

Stacked (scanned) layers have no index in our path; they expand to one HF name per layer.
Transforms: "T" = 2-D transpose (ours [in, out], torch [out, in]); "conv" = ours [c*p*p, d] vs torch's
conv kernel [d, c, p, p]. Other checkpoint spellings (transformers v4 `vision_tower.vision_model.*`,
in-memory `model.*` names) are mapped to the canonical one by `canonical_name`.

A layout that spells names differently on disk (the original LLaVA-NeXT layout, `llava_original.py`) is a
`Naming`: prefix renames between its names and these canonical ones; the llava-hf layout is `HF_NAMING`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

_PREFIXES: list[tuple[tuple[str, ...], str]] = [
    (("vision_tower", "layers", "layers"), "vision_tower.encoder.layers.{i}"),
    (("language_model", "layers", "layers"), "language_model.model.layers.{i}"),
    (("language_model", "embed_tokens"), "language_model.model.embed_tokens"),
    (("language_model", "norm"), "language_model.model.norm"),
    (("language_model", "lm_head"), "language_model.lm_head"),
    (("vision_tower", "patch_embedding"), "vision_tower.embeddings.patch_embedding"),
    (("vision_tower", "class_embedding"), "vision_tower.embeddings.class_embedding"),
    (("vision_tower", "position_embedding"), "vision_tower.embeddings.position_embedding.weight"),
    (("vision_tower",), "vision_tower"),
    (("multi_modal_projector",), "multi_modal_projector"),
    (("image_newline",), "image_newline"),
]
_MIDDLE = {"fc1": "mlp.fc1", "fc2": "mlp.fc2"}  # vision blocks keep their MLP under `mlp.`
_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}

# Alternative spellings found in real checkpoints -> canonical names.
_ALIASES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^model\.vision_tower\."), "vision_tower."),
    (re.compile(r"^vision_tower\.vision_model\."), "vision_tower."),
    (re.compile(r"^model\.language_model\."), "language_model.model."),
    (re.compile(r"^model\.multi_modal_projector\."), "multi_modal_projector."),
    (re.compile(r"^model\.image_newline$"), "image_newline"),
    (re.compile(r"^lm_head\."), "language_model.lm_head."),
]

# Tensors a checkpoint may hold that LLaVA-NeXT never uses: SigLIP's pooling head, and buffers older transformers
# saved with the weights (rotary inverse frequencies, CLIP's position_ids arange).
IGNORABLE = re.compile(r"^vision_tower\.head\.|\.rotary_emb\.inv_freq$|^vision_tower\.embeddings\.position_ids$")


def canonical_name(name: str) -> str:
  for pat, repl in _ALIASES:
    name = pat.sub(repl, name)
  return name


@dataclasses.dataclass(frozen=True)
class Naming:
  """How one checkpoint layout spells tensor names: prefix renames (on-disk prefix, canonical prefix).

  The first rename whose prefix matches applies, in either direction; then `canonical_name` maps the
  alternative llava-hf spellings. With no renames, the on-disk names are the canonical ones.
  """

  renames: tuple[tuple[str, str], ...] = ()

  def to_canonical(self, disk_name: str) -> str:
    for disk, canonical in self.renames:
      if disk_name.startswith(disk):
        disk_name = canonical + disk_name[len(disk):]
        break
    return canonical_name(disk_name)

  def to_disk(self, canonical: str) -> str:
    if not self.renames:
      return canonical
    for disk, prefix in self.renames:
      if canonical.startswith(prefix):
        return disk + canonical[len(prefix):]
    raise KeyError(f"tensor {canonical!r} has no name in this layout (no rename matches it)")


HF_NAMING = Naming()


def hf_name(path: Sequence[str | int]) -> tuple[str, str | None]:
  """Our flat-state path -> (HF name, with '{i}' where a stacked layer index goes; transform)."""
  path = tuple(path)
  for prefix, hf_prefix in _PREFIXES:
    if path[:len(prefix)] != prefix:
      continue
    rest = list(path[len(prefix):])
    if "{i}" in hf_prefix and rest and isinstance(rest[0], int):
      hf_prefix = hf_prefix.replace("{i}", str(rest.pop(0)))
    if not rest:  # the prefix names the leaf itself
      return hf_prefix, None
    leaf = rest.pop()
    parts = [_MIDDLE.get(r, r) if prefix[0] == "vision_tower" else r for r in map(str, rest)]
    name = ".".join([hf_prefix, *parts, _LEAF[leaf]])
    if leaf != "kernel":
      return name, None
    return name, "conv" if prefix == ("vision_tower", "patch_embedding") else "T"
  raise KeyError(f"parameter {'/'.join(map(str, path))} has no llava-hf name; add it to "
                 "insightv_jax/checkpoints/hf_names.py")


def to_ours(x: np.ndarray, transform: str | None, our_shape: tuple[int, ...]) -> np.ndarray:
  """A view of an HF tensor in our layout (no copy for memmaps)."""
  if transform == "T":
    return x.T
  if transform == "conv":
    return x.reshape(x.shape[0], -1).T
  return x.reshape(our_shape)


def to_hf(x: np.ndarray, transform: str | None, hf_shape: tuple[int, ...]) -> np.ndarray:
  if transform == "T":
    return x.T
  if transform == "conv":
    return x.T.reshape(hf_shape)
  return x.reshape(hf_shape)


def hf_shape(our_shape: tuple[int, ...], transform: str | None, cfg) -> tuple[int, ...]:
  if transform == "T":
    return tuple(reversed(our_shape))
  if transform == "conv":
    v = cfg.vision
    return (our_shape[1], v.num_channels, v.patch_size, v.patch_size)
  return our_shape
