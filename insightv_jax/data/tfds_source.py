"""A TFDS dataset of our records, built and read without TensorFlow (ArrayRecord file format).

    builder_dir = prepare_tfds(data_dir, {"train": "train.jsonl", "val": "val.jsonl"}, image_root="root/")
    source = sources.open_source("tfds", builder_dir, split="train")   # a TfdsRecordSource, Grain-ready

Each example stores the record JSON (with its image reference removed) and the image's encoded bytes
(TFDS's Image feature needs TensorFlow to encode, so bytes are kept as they are and decoded by the
loader with Pillow). A record may hold at most one image here.

The builder stays in this module (Grain worker processes import it by name); training opens a prepared
builder folder through `insightv_jax.data.sources.open_source("tfds", ...)`, which imports this module (and
TensorFlow Datasets) only then.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds

from insightv_jax.data import records


class InsightvRecords(tfds.core.GeneratorBasedBuilder):
  """Records of any kind (question, path, SFT, DPO) from JSONL splits, images embedded as bytes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Records schema v1; one encoded image per example."}

  def __init__(self, *, splits: dict[str, str] | None = None, image_root: str | None = None, **kwargs):
    self._splits = splits or {}
    self._image_root = image_root
    super().__init__(file_format="array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "record": tfds.features.Text(),
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._splits:
      raise ValueError("InsightvRecords needs splits={'train': 'path.jsonl', ...} to prepare")
    return {name: self._generate_examples(path) for name, path in self._splits.items()}

  def _generate_examples(self, path):
    for rec in records.read_jsonl(path):
      images = getattr(rec, "images", ())
      if len(images) > 1:
        raise records.RecordError(f"{path} (id={rec.id!r}): field 'images': the TFDS source holds one image")
      image = images[0].read(self._image_root) if images else b""
      bare = dataclasses.replace(rec, images=()) if images else rec
      yield rec.id, {"id": rec.id, "record": bare.dumps(), "image": image}


def prepare_tfds(data_dir: str, splits: dict[str, str], image_root: str | None = None) -> str:
  """Builds the dataset under data_dir; returns the builder directory to read from."""
  builder = InsightvRecords(splits=splits, image_root=image_root, data_dir=data_dir)
  builder.download_and_prepare()
  return str(builder.data_dir)


class TfdsRecordSource:
  """Grain random-access source over a prepared builder dir; elements are (where, record JSON bytes)."""

  def __init__(self, builder_dir: str, split: str):
    self.builder_dir, self.split = builder_dir, split
    self._src = tfds.builder_from_directory(builder_dir).as_data_source(split=split)

  def __len__(self):
    return len(self._src)

  def __getitem__(self, i):
    ex = self._src[i]
    rec = json.loads(ex["record"])
    image = ex["image"]
    if image:
      rec["images"] = [records.ImageRef(data=bytes(image)).to_json()]
    return f"tfds:{self.split}[{i}]", json.dumps(rec).encode()

  def __repr__(self):
    return f"TfdsRecordSource({self.builder_dir!r}, {self.split!r})"
