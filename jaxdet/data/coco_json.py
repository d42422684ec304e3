"""COCO-format detection source: any dataset described by a COCO ``instances`` JSON file.

Reads the annotation file once, validates it (errors name the file, the image / annotation id and
the field at fault), converts ``[x, y, w, h]`` to absolute ``xyxy`` (``x2 = x + w``, no "+1"),
maps category ids to contiguous classes ``0..C-1`` (sorted by id) and decodes images lazily with
PIL (``convert('RGB')``, so grayscale / palette / RGBA files are fine).

Box cleaning (``clean_boxes``), one rule for training examples *and* the evaluation ground truth
``.coco`` (so a box that is not a training target cannot lower AP either):

* a box with ``w < min_box_size`` or ``h < min_box_size`` (default 1 px; negative sizes included)
  is *degenerate* and dropped;
* a box reaching outside the image is clipped to it; if what is left is degenerate (e.g. it lay
  entirely outside) it is dropped as *outside*;
* crowd objects (``iscrowd=1``) go through the same rule and stay flagged: left out of training
  examples by default (``drop_crowd``), kept in ``.coco`` as ``iscrowd=1`` (ignored by COCOeval).

Every case is counted in ``.stats``, over the kept images (after ``skip_bad_images``):
``annotations`` (all annotations of those images) = ``boxes_kept`` + ``boxes_dropped_degenerate``
+ ``boxes_dropped_outside``; ``crowd`` counts the kept crowd objects (part of ``boxes_kept``);
``boxes_clipped`` the kept boxes that were clipped; ``images_without_objects`` the images without a
kept non-crowd object. ``jaxdet.data.report.source_report`` summarises a source from these. Images
without objects are kept. No paper equation here: this feeds the COCO experiments of AP-loss
(Chen et al. §4.1.2), consistent optimization (Kong et al. §6), ALWA (Yu et al. §4.1) and MTGAN
(§4.1).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import io
import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from jaxdet.data.records import DetectionExample

_HINT = ("Hint: pass the path of a COCO-format JSON file (e.g. annotations/instances_val2017.json), "
         "or build the embedded benchmark with `python -m jaxdet.data.benchmark`.")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Decodes an image file to ``uint8 [H, W, 3]`` RGB (raises OSError / ValueError on failure)."""
  with Image.open(path) as img:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _xyxy(bbox) -> list[float]:
  x, y, w, h = (float(v) for v in bbox)
  return [x, y, x + w, y + h]


class BoxCleaning(NamedTuple):
  """Result of ``clean_boxes`` for ``n`` input boxes (masks are ``bool [n]``)."""

  boxes: np.ndarray  # float64 [n, 4] xyxy clipped to the image (meaningful where ``keep``)
  keep: np.ndarray
  degenerate: np.ndarray
  outside: np.ndarray
  clipped: np.ndarray  # kept boxes that were clipped


def clean_boxes(boxes, width, height, min_box_size: float = 1.0, *, wh=None,
                tol: float = 0.0) -> BoxCleaning:
  """The box-cleaning rule shared by every source (see the module docstring).

  Args:
    boxes: ``[n, 4]`` absolute ``xyxy``.
    width, height: image size, scalars or ``[n]`` (one per box).
    min_box_size: boxes (before and after clipping) narrower or lower than this are dropped.
    wh: optional ``[n, 2]`` annotated widths / heights used for the degenerate test instead of
      ``x2 - x1`` / ``y2 - y1`` (COCO ``bbox[2:]``, exact without float rounding).
    tol: slack in pixels for boxes that went through a lossy conversion (TFDS' normalised float32
      coordinates): the size tests use ``min_box_size - tol`` and a coordinate only counts as
      clipped if it moved by more than ``tol``.
  """
  b = np.asarray(boxes, np.float64).reshape(-1, 4)
  wh = b[:, 2:] - b[:, :2] if wh is None else np.asarray(wh, np.float64).reshape(-1, 2)
  m = float(min_box_size) - float(tol)
  w_img = np.broadcast_to(np.asarray(width, np.float64), (len(b),))
  h_img = np.broadcast_to(np.asarray(height, np.float64), (len(b),))
  lim = np.stack([w_img, h_img, w_img, h_img], axis=1)
  c = np.minimum(np.maximum(b, 0.0), lim)
  degenerate = (wh[:, 0] < m) | (wh[:, 1] < m)
  outside = ~degenerate & (((c[:, 2] - c[:, 0]) < m) | ((c[:, 3] - c[:, 1]) < m))
  keep = ~degenerate & ~outside
  clipped = keep & (np.abs(c - b) > tol).any(axis=1)
  return BoxCleaning(c, keep, degenerate, outside, clipped)


def read_annotated_image(path, height: int, width: int, *, where: str, size_name: str,
                         skip_bad_images: bool, on_skip) -> np.ndarray | None:
  """Decodes ``path`` and checks it has the annotated ``height x width``.

  On failure: raises an OSError naming the file and ``where`` (the record) with the
  ``--config.data.skip_bad_images=True`` hint, or, when skipping, calls ``on_skip()``, warns and
  returns None (the caller substitutes a black image without objects).
  """
  try:
    image = read_rgb(path)
    if image.shape[:2] != (height, width):
      raise ValueError(f"decoded size {image.shape[1]}x{image.shape[0]} differs from the "
                       f"{size_name} size {width}x{height}")
    return image
  except Exception as e:  # noqa: BLE001
    msg = f"Cannot read image '{path}' ({where}): {type(e).__name__}: {e}"
    if not skip_bad_images:
      raise OSError(msg + ". Hint: fix or remove the file, or rerun with "
                    "--config.data.skip_bad_images=True to skip unreadable images.") from e
    on_skip()
    warnings.warn(msg + "; using a black image without objects instead.", RuntimeWarning)
    return None


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _segmentation_problem(seg, height, width) -> str | None:
  """Why ``seg`` is not a COCO segmentation of an ``height x width`` image (None if it is one).

  Polygons: a non-empty list of flat lists of >= 6 (an even number of) finite numbers (shorter
  or odd-length ones are removed before by ``_usable_polygons``). RLE: a dict with
  ``size == [height, width]`` and ``counts`` a string (compressed) or a list (uncompressed).
  """
  if isinstance(seg, list):
    if not seg:
      return "is an empty polygon list"
    for k, poly in enumerate(seg):
      if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
        return (f"polygon #{k} must be a flat list of an even number (>= 6) of coordinates "
                f"[x1, y1, x2, y2, x3, y3, ...], got {poly!r:.60}")
      try:  # C-speed check of every coordinate (COCO train has ~40M of them)
        ok = math.isfinite(math.fsum(poly))
      except (TypeError, ValueError, OverflowError):
        ok = False
      if not ok:
        return f"polygon #{k} must hold finite numbers, got {poly!r:.60}"
    return None
  if isinstance(seg, dict):
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(map(_is_int, size))):
      return f"RLE 'size' must be [height, width], got {size!r}"
    if size != [int(height), int(width)]:
      return f"RLE 'size' {size} differs from the image size [{height}, {width}] (h, w)"
    if not isinstance(counts, (str, list)) or not counts:
      return f"RLE 'counts' must be a non-empty string or list, got {type(counts).__name__}"
    return None
  return (f"must be a polygon list [[x1, y1, x2, y2, ...], ...] or an RLE dict "
          f"{{'size': [h, w], 'counts': ...}}, got {type(seg).__name__}")


def _usable_polygons(seg: list) -> list:
  """The polygons of a polygon-list segmentation that can be rasterised: flat lists of >= 6
  coordinates, an even number (detectron2's ``load_coco_json`` drops the others likewise)."""
  return [p for p in seg if not isinstance(p, list) or (len(p) >= 6 and len(p) % 2 == 0)]


class CocoJsonSource:
  """A ``DetectionSource`` over a COCO-format annotation file and an image directory.

  Args:
    annotation_file: COCO JSON with ``images``, ``annotations`` (may be absent: no objects)
      and ``categories``.
    image_dir: directory that ``images[*].file_name`` is relative to.
    skip_bad_images: if True, every image is checked once here (exists, has a readable header
      with the annotated size); bad ones are left out, counted in ``stats['bad_images_skipped']``
      and the count is printed. An image that still fails to decode later is replaced by a black
      image without objects (counted in ``stats['bad_images_at_read']``, with a warning).
      If False, an unreadable image raises an error naming the file when it is read.
      ``skipped_files`` lists the ``file_name`` of the skipped images.
    drop_crowd: drop ``iscrowd=1`` objects from training examples (they stay in ``.coco``).
    min_box_size: boxes narrower or lower than this (pixels) are dropped as degenerate, from the
      training examples and from ``.coco`` alike.

  Instance masks: each annotation's ``segmentation`` (COCO polygons or RLE, validated here) goes
  into ``DetectionExample.masks`` of ``source[i]`` and ``annotation(i)``, one per kept object in
  the order of ``boxes``. Box-only files are normal (VOC converters write ``"segmentation": []``):
  a missing, ``null`` or empty segmentation means "no mask", and so does one whose polygons are
  all unusable (< 6 coordinates or an odd number: such polygons are removed, counted in
  ``polygons_dropped``). ``has_masks`` is True when every annotation has a mask (also when the file
  has no annotations); otherwise ``masks`` is None for every example and ``masks_missing`` counts
  the annotations without one (a Mask R-CNN loader then refuses the source rather than train on
  a partial set). A segmentation of the wrong type or with non-finite numbers is an error.
  ``.coco`` keeps the segmentations, so ``COCOeval(iouType='segm')`` works on it.
  """

  def __init__(self, annotation_file, image_dir, *, skip_bad_images: bool = False,
               drop_crowd: bool = True, min_box_size: float = 1.0):
    self.annotation_file = Path(annotation_file)
    self.image_dir = Path(image_dir)
    self.drop_crowd = bool(drop_crowd)
    self.skip_bad_images = bool(skip_bad_images)
    self.min_box_size = float(min_box_size)
    if not self.annotation_file.is_file():
      raise FileNotFoundError(f"COCO annotation file not found: '{self.annotation_file}'. {_HINT}")
    if not self.image_dir.is_dir():
      raise FileNotFoundError(
          f"Image directory not found: '{self.image_dir}' (images of '{self.annotation_file}'). "
          "Hint: pass the folder that the 'file_name' entries of the JSON are relative to.")
    try:
      with open(self.annotation_file, "rb") as f:
        data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{self.annotation_file}: not valid JSON ({e}).") from e
    self._lock = threading.Lock()
    self.skipped_files: list[str] = []
    self.stats = {
        "images": 0, "annotations": 0, "boxes_kept": 0, "boxes_clipped": 0,
        "boxes_dropped_degenerate": 0, "boxes_dropped_outside": 0, "crowd": 0,
        "images_without_objects": 0, "bad_images_skipped": 0, "bad_images_at_read": 0,
    }
    self._parse(data)
    if self.skip_bad_images:
      self._drop_bad_images()
    self._update_stats()

  def _update_stats(self) -> None:
    st = self.stats
    for key, per_image in self._counts.items():
      st[key] = int(per_image.sum())
    st["images"] = len(self._images)
    st["crowd"] = int(sum(int(c.sum()) for c in self._crowd))
    st["boxes_kept"] = int(sum(len(c) for c in self._crowd))
    st["images_without_objects"] = int(sum(int(not (~c).any()) for c in self._crowd))

  # ------------------------------------------------------------------ parsing / validation
  def _err(self, what: str) -> ValueError:
    return ValueError(f"Malformed COCO annotation file '{self.annotation_file}': {what}")

  def _parse(self, data) -> None:
    if not isinstance(data, dict):
      raise self._err("top level must be a JSON object with 'images', 'annotations', 'categories'.")
    for key in ("images", "categories"):
      if not isinstance(data.get(key), list):
        raise self._err(f"missing or non-list top-level field '{key}'.")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
      raise self._err("top-level field 'annotations' must be a list.")

    cats = {}
    for k, c in enumerate(data["categories"]):
      if not isinstance(c, dict) or not _is_int(c.get("id")):
        raise self._err(f"category #{k}: field 'id' must be an integer, got {c!r}.")
      if c["id"] in cats:
        raise self._err(f"category id={c['id']}: duplicate id.")
      cats[c["id"]] = str(c.get("name", c["id"]))
    if not cats:
      raise self._err("'categories' is empty; at least one category is needed.")
    self.category_ids = sorted(cats)
    self.class_names = [cats[i] for i in self.category_ids]
    self.num_classes = len(self.category_ids)
    cat_to_class = {cid: k for k, cid in enumerate(self.category_ids)}

    images, index_of = [], {}
    for k, im in enumerate(data["images"]):
      iid = im.get("id") if isinstance(im, dict) else None
      if not _is_int(iid):
        raise self._err(f"image #{k}: field 'id' must be an integer, got {im!r}.")
      for field in ("width", "height"):
        if not _is_number(im.get(field)) or im[field] <= 0:
          raise self._err(f"image id={iid}: field '{field}' must be a positive number, "
                          f"got {im.get(field)!r}.")
      if not isinstance(im.get("file_name"), str) or not im["file_name"]:
        raise self._err(f"image id={iid}: field 'file_name' must be a non-empty string.")
      if iid in index_of:
        raise self._err(f"image id={iid}: duplicate image id.")
      index_of[iid] = len(images)
      images.append(im)

    ann_img, ann_bbox, ann_cls, ann_crowd = [], [], [], []
    self.masks_missing = self.polygons_dropped = 0
    for k, a in enumerate(anns):
      if not isinstance(a, dict):
        raise self._err(f"annotation #{k}: must be an object, got {a!r}.")
      aid = a.get("id", f"#{k}")
      iid = a.get("image_id")
      where = f"annotation id={aid} (image id={iid})"
      if not _is_int(iid) or iid not in index_of:
        raise self._err(f"{where}: field 'image_id' does not name an image of 'images'.")
      if a.get("category_id") not in cat_to_class:
        raise self._err(f"{where}: field 'category_id'={a.get('category_id')!r} is not in "
                        f"'categories' (ids {self.category_ids[:10]}...).")
      bbox = a.get("bbox")
      if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise self._err(f"{where}: field 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}.")
      crowd = a.get("iscrowd", 0)
      if crowd not in (0, 1, True, False):
        raise self._err(f"{where}: field 'iscrowd' must be 0 or 1, got {crowd!r}.")
      seg = a.get("segmentation")
      if isinstance(seg, list) and seg:
        usable = _usable_polygons(seg)
        if len(usable) < len(seg):
          self.polygons_dropped += len(seg) - len(usable)
          a["segmentation"] = seg = usable
      if seg is None or (isinstance(seg, list) and not seg):
        self.masks_missing += 1
      else:
        im = images[index_of[iid]]
        problem = _segmentation_problem(seg, im["height"], im["width"])
        if problem is not None:
          raise self._err(f"{where}: field 'segmentation' {problem}. Hint: COCO instance masks "
                          "are polygons [[x1, y1, x2, y2, ...], ...] or RLE {'size': [h, w], "
                          "'counts': ...} in image pixels; drop the field if there is no mask.")
      ann_img.append(index_of[iid])
      ann_bbox.append(bbox)
      ann_cls.append(cat_to_class[a["category_id"]])
      ann_crowd.append(bool(crowd))

    self._data = data
    self._images = images
    self.has_masks = self.masks_missing == 0
    n_img = len(images)
    ann_img = np.asarray(ann_img, np.int64)
    xywh = np.asarray(ann_bbox, np.float64).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    size = np.asarray([(float(im["width"]), float(im["height"])) for im in images],
                      np.float64).reshape(-1, 2)[ann_img]
    cl = clean_boxes(xyxy, size[:, 0], size[:, 1], self.min_box_size, wh=xywh[:, 2:])
    ann_crowd = np.asarray(ann_crowd, bool)
    # Per-image counts (re-indexed when bad images are skipped; ``.stats`` sums them).
    self._counts = {
        "annotations": np.bincount(ann_img, minlength=n_img),
        "boxes_dropped_degenerate": np.bincount(ann_img[cl.degenerate], minlength=n_img),
        "boxes_dropped_outside": np.bincount(ann_img[cl.outside], minlength=n_img),
        "boxes_clipped": np.bincount(ann_img[cl.clipped], minlength=n_img),
    }
    kept = np.flatnonzero(cl.keep)
    kept = kept[np.argsort(ann_img[kept], kind="stable")]  # by image, file order within one
    ends = np.cumsum(np.bincount(ann_img[kept], minlength=n_img)).tolist()
    bounds = list(zip([0] + ends[:-1], ends))

    def split(values):  # one array per image
      return [values[a:b] for a, b in bounds]

    self._boxes = split(cl.boxes[kept].astype(np.float32).reshape(-1, 4))
    self._classes = split(np.asarray(ann_cls, np.int32)[kept])
    self._crowd = split(ann_crowd[kept])
    self._ann_index = split(kept)  # index into data['annotations'] of each kept box
    self._clipped = split(cl.clipped[kept])

  def _check_image(self, k: int) -> str | None:
    im = self._images[k]
    path = self.image_dir / im["file_name"]
    try:
      with Image.open(path) as img:
        size = img.size
        img.verify()
    except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
      return f"{path}: {type(e).__name__}: {e}"
    if size != (int(im["width"]), int(im["height"])):
      return f"{path}: size {size[0]}x{size[1]} but annotated {im['width']}x{im['height']}"
    return None

  def _drop_bad_images(self) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      problems = list(pool.map(self._check_image, range(len(self._images))))
    bad = [k for k, p in enumerate(problems) if p is not None]
    if not bad:
      return
    keep = [k for k, p in enumerate(problems) if p is None]
    self.skipped_files = [self._images[k]["file_name"] for k in bad]
    self._images = [self._images[k] for k in keep]
    self._boxes = [self._boxes[k] for k in keep]
    self._classes = [self._classes[k] for k in keep]
    self._crowd = [self._crowd[k] for k in keep]
    self._ann_index = [self._ann_index[k] for k in keep]
    self._clipped = [self._clipped[k] for k in keep]
    self._counts = {key: v[keep] for key, v in self._counts.items()}
    self.stats["bad_images_skipped"] = len(bad)
    print(f"CocoJsonSource({self.annotation_file.name}): skipped {len(bad)} unreadable image(s) "
          f"of {len(problems)}; first: {problems[bad[0]]}")

  # ------------------------------------------------------------------ DetectionSource API
  def __len__(self) -> int:
    return len(self._images)

  @property
  def image_ids(self) -> list[int]:
    return [int(im["id"]) for im in self._images]

  def image_path(self, index: int) -> Path:
    return self.image_dir / self._images[index]["file_name"]

  def annotation_summary(self) -> dict:
    """Per-image object counts without decoding anything (``jaxdet.data.report`` uses it).

    ``image_ids``, ``file_names`` (lists), ``objects`` / ``crowd`` (int arrays: kept non-crowd
    and kept crowd objects of each image, in source order).
    """
    crowd = np.asarray([int(c.sum()) for c in self._crowd], np.int64)
    total = np.asarray([len(c) for c in self._crowd], np.int64)
    return {"image_ids": self.image_ids, "file_names": [im["file_name"] for im in self._images],
            "objects": total - crowd, "crowd": crowd}

  def segmentations(self, index: int) -> list | None:
    """The ``segmentation`` of each kept object of image ``index`` (None without ``has_masks``)."""
    if not self.has_masks:
      return None
    anns = self._data["annotations"]
    return [anns[k]["segmentation"] for k in self._ann_index[index].tolist()]

  def annotation(self, index: int) -> DetectionExample:
    """Example ``index`` without decoding the image (all objects, crowd flagged)."""
    im = self._images[index]
    return DetectionExample(
        image=None, boxes=self._boxes[index], classes=self._classes[index], image_id=im["id"],
        file_name=im["file_name"], is_crowd=self._crowd[index],
        height=int(im["height"]), width=int(im["width"]), masks=self.segmentations(index))

  def _count_bad_read(self) -> None:
    with self._lock:
      self.stats["bad_images_at_read"] += 1

  def __getitem__(self, index: int) -> DetectionExample:
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} images")
    ann = self.annotation(index)
    image = read_annotated_image(
        self.image_path(index), ann.height, ann.width, size_name="annotated",
        where=f"image id={ann.image_id} of '{self.annotation_file}'",
        skip_bad_images=self.skip_bad_images, on_skip=self._count_bad_read)
    if image is None:
      image = np.zeros((ann.height, ann.width, 3), np.uint8)
      ann = DetectionExample(None, np.zeros((0, 4)), np.zeros((0,)), ann.image_id, ann.file_name,
                             height=ann.height, width=ann.width,
                             masks=[] if self.has_masks else None)
    ex = DetectionExample(image=image, boxes=ann.boxes, classes=ann.classes, image_id=ann.image_id,
                          file_name=ann.file_name, is_crowd=ann.is_crowd, masks=ann.masks)
    return ex.without_crowd() if self.drop_crowd else ex

  # ------------------------------------------------------------------ evaluation ground truth
  @functools.cached_property
  def coco(self):
    """pycocotools ``COCO`` ground truth of the kept images and the kept (cleaned) boxes, built
    once, silently.

    Exactly the objects of ``annotation(i)`` (module docstring: degenerate / outside boxes left
    out, boxes clipped to the image, crowd objects kept as ``iscrowd=1``); every other field of an
    annotation (``id``, ``segmentation``, ...) is kept. ``bbox`` is the cleaned box; ``area`` is
    the file's value unless the box was clipped or the field is missing (then ``w*h`` of the
    cleaned box); missing ``iscrowd`` / ``id`` are filled (0, running number) so that ``COCOeval``
    works.
    """
    from pycocotools.coco import COCO

    src_anns = self._data.get("annotations", [])
    anns = []
    for im, crowd, index, clipped in zip(self._images, self._crowd, self._ann_index, self._clipped):
      w_img, h_img = float(im["width"]), float(im["height"])
      for is_crowd, k, was_clipped in zip(crowd.tolist(), index.tolist(), clipped.tolist()):
        a = dict(src_anns[k])
        if was_clipped:  # the rule of ``clean_boxes``, in float64 like there
          x1, y1, x2, y2 = _xyxy(a["bbox"])
          x1, x2 = min(max(x1, 0.0), w_img), min(max(x2, 0.0), w_img)
          y1, y2 = min(max(y1, 0.0), h_img), min(max(y2, 0.0), h_img)
          a["bbox"] = [x1, y1, x2 - x1, y2 - y1]
          a["area"] = (x2 - x1) * (y2 - y1)
        a["iscrowd"] = int(is_crowd)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
        a.setdefault("id", k + 1)
        anns.append(a)
    dataset = {"images": [dict(im) for im in self._images], "annotations": anns,
               "categories": [dict(c) for c in self._data["categories"]]}
    for key in ("info", "licenses"):
      if key in self._data:
        dataset[key] = self._data[key]
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
      gt.createIndex()
    return gt

  def __repr__(self) -> str:
    return (f"CocoJsonSource('{self.annotation_file}', images={len(self)}, "
            f"classes={self.num_classes}, stats={self.stats})")
