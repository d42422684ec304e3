"""Builds the data sources named by ``config.data`` (benchmark, COCO JSON, TFDS).

Missing data is an error that names the config key to set and the command
that prepares the dataset.
"""
from __future__ import annotations

import os

SOURCES = ("benchmark", "coco_json", "tfds")


def _require_file(path: str, key: str, what: str) -> None:
  if not path:
    raise ValueError(f"config.data.{key} is empty: set it to the {what} "
                     f"(or use config.data.source='benchmark' for the embedded benchmark).")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"config.data.{key}={path!r} does not exist: point it at the {what}. "
        f"For COCO, download train2017/val2017 and annotations_trainval2017 from cocodataset.org, "
        f"or use config.data.source='tfds' after `tfds build coco/2017 --data_dir=DIR`.")


def make_source(data_cfg, split: str):
  """Returns a DetectionSource for split 'train' or 'val'."""
  if split not in ("train", "val"):
    raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
  kind = data_cfg.source
  if kind == "benchmark":
    from jaxdet.data import benchmark
    paths = benchmark.ensure_benchmark(data_cfg.benchmark_root or None)
    from jaxdet.data.coco_json import CocoJsonSource
    return CocoJsonSource(paths[f"{split}_json"], paths[f"{split}_images"])
  if kind == "coco_json":
    from jaxdet.data.coco_json import CocoJsonSource
    json_key, img_key = f"{split}_json", f"{split}_images"
    _require_file(data_cfg[json_key], json_key, f"COCO-format annotation JSON of the {split} split")
    _require_file(data_cfg[img_key], img_key, f"image folder of the {split} split")
    return CocoJsonSource(data_cfg[json_key], data_cfg[img_key],
                          skip_bad_images=data_cfg.skip_bad_images)
  if kind == "tfds":
    from jaxdet.data.tfds_source import TfdsSource
    if not data_cfg.tfds_name:
      raise ValueError("config.data.tfds_name is empty: set it, e.g. 'coco/2017' or 'voc/2007'.")
    split_name = data_cfg.tfds_train_split if split == "train" else data_cfg.tfds_val_split
    return TfdsSource(data_cfg.tfds_name, split_name, data_dir=data_cfg.tfds_data_dir or None)
  raise ValueError(f"config.data.source={kind!r}: valid sources are {SOURCES}.")


class Subset:
  """The first ``n`` examples of a source (``config.eval.max_images``), or those at ``indices``.

  ``coco`` (if any) is the whole source's ground truth: evaluate with ``image_ids``.
  ``annotation(i)`` is forwarded when the source has it, so ``coco_from_source`` and
  ``jaxdet.data.report.source_report`` read the subset without decoding images; the report of a
  subset has no drop counters (they belong to the whole source: report the source itself).
  """

  def __init__(self, source, n: int | None = None, *, indices=None):
    if (n is None) == (indices is None):
      raise ValueError("Subset takes either n or indices.")
    self.source = source
    self.indices = (list(range(min(int(n), len(source)))) if indices is None
                    else [int(i) for i in indices])
    self.n = len(self.indices)
    for attr in ("num_classes", "class_names", "category_ids", "coco", "drop_crowd",
                 "min_box_size"):
      if hasattr(source, attr):
        setattr(self, attr, getattr(source, attr))
    if hasattr(source, "annotation"):
      self.annotation = self._annotation
    ids = list(source.image_ids)
    self.image_ids = [ids[i] for i in self.indices]

  def _annotation(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source.annotation(self.indices[i])

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[self.indices[i]]
