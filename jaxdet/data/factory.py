"""Builds the data sources named by ``config.data`` (benchmark, COCO JSON, TFDS, WIDER FACE).

Missing data is an error that names the config key to set and the command
that prepares the dataset.

* ``benchmark``: the embedded benchmark (``jaxdet.data.benchmark``); with
  ``config.data.benchmark_subset='all'`` its five classes, with ``'faces'`` its face-only split
  ``{split}_faces.json`` (one category, ``face``: a WIDER-FACE-like toy set for face experiments).
* ``coco_json``: a COCO-format annotation JSON and image folder per split.
* ``tfds``: a prepared TFDS dataset (``coco/2017``, ``voc/2007``, ``wider_face`` ...).
* ``wider_face``: the official WIDER FACE release (Yang et al., CVPR 2016) unzipped in
  ``config.data.wider_face_root`` (``WIDER_LAYOUT``), read by ``jaxdet.data.wider_face``.
"""
from __future__ import annotations

import os

SOURCES = ("benchmark", "coco_json", "tfds", "wider_face")
BENCHMARK_SUBSETS = ("all", "faces")
WIDER_LAYOUT = ("wider_face_split/wider_face_{split}_bbx_gt.txt", "WIDER_{split}/images/")
_WIDER_HOW = (
    "Download WIDER_train.zip, WIDER_val.zip and wider_face_split.zip from the official WIDER FACE "
    "site (http://shuoyang1213.me/WIDERFACE/) and unzip them into that folder, or prepare TFDS "
    "instead: `tfds build wider_face --data_dir=DIR` and run with --config.data.source=tfds "
    "--config.data.tfds_name=wider_face --config.data.tfds_data_dir=DIR.")


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
    subset = data_cfg.get("benchmark_subset", "all")
    if subset not in BENCHMARK_SUBSETS:
      raise ValueError(f"config.data.benchmark_subset={subset!r}: valid subsets are "
                       f"{BENCHMARK_SUBSETS} ('faces': the face-only split, one category).")
    paths = benchmark.ensure_benchmark(data_cfg.benchmark_root or None)
    from jaxdet.data.coco_json import CocoJsonSource
    json_key = f"{split}_faces_json" if subset == "faces" else f"{split}_json"
    return CocoJsonSource(paths[json_key], paths[f"{split}_images"])
  if kind == "wider_face":
    from jaxdet.data.wider_face import WiderFaceSource
    annotation_file, image_dir = wider_face_paths(data_cfg.get("wider_face_root", ""), split)
    return WiderFaceSource(annotation_file, image_dir, drop_invalid=True,
                           skip_bad_images=data_cfg.skip_bad_images)
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
      raise ValueError("config.data.tfds_name is empty: set it, e.g. 'coco/2017', 'voc/2007' or "
                       "'wider_face'.")
    split_name = data_cfg.tfds_train_split if split == "train" else data_cfg.tfds_val_split
    return TfdsSource(data_cfg.tfds_name, split_name, data_dir=data_cfg.tfds_data_dir or None)
  raise ValueError(f"config.data.source={kind!r}: valid sources are {SOURCES}.")


def wider_face_paths(root: str, split: str) -> tuple[str, str]:
  """``(annotation file, image folder)`` of ``split`` in an unzipped official WIDER FACE release
  (``WIDER_LAYOUT``); errors name ``config.data.wider_face_root``, the layout and where to get
  it."""
  rel_ann, rel_img = (p.format(split=split) for p in WIDER_LAYOUT)
  layout = (f"expected {rel_ann} and {rel_img} (the official release unzipped: "
            f"{WIDER_LAYOUT[0].format(split='{train,val}')}, "
            f"{WIDER_LAYOUT[1].format(split='{train,val}')})")
  if not root:
    raise ValueError(f"config.data.wider_face_root is empty: set it to the folder of the official "
                     f"WIDER FACE release ({layout}). {_WIDER_HOW}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"config.data.wider_face_root={root!r} is not a folder: {layout}. "
                            f"{_WIDER_HOW}")
  ann, images = os.path.join(root, rel_ann), os.path.join(root, rel_img.rstrip("/"))
  missing = [rel for rel, path in ((rel_ann, ann), (rel_img, images)) if not os.path.exists(path)]
  if missing:
    raise FileNotFoundError(f"config.data.wider_face_root={root!r} lacks {' and '.join(missing)}: "
                            f"{layout}. {_WIDER_HOW}")
  return ann, images


class Subset:
  """The first ``n`` examples of a source (``config.eval.max_images``), or those at ``indices``.

  ``coco`` (if any) is the whole source's ground truth: evaluate with ``image_ids``. Examples
  (instance ``masks`` included) are the source's; ``has_masks`` is forwarded (a source that lacks
  the attribute has no masks: test with ``getattr(source, 'has_masks', False)``).
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
                 "min_box_size", "has_masks"):
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
