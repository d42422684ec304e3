"""TFDS detection datasets (coco/2017, voc/2007, voc/2012, wider_face) as a ``DetectionSource``.

Reads prepared ArrayRecord data with ``builder.as_data_source(split)`` (random access, no
TensorFlow needed). ``tensorflow_datasets`` is optional (``pip install jaxdet[tfds]``) and only
imported when a ``TfdsSource`` is made. ``example_from_tfds`` is the pure feature mapping:

* ``bbox`` normalised ``[ymin, xmin, ymax, xmax]`` -> absolute ``xyxy`` (``x = xmin * W`` ...);
* voc: TFDS' builder (``tensorflow_datasets/object_detection/voc.py``, ``_get_example_objects``,
  lines 109-118 in tensorflow-datasets 4.9.10, builder version 5.0.0) stores the XML ``bndbox``
  (``xmin = float(bndbox.find("xmin").text)`` ...) as ``tfds.features.BBox(ymin / height,
  xmin / width, ymax / height, xmax / width)``: the 1-based *inclusive* pixel indices divided by
  the image size, nothing subtracted. Scaled back they are ``[xmin, ymin, xmax, ymax]``, one pixel narrower than
  the devkit's box (``xmax - xmin + 1`` wide) and shifted by one pixel, so they become jaxdet's
  continuous box of those pixels, ``x1 = xmin_n * W - 1``, ``y1 = ymin_n * H - 1``,
  ``x2 = xmax_n * W``, ``y2 = ymax_n * H`` (``jaxdet.evaluation.voc.xyxy_from_voc_pixels``): the
  box a VOC COCO JSON ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` gives through
  ``CocoJsonSource``, scored with the devkit's IoU by ``evaluate_voc_from_coco`` (to ~1e-4 px: the
  normalised coordinates are float32). Class names must be ``VOC_CLASSES`` (TFDS' order, the
  standard one);
* ``objects/label`` (coco, voc) -> contiguous class; wider_face ``faces`` -> class 0 ``face``
  (faces flagged ``invalid`` are dropped);
* coco ``objects/is_crowd`` and voc ``objects/is_difficult`` -> ``is_crowd`` (ignored by COCOeval,
  like "difficult" in the VOC protocol; dropped from training examples when ``drop_crowd``);
* image id: ``image/id`` if present, else the record index, else a CRC32 of ``image/filename``;
* boxes are cleaned by the rule of ``CocoJsonSource`` (``coco_json.clean_boxes``: degenerate
  boxes, ``w`` or ``h < min_box_size``, and boxes outside the image dropped, boxes reaching outside
  clipped), with a slack of ``TFDS_BOX_TOL`` px for the float32 normalised coordinates. Training
  examples (``source[i]``) and the evaluation ground truth (``coco_from_source(source)``, built
  from ``source.annotation(i)``) thus hold the same objects; crowd / difficult objects stay flagged.

Counting what was dropped needs one pass over the split: ``TfdsSource.stats`` (and
``annotation_summary``, ``image_ids``, ``jaxdet.data.report.source_report``) read every record once
with the image left undecoded (``tfds.decode.SkipDecoding``; only the image header is parsed for
its size), then keep the cleaned annotations in memory (about 25 bytes per object), so the
evaluation ground truth and later reports reuse that pass. The cost is one read of the split's
ArrayRecord files (image bytes included): seconds for VOC, on the order of a minute or more for
COCO train (118k images, ~19 GB), bounded by disk throughput.

COCO labels map back to the official 80 category ids, so results can also be scored against the
official JSON; other datasets use ``label + 1``. Evaluate with
``jaxdet.evaluation.coco.coco_from_source(source)``. Feeds the VOC / COCO / WIDER FACE experiments
(AP-loss, Chen et al. §4.1.2; consistent optimization, Kong et al. §6; ALWA, Yu et al. §4.1;
MTGAN §4.1).
"""
from __future__ import annotations

import zlib

import numpy as np

from jaxdet.data.coco_json import clean_boxes
from jaxdet.data.records import DetectionExample
from jaxdet.evaluation.voc import xyxy_from_voc_pixels

COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)
assert len(COCO_CATEGORY_IDS) == 80

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor")

SUPPORTED = ("coco", "voc", "wider_face")
TFDS_BOX_TOL = 1e-3  # px: slack of the size / clipping tests for normalised float32 boxes
COUNTERS = ("boxes_dropped_degenerate", "boxes_dropped_outside", "boxes_clipped",
            "boxes_dropped_invalid")
_INSTALL = "tensorflow_datasets is not installed; TFDS sources need it: pip install jaxdet[tfds]"


def _family(dataset_name: str) -> str:
  base = dataset_name.split("/")[0].split(":")[0]
  if base not in SUPPORTED:
    raise ValueError(f"dataset_name '{dataset_name}' is not a supported TFDS detection dataset; "
                     f"use one of {SUPPORTED} (e.g. 'coco/2017', 'voc/2007', 'wider_face').")
  return base


def _text(v) -> str:
  if isinstance(v, np.ndarray):
    v = v.item()
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def example_from_tfds(features: dict, dataset_name: str, *, index: int | None = None,
                      with_image: bool = True, min_box_size: float | None = 1.0,
                      counts: dict | None = None) -> DetectionExample:
  """Maps one TFDS feature dict to a ``DetectionExample`` (all kept objects; crowd / difficult
  flagged).

  ``with_image=False`` builds an annotation-only record: ``features['image']`` may then be raw
  bytes (``tfds.decode.SkipDecoding``) and ``height`` / ``width`` are read from the image header.
  ``min_box_size``: box cleaning as in the module docstring (None: no cleaning). ``counts``: if
  given, a dict whose ``COUNTERS`` entries are incremented by what this record dropped / clipped
  (wider_face ``invalid`` faces are ``boxes_dropped_invalid``).
  """
  family = _family(dataset_name)
  filename = _text(features.get("image/filename", ""))
  image = features["image"]
  if with_image:
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
      raise ValueError(f"{dataset_name} record {index} ({filename}): 'image' must be uint8 "
                       f"[H, W, 3 or 1], got {image.dtype} {image.shape}")
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    h, w = image.shape[:2]
  else:
    h, w = _image_hw(image)
    image = None
  objects = features["faces"] if family == "wider_face" else features["objects"]
  bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
  n = len(bbox)
  if family == "wider_face":
    labels = np.zeros((n,), np.int32)
    crowd = np.zeros((n,), bool)
    valid = ~np.asarray(objects.get("invalid", np.zeros((n,), bool)), bool).reshape(-1)
  else:
    labels = np.asarray(objects["label"], np.int32).reshape(-1)
    key = "is_crowd" if family == "coco" else "is_difficult"
    crowd = np.asarray(objects.get(key, np.zeros((n,), bool)), bool).reshape(-1)
    valid = np.ones((n,), bool)
  if not (len(labels) == len(crowd) == len(valid) == n):
    raise ValueError(f"{dataset_name} record {index} ({filename}): object fields have different lengths")
  b = bbox.astype(np.float64)
  boxes = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1)
  if family == "voc":  # 1-based inclusive pixel indices -> continuous box (module docstring)
    boxes = xyxy_from_voc_pixels(boxes)
  if counts is not None:
    counts["boxes_dropped_invalid"] = counts.get("boxes_dropped_invalid", 0) + int((~valid).sum())
  if min_box_size is not None:
    cl = clean_boxes(boxes[valid], w, h, min_box_size, tol=TFDS_BOX_TOL)
    if counts is not None:
      for key, mask in (("boxes_dropped_degenerate", cl.degenerate),
                        ("boxes_dropped_outside", cl.outside), ("boxes_clipped", cl.clipped)):
        counts[key] = counts.get(key, 0) + int(mask.sum())
    boxes[valid] = cl.boxes
    valid[valid] = cl.keep
  if "image/id" in features:
    image_id = int(np.asarray(features["image/id"]).item())
  elif index is not None:
    image_id = int(index)
  else:
    image_id = zlib.crc32(filename.encode("utf-8")) & 0x7FFFFFFF
  return DetectionExample(image=image, boxes=boxes[valid], classes=labels[valid], image_id=image_id,
                          file_name=filename, is_crowd=crowd[valid], height=h, width=w)


def _image_hw(image) -> tuple[int, int]:
  if isinstance(image, np.ndarray) and image.dtype != object and image.ndim >= 2:
    return int(image.shape[0]), int(image.shape[1])
  import io

  from PIL import Image

  data = image.item() if isinstance(image, np.ndarray) else image
  with Image.open(io.BytesIO(data)) as img:
    return int(img.height), int(img.width)


def _concat(parts, shape, dtype) -> np.ndarray:
  return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # noqa: PLC0415
  except ImportError as e:
    raise ImportError(_INSTALL) from e
  return tfds


class TfdsSource:
  """A prepared TFDS detection split as a ``DetectionSource``.

  Args:
    name: 'coco/2017', 'voc/2007', 'voc/2012', 'wider_face' (a version suffix is fine).
    split: TFDS split, e.g. 'train', 'validation', 'test', 'train[:1000]'.
    data_dir: TFDS data dir (default: TFDS' own, ``~/tensorflow_datasets``).
    drop_crowd: drop crowd (coco) / difficult (voc) objects from training examples.
    min_box_size: box cleaning threshold in pixels (module docstring), for training examples and
      the evaluation ground truth alike.

  ``stats``, ``annotation_summary()`` and ``image_ids`` make one annotation pass over the split the
  first time any of them is used (module docstring); ``annotation(i)`` then answers from memory.
  """

  def __init__(self, name: str, split: str, data_dir=None, *, drop_crowd: bool = True,
               min_box_size: float = 1.0):
    self.family = _family(name)
    self.name, self.split, self.data_dir, self.drop_crowd = name, split, data_dir, bool(drop_crowd)
    self.min_box_size = float(min_box_size)
    self.has_masks = False  # boxes only (COCO's TFDS features carry no segmentations)
    tfds = _import_tfds()
    self._tfds = tfds
    builder = tfds.builder(name, data_dir=data_dir)
    self._builder = builder
    prepare = (f"tfds build {name} --data_dir={data_dir or '~/tensorflow_datasets'} "
               "--file_format=array_record")
    if not builder.is_prepared():
      raise FileNotFoundError(f"TFDS dataset '{name}' is not prepared in "
                              f"'{data_dir or 'the default TFDS data_dir'}'. Prepare it with: {prepare}")
    try:
      self._ds = builder.as_data_source(split)
    except NotImplementedError as e:
      raise ValueError(f"TFDS dataset '{name}' is prepared, but not as ArrayRecord (needed for random "
                       f"access). Rebuild it with: {prepare}") from e
    except (ValueError, KeyError) as e:  # unknown split / bad slice
      raise ValueError(f"TFDS dataset '{name}' cannot read split '{split}': {e}") from e
    if self.family == "wider_face":
      self.class_names = ["face"]
    else:
      self.class_names = list(builder.info.features["objects"]["label"].names)
    self.num_classes = len(self.class_names)
    if self.family == "voc" and tuple(self.class_names) != VOC_CLASSES:
      raise ValueError(f"TFDS dataset '{name}' in '{data_dir or 'the default TFDS data_dir'}' has "
                       f"the classes {self.class_names}, not the 20 VOC classes in the standard "
                       f"order {list(VOC_CLASSES)}; rebuild it with: {prepare}")
    if self.family == "coco":
      if self.num_classes != 80:
        raise ValueError(f"{name}: expected the 80 COCO detection classes, got {self.num_classes}")
      self.category_ids = list(COCO_CATEGORY_IDS)
    else:
      self.category_ids = list(range(1, self.num_classes + 1))
    self._ann_ds = None
    self._scan = None

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> DetectionExample:
    ex = example_from_tfds(self._ds[index], self.name, index=index, min_box_size=self.min_box_size)
    return ex.without_crowd() if self.drop_crowd else ex

  def _read_annotation(self, index: int, counts: dict | None = None) -> DetectionExample:
    if self._ann_ds is None:
      self._ann_ds = self._builder.as_data_source(
          self.split, decoders={"image": self._tfds.decode.SkipDecoding()})
    return example_from_tfds(self._ann_ds[index], self.name, index=index, with_image=False,
                             min_box_size=self.min_box_size, counts=counts)

  def _scanned(self) -> dict:
    """The one annotation pass: cleaned objects of every record, concatenated, and the counters."""
    if self._scan is None:
      counts = dict.fromkeys(COUNTERS, 0)
      ids, names, hw, boxes, classes, crowd, ends = [], [], [], [], [], [], []
      n = 0
      for i in range(len(self)):
        ex = self._read_annotation(i, counts)
        ids.append(ex.image_id)
        names.append(ex.file_name)
        hw.append((ex.height, ex.width))
        boxes.append(ex.boxes)
        classes.append(ex.classes)
        crowd.append(ex.is_crowd)
        n += ex.num_objects
        ends.append(n)
      crowd_all = _concat(crowd, (0,), bool)
      per_image_crowd = np.asarray([int(c.sum()) for c in crowd], np.int64)
      per_image_total = np.asarray([len(c) for c in crowd], np.int64)
      stats = {"images": len(ids), "boxes_kept": n, "crowd": int(crowd_all.sum()),
               "images_without_objects": int((per_image_total - per_image_crowd == 0).sum()),
               **counts}
      stats["annotations"] = (n + stats["boxes_dropped_degenerate"]
                              + stats["boxes_dropped_outside"] + stats["boxes_dropped_invalid"])
      self._scan = {"image_ids": ids, "file_names": names, "hw": hw,
                    "boxes": _concat(boxes, (0, 4), np.float32),
                    "classes": _concat(classes, (0,), np.int32),
                    "crowd": crowd_all, "ends": ends, "objects": per_image_total - per_image_crowd,
                    "per_image_crowd": per_image_crowd, "stats": stats}
    return self._scan

  def annotation(self, index: int) -> DetectionExample:
    """Record ``index`` without decoding its image (all kept objects, crowd / difficult flagged)."""
    if self._scan is None:
      return self._read_annotation(index)
    sc = self._scan
    index = range(len(self))[index]
    a, b = (sc["ends"][index - 1] if index else 0), sc["ends"][index]
    h, w = sc["hw"][index]
    return DetectionExample(image=None, boxes=sc["boxes"][a:b], classes=sc["classes"][a:b],
                            image_id=sc["image_ids"][index], file_name=sc["file_names"][index],
                            is_crowd=sc["crowd"][a:b], height=h, width=w)

  @property
  def stats(self) -> dict:
    """Counters as in ``CocoJsonSource.stats`` (one annotation pass the first time)."""
    return dict(self._scanned()["stats"])

  def annotation_summary(self) -> dict:
    """Per-image object counts, as ``CocoJsonSource.annotation_summary`` (one annotation pass)."""
    sc = self._scanned()
    return {"image_ids": list(sc["image_ids"]), "file_names": list(sc["file_names"]),
            "objects": sc["objects"].copy(), "crowd": sc["per_image_crowd"].copy()}

  @property
  def image_ids(self) -> list[int]:
    """Image ids of all records (one annotation pass over the split the first time)."""
    return self._scanned()["image_ids"]

  def __repr__(self) -> str:
    return f"TfdsSource('{self.name}', '{self.split}', images={len(self)}, classes={self.num_classes})"
