"""Builds the data sources named by ``config.data`` (benchmark, COCO JSON, TFDS, WIDER FACE).

Missing data is an error that names the config key to set and the command
that prepares the dataset.

* ``benchmark``: the embedded benchmark (``jaxdet.data.benchmark``); with
  ``config.data.benchmark_subset='all'`` its five classes, with ``'faces'`` its face-only split
  ``{split}_faces.json`` (one category, ``face``: a WIDER-FACE-like toy set for face experiments).
* ``coco_json``: a COCO-format annotation JSON and image folder per split.
* ``tfds``: prepared TFDS datasets (``coco/2017``, ``voc/2007``, ``wider_face`` ...):
  ``config.data.tfds_train_split`` / ``tfds_val_split`` is a TFDS split of ``config.data.tfds_name``
  (``'train+validation'``), or a ``+``-joined list of ``NAME/SPLIT`` terms naming the datasets too
  (``tfds_split_parts``), e.g. VOC07+12 trainval:
  ``'voc/2007/train+voc/2007/validation+voc/2012/train+voc/2012/validation'``. Several datasets
  are read as one ``Concat`` source (same classes required; image ids renumbered).
* ``wider_face``: the official WIDER FACE release (Yang et al., CVPR 2016) unzipped in
  ``config.data.wider_face_root`` (``WIDER_LAYOUT``), read by ``jaxdet.data.wider_face``.
"""
from __future__ import annotations

import bisect
import dataclasses
import os

import numpy as np

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
    key = "tfds_train_split" if split == "train" else "tfds_val_split"
    parts = tfds_split_parts(data_cfg[key], data_cfg.tfds_name, key=f"config.data.{key}")
    sources = []
    for name, part in parts:
      try:
        sources.append(TfdsSource(name, part, data_dir=data_cfg.tfds_data_dir or None))
      except ValueError as e:
        raise ValueError(f"config.data.{key}={data_cfg[key]!r} (config.data.tfds_name="
                         f"{data_cfg.tfds_name!r}): {e}") from e
    if len(sources) == 1:
      return sources[0]
    return Concat(sources, [f"{name}/{part}" for name, part in parts])
  raise ValueError(f"config.data.source={kind!r}: valid sources are {SOURCES}.")


def tfds_split_parts(spec: str, default_name: str, *, key: str = "split") -> list[tuple[str, str]]:
  """``(dataset, TFDS split)`` pairs named by a TFDS split spec.

  * a TFDS split of ``default_name`` (``'train'``, ``'train+validation'``, ``'train[:10%]'``):
    ``[(default_name, spec)]``;
  * ``+``-joined ``NAME/SPLIT`` terms (the dataset named in every term, the split after the last
    ``/``): one pair per dataset in order of first appearance, its splits joined by ``+``, e.g.
    ``'voc/2007/train+voc/2007/validation+voc/2012/train'`` ->
    ``[('voc/2007', 'train+validation'), ('voc/2012', 'train')]``.

  TFDS split names and slices hold no ``/``; bare and ``NAME/SPLIT`` terms do not mix (a bare term
  after ``voc/2012/train`` could mean either dataset). ``key`` names the config key in errors.
  """
  example = ("e.g. 'train+validation' (splits of config.data.tfds_name) or "
             "'voc/2007/train+voc/2007/validation+voc/2012/train+voc/2012/validation'")
  terms = [t.strip() for t in str(spec).split("+")]
  if not spec or any(not t for t in terms):
    raise ValueError(f"{key}={spec!r} has an empty split term; {example}.")
  qualified = ["/" in t for t in terms]
  if not any(qualified):
    return [(default_name, "+".join(terms))]
  if not all(qualified):
    bare = [t for t, q in zip(terms, qualified) if not q]
    raise ValueError(f"{key}={spec!r} mixes bare splits {bare} with NAME/SPLIT terms; name the "
                     f"dataset in every term ({example}).")
  grouped: dict[str, list[str]] = {}
  for t in terms:
    name, _, part = t.rpartition("/")
    if not name or not part:
      raise ValueError(f"{key}={spec!r}: term {t!r} is not NAME/SPLIT; {example}.")
    grouped.setdefault(name, []).append(part)
  return [(name, "+".join(parts)) for name, parts in grouped.items()]


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


class Concat:
  """Several sources with the same classes read as one (e.g. TFDS ``voc/2007`` and ``voc/2012``
  trainval, ``tfds_split_parts``).

  Record ``i`` is record ``i - offset[k]`` of part ``k``, with ``image_id = i``: the parts' own ids
  may collide (TFDS VOC numbers the records of every split from 0), so ``image_ids`` is
  ``range(len(self))`` and ``file_name`` keeps the original file. ``annotation(i)`` is forwarded
  when every part has it; ``stats`` adds up the parts' counters; ``annotation_summary()`` joins
  the parts' (``jaxdet.data.report``). ``names`` label the parts in errors.
  """

  def __init__(self, sources, names):
    self.sources, self.names = list(sources), [str(n) for n in names]
    if not self.sources or len(self.sources) != len(self.names):
      raise ValueError(f"Concat needs one name per source and at least one source; got "
                       f"{len(self.sources)} sources and {len(self.names)} names.")
    first = self.sources[0]
    for src, name in zip(self.sources[1:], self.names[1:]):
      for attr in ("class_names", "category_ids"):
        if list(getattr(src, attr)) != list(getattr(first, attr)):
          raise ValueError(f"cannot read {self.names[0]} and {name} as one dataset: their {attr} "
                           f"differ ({list(getattr(first, attr))} vs {list(getattr(src, attr))}); "
                           "concatenate only datasets with the same classes in the same order.")
    for attr in ("num_classes", "class_names", "category_ids", "drop_crowd", "min_box_size",
                 "has_masks"):
      if hasattr(first, attr):
        setattr(self, attr, getattr(first, attr))
    self._offsets = [0]
    for src in self.sources:
      self._offsets.append(self._offsets[-1] + len(src))
    if all(hasattr(src, "annotation") for src in self.sources):
      self.annotation = self._annotation

  def __len__(self) -> int:
    return self._offsets[-1]

  def _locate(self, i: int) -> tuple[int, int]:
    if not 0 <= i < len(self):
      raise IndexError(i)
    k = bisect.bisect_right(self._offsets, i) - 1
    return k, i - self._offsets[k]

  def __getitem__(self, i):
    k, j = self._locate(int(i))
    return dataclasses.replace(self.sources[k][j], image_id=int(i))

  def _annotation(self, i):
    k, j = self._locate(int(i))
    return dataclasses.replace(self.sources[k].annotation(j), image_id=int(i))

  @property
  def image_ids(self) -> list[int]:
    return list(range(len(self)))

  @property
  def stats(self) -> dict:
    total: dict = {}
    for src in self.sources:
      for key, value in dict(getattr(src, "stats", None) or {}).items():
        if isinstance(value, (int, float)):
          total[key] = total.get(key, 0) + value
    return total

  def annotation_summary(self) -> dict:
    ids, names, objects, crowd = list(range(len(self))), [], [], []
    for src in self.sources:
      if hasattr(src, "annotation_summary"):
        s = src.annotation_summary()
        names += list(s["file_names"])
        objects.append(np.asarray(s["objects"], np.int64))
        crowd.append(np.asarray(s["crowd"], np.int64))
        continue
      get = getattr(src, "annotation", None) or src.__getitem__
      exs = [get(j) for j in range(len(src))]
      names += [ex.file_name for ex in exs]
      c = np.asarray([int(np.asarray(ex.is_crowd, bool).sum()) for ex in exs], np.int64)
      crowd.append(c)
      objects.append(np.asarray([ex.num_objects for ex in exs], np.int64) - c)
    return {"image_ids": ids, "file_names": names,
            "objects": np.concatenate(objects) if objects else np.zeros(0, np.int64),
            "crowd": np.concatenate(crowd) if crowd else np.zeros(0, np.int64)}

  def __repr__(self) -> str:
    return f"Concat({self.names}, images={len(self)})"
