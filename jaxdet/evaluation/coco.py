"""COCO box and mask evaluation (pycocotools ``COCOeval``, iouType 'bbox' or 'segm').

AP is the mean over IoU thresholds 0.50:0.05:0.95 and over categories of the 101-point
interpolated precision (AP, AP50, AP75, APs/APm/APl as reported by AP-loss, Chen et al. §4.1.2;
consistent optimization, Kong et al. §6; ALWA, Yu et al. §4.1; MTGAN §4.1). Detections arrive as padded arrays (static shapes from the jitted NMS) in
*original* image pixels, ``xyxy`` with contiguous classes, and leave as COCO result dicts
(``xywh``, original category ids). ``coco_from_source`` turns any ``DetectionSource`` (e.g. a TFDS
dataset) into an in-memory pycocotools ground truth (with the objects' segmentations when the
source has instance masks). Mask AP (Mask R-CNN, He et al. 2017, §4 "AP (averaged over IoU
thresholds)" on masks) is the same protocol with mask IoU: ``evaluate_coco(..., iou_type="segm")``
on results carrying COCO RLE ``segmentation``s (:mod:`jaxdet.evaluation.segm`).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from typing import Sequence

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")


def detections_to_coco(image_ids, boxes, scores, classes, num_valid, category_ids) -> list[dict]:
  """Padded detections -> COCO result dicts.

  Args:
    image_ids: ``[n]`` dataset image ids; rows with a negative id (eval padding) are skipped.
    boxes: ``[n, D, 4]`` xyxy in original image pixels.
    scores: ``[n, D]``.
    classes: ``[n, D]`` contiguous class indices ``0..C-1``.
    num_valid: ``[n]`` number of valid detections per image (the first ``num_valid[i]`` rows).
    category_ids: contiguous class -> dataset category id (``source.category_ids``).
  Returns:
    ``[{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}, ...]`` with Python scalars.
  """
  image_ids = np.asarray(image_ids).reshape(-1)
  boxes = np.asarray(boxes, np.float64)
  scores = np.asarray(scores, np.float64)
  classes = np.asarray(classes)
  num_valid = np.asarray(num_valid).reshape(-1)
  cat = np.asarray(category_ids)
  n = len(image_ids)
  if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
    raise ValueError(f"boxes must be [n={n}, D, 4], got {boxes.shape}")
  if scores.shape != boxes.shape[:2] or classes.shape != boxes.shape[:2] or num_valid.shape != (n,):
    raise ValueError(f"scores / classes must be [n, D] = {boxes.shape[:2]} and num_valid [n], got "
                     f"{scores.shape}, {classes.shape}, {num_valid.shape}")
  results = []
  for i in range(n):
    if image_ids[i] < 0:
      continue
    k = int(min(max(num_valid[i], 0), boxes.shape[1]))
    if k == 0:
      continue
    c = classes[i, :k].astype(np.int64)
    if c.min() < 0 or c.max() >= len(cat):
      raise ValueError(f"classes of image id={int(image_ids[i])} must lie in [0, {len(cat)}) "
                       f"(len(category_ids)), got {c.min()}..{c.max()}")
    b = boxes[i, :k]
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    for j in range(k):
      results.append({"image_id": int(image_ids[i]), "category_id": int(cat[c[j]]),
                      "bbox": [float(v) for v in xywh[j]], "score": float(scores[i, j])})
  return results


def _check_segm(coco_gt, results: list[dict], image_ids) -> list[dict]:
  """Checks for ``iou_type='segm'``; returns the results without ``bbox`` (see evaluate_coco)."""
  for r in results:
    seg = r.get("segmentation")
    if not (isinstance(seg, dict) and "size" in seg and "counts" in seg):
      raise ValueError(
          f"iou_type='segm' needs a COCO RLE 'segmentation' ({{'size': [h, w], 'counts': ...}}, "
          f"e.g. jaxdet.evaluation.segm.encode_masks) in every result; result {_describe(r)} has "
          f"{'none' if seg is None else type(seg).__name__}")
    img = coco_gt.imgs.get(int(r["image_id"]), {})
    if "height" in img and [int(v) for v in seg["size"]] != [int(img["height"]), int(img["width"])]:
      raise ValueError(f"the segmentation of result {_describe(r)} is {list(seg['size'])} (h, w) but "
                       f"image {r['image_id']} is {img['height']} x {img['width']}: paste masks into "
                       "the original image size")
  wanted = None if image_ids is None else set(image_ids)
  missing = [a["id"] for a in coco_gt.dataset.get("annotations", [])
             if "segmentation" not in a and (wanted is None or a["image_id"] in wanted)]
  if missing:
    raise ValueError(f"iou_type='segm' needs ground-truth segmentations: {len(missing)} annotations "
                     f"have none (first ids: {missing[:5]}); the source has no instance masks?")
  # As detectron2's COCOEvaluator: without 'bbox', loadRes takes each result's area from its mask,
  # so APs/APm/APl of masks use mask areas (with a 'bbox' it would use the box area).
  return [{k: v for k, v in r.items() if k != "bbox"} for r in results]


def _describe(result: dict) -> str:
  return f"(image_id={result.get('image_id')}, category_id={result.get('category_id')})"


COCO_BACKENDS = ("pycocotools", "faster_coco_eval")


def _cocoeval(backend: str, coco_gt, results: list[dict], iou_type: str):
  """(COCOeval-like evaluator, its detections) of ``backend`` for the in-memory ground truth.

  ``faster_coco_eval`` (``pip install 'jaxdet[fast-eval]'``) is pycocotools' algorithm in C++
  (same matching, interpolation and area ranges: the same numbers, tested on the fixtures;
  ~6x faster on 200 images with 40k detections); it needs its own ``COCO`` built from the same
  dataset dict."""
  if backend == "pycocotools":
    from pycocotools.cocoeval import COCOeval
    coco_dt = coco_gt.loadRes(results)
    return COCOeval(coco_gt, coco_dt, iouType=iou_type)
  try:
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster
  except ImportError:
    raise ImportError("config.eval.coco_backend='faster_coco_eval' needs the faster-coco-eval "
                      "package: pip install 'jaxdet[fast-eval]' (or use 'pycocotools').") from None
  gt = FastCOCO(copy.deepcopy(coco_gt.dataset))
  return COCOeval_faster(gt, gt.loadRes(results), iouType=iou_type,
                         print_function=lambda *args, **kwargs: None)


def evaluate_coco(coco_gt, results: Sequence[dict], *, result_file=None, image_ids=None,
                  max_images: int = 0, print_summary: bool = False,
                  iou_type: str = "bbox", backend: str = "pycocotools") -> dict[str, float]:
  """Runs COCOeval and returns ``{'AP','AP50','AP75','APs','APm','APl'}`` in [0, 1].

  Args:
    coco_gt: pycocotools ``COCO`` ground truth (``source.coco`` or ``coco_from_source``).
    results: COCO result dicts (``detections_to_coco``; for masks with a ``segmentation``, e.g.
      ``jaxdet.evaluation.segm.attach_segmentations``).
    result_file: if given, the results are also written there as JSON.
    image_ids: evaluate only these images (default: every image of ``coco_gt``).
    max_images: if > 0, evaluate only the first ``max_images`` of those images (ground-truth
      order), e.g. for a quick evaluation on part of the split; 0 = all.
    print_summary: print pycocotools' 12-line summary (otherwise its output is swallowed).
    iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU, Mask R-CNN mask AP). ``"segm"`` needs
      a COCO RLE ``segmentation`` (original image size) in every result and ground-truth
      ``segmentation``s (ValueError otherwise); a result's ``bbox`` is ignored for it, so that
      the area ranges of APs/APm/APl use the mask area of the detections (detectron2's rule).
    backend: ``"pycocotools"`` or ``"faster_coco_eval"`` (the same metrics, faster; see
      ``_cocoeval``).
  Empty results give 0.0 everywhere. A metric that is undefined because the ground truth has no
  object in that size range (pycocotools' -1) is returned as NaN.
  """
  if iou_type not in IOU_TYPES:
    raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
  if backend not in COCO_BACKENDS:
    raise ValueError(f"config.eval.coco_backend={backend!r}: use one of {COCO_BACKENDS}")
  results = list(results)
  if result_file is not None:
    os.makedirs(os.path.dirname(os.path.abspath(result_file)), exist_ok=True)
    with open(result_file, "w") as f:
      json.dump(results, f)
  gt_ids = set(coco_gt.getImgIds())
  unknown = sorted({int(r["image_id"]) for r in results} - gt_ids)
  if unknown:
    raise ValueError(f"{len(unknown)} result image ids are not in the ground truth (first: {unknown[:5]}); "
                     "pass detections of the images of this dataset only.")
  if image_ids is None and max_images > 0:
    image_ids = [int(im["id"]) for im in coco_gt.dataset["images"]]
  if image_ids is not None:
    image_ids = [int(i) for i in image_ids]
    image_ids = sorted(image_ids[:max_images] if max_images > 0 else image_ids)
  if iou_type == "segm":
    results = _check_segm(coco_gt, results, image_ids)
  if not results:
    return {k: 0.0 for k in METRIC_NAMES}
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    # loadRes adds keys in place: give it copies
    ev = _cocoeval(backend, coco_gt, [dict(r) for r in results], iou_type)
    if image_ids is not None:
      ev.params.imgIds = image_ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  if print_summary:
    print("\n".join(line for line in buf.getvalue().splitlines() if line.startswith(" Average")))
  return {k: (float(v) if v >= 0 else math.nan) for k, v in zip(METRIC_NAMES, ev.stats[:6])}


def coco_from_source(source):
  """An in-memory pycocotools ``COCO`` ground truth for any ``DetectionSource``.

  Uses ``source.annotation(i)`` when the source has it (no image decoding; every object the
  source kept after its box cleaning, crowd / difficult flagged ``iscrowd=1``), else ``source[i]``;
  so the ground truth holds the same objects as the training examples. Boxes become ``xywh``,
  ``area = w*h``, categories the source's ``category_ids`` / ``class_names``. When an example has
  instance masks (``ex.masks``: one COCO segmentation per object, polygons or RLE, in original
  image pixels; absent or None otherwise) each annotation also gets its ``segmentation`` (an
  object whose entry is None gets none), so ``evaluate_coco(..., iou_type="segm")`` works on any
  source with masks. ``area`` stays the box area for both (bbox results do not change with masks;
  COCO's own annotation files give the mask area instead, which only moves objects between the
  APs/APm/APl ranges).
  """
  from pycocotools.coco import COCO

  get = getattr(source, "annotation", None) or source.__getitem__
  images, anns = [], []
  cat_ids = [int(c) for c in source.category_ids]
  for i in range(len(source)):
    ex = get(i)
    images.append({"id": int(ex.image_id), "width": int(ex.width), "height": int(ex.height),
                   "file_name": ex.file_name or str(ex.image_id)})
    masks = getattr(ex, "masks", None)
    if masks is not None and len(masks) != len(ex.boxes):
      raise ValueError(f"example image_id={ex.image_id}: {len(masks)} masks for {len(ex.boxes)} "
                       "objects (need one segmentation per object)")
    for k, (b, c, crowd) in enumerate(zip(ex.boxes.astype(np.float64), ex.classes, ex.is_crowd)):
      w, h = float(b[2] - b[0]), float(b[3] - b[1])
      ann = {"id": len(anns) + 1, "image_id": int(ex.image_id), "category_id": cat_ids[int(c)],
             "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": int(crowd)}
      if masks is not None and masks[k] is not None:
        ann["segmentation"] = masks[k]
      anns.append(ann)
  cats = [{"id": cid, "name": str(name)} for cid, name in zip(cat_ids, source.class_names)]
  gt = COCO()
  gt.dataset = {"images": images, "annotations": anns, "categories": cats}
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
  return gt
