"""PASCAL VOC detection evaluation: per-class average precision and mAP (Everingham et
al., IJCV 2010), the metric of AP-loss Tables 2-3 (mAP50 on VOC07 test) and of ALWA
Tables 1-3, 7-8.

Protocol (as in the official devkit, VOCevaldet.m):
  * per class, all detections of that class over the whole test set are sorted by
    decreasing score (stable sort: ties keep input order);
  * each detection is assigned to the ground-truth box of the same class and image with
    the largest IoU (over *all* of that image's GTs of the class, difficult ones included);
    if that IoU >= iou_threshold: a difficult GT makes the detection neither TP nor FP; a
    non-difficult GT not yet matched makes it a TP (and marks the GT matched); a GT
    already matched makes it a FP (duplicate). Otherwise the detection is a FP;
  * recall = cum TP / #non-difficult GTs, precision = cum TP / (cum TP + cum FP);
  * AP = VOC07 11-point interpolated AP (``use_07_metric=True``) or the area under the
    monotone precision envelope (VOC2010+).
Greedy matching only depends on the score order inside one image, so it is done per
(image, class) and the TP/FP flags are then merged in global score order - the result is
identical to the devkit's single global loop.

Conventions, chosen for faithfulness to the devkit and documented here:
  * ``pixel_plus_one=True`` (default) measures widths/heights as x2 - x1 + 1, i.e. boxes in
    VOC's inclusive integer pixel coordinates. Pass False for continuous coordinates.
  * Box frames. The VOC XML ``bndbox`` holds 1-based inclusive pixel indices: the box covers
    pixels ``xmin..xmax``, ``xmax - xmin + 1`` wide (the devkit's width). jaxdet's sources hand
    out continuous absolute-pixel ``xyxy`` boxes (``jaxdet.data.records``), for VOC the area of
    those pixels: ``[xmin - 1, ymin - 1, xmax, ymax]`` (``xyxy_from_voc_pixels``), so
    ``x2 - x1`` is the devkit width and ``pixel_plus_one=False`` gives the devkit's IoU. Both VOC
    inputs arrive in this frame: a COCO JSON converted as ``[xmin - 1, ymin - 1, xmax - xmin + 1,
    ymax - ymin + 1]`` (``CocoJsonSource``: ``x2 = x + w``) and TFDS ``voc/2007`` / ``voc/2012``
    (``TfdsSource``, which undoes TFDS' ``xmin / width`` normalisation of the 1-based indices and
    subtracts 1 from the min corner, see ``jaxdet.data.tfds_source``); detections of a model
    trained on either are in it too, and ``evaluate_voc_from_coco`` (``pixel_plus_one=False``)
    scores them as the devkit would.
  * The devkit accepts a match when IoU >= threshold (the Python port in py-faster-rcnn
    uses >; the two differ only at an exact tie).
  * The 11 recall thresholds are ``np.arange(0, 1.1, 0.1)`` as in the common Python port.
  * A class with no non-difficult GT has AP = NaN and is left out of the mAP.
"""

from collections.abc import Mapping, Sequence

import numpy as np


def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
  """AP from a recall/precision curve (detections in decreasing score order).

  use_07_metric=True: mean over t in {0, 0.1, ..., 1} of max precision at recall >= t
  (0 if no such point). False: area under the precision envelope (VOC2010+).
  """
  recall = np.asarray(recall, np.float64).reshape(-1)
  precision = np.asarray(precision, np.float64).reshape(-1)
  if recall.shape != precision.shape:
    raise ValueError(f'voc_ap: recall and precision must have the same length; got '
                     f'{recall.shape[0]} and {precision.shape[0]}.')
  if use_07_metric:
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
      above = recall >= t
      ap += (precision[above].max() if above.any() else 0.0) / 11.0
    return float(ap)
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
  change = np.nonzero(mrec[1:] != mrec[:-1])[0]
  return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def xyxy_from_voc_pixels(boxes) -> np.ndarray:
  """VOC XML ``[xmin, ymin, xmax, ymax]`` (1-based inclusive pixel indices, float or int
  ``[..., 4]``) -> jaxdet's continuous ``xyxy`` of the same pixels, ``[xmin - 1, ymin - 1, xmax,
  ymax]`` (float64): ``x2 - x1 = xmax - xmin + 1``, the devkit's width."""
  b = np.asarray(boxes, np.float64)
  if b.shape[-1:] != (4,):
    raise ValueError(f'xyxy_from_voc_pixels: boxes must have 4 coordinates [xmin, ymin, xmax, '
                     f'ymax] in the last axis; got shape {b.shape}.')
  return b - np.array([1.0, 1.0, 0.0, 0.0])


def box_iou_matrix(a, b, pixel_plus_one: bool = True) -> np.ndarray:
  """IoU [len(a), len(b)] of xyxy boxes, with the VOC +1 width convention if asked."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  one = 1.0 if pixel_plus_one else 0.0
  iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
  ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
  inter = np.maximum(iw + one, 0.0) * np.maximum(ih + one, 0.0)
  area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
  area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
  union = area_a[:, None] + area_b[None, :] - inter
  with np.errstate(divide='ignore', invalid='ignore'):
    iou = np.where(union > 0, inter / union, 0.0)
  return iou


def _as_items(records, what: str):
  """(keys, values) of a per-image dict or sequence."""
  if isinstance(records, Mapping):
    return list(records.keys()), list(records.values())
  if isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
    return list(range(len(records))), list(records)
  raise ValueError(f'evaluate_voc: {what} must be a dict keyed by image id or a list with '
                   f'one entry per image; got {type(records).__name__}.')


def _fields(entry, names, what, key):
  if isinstance(entry, Mapping):
    missing = [n for n in names if n not in entry]
    if missing:
      raise ValueError(f'evaluate_voc: {what} of image {key!r} lacks keys {missing}; '
                       f'expected keys {names}.')
    return [entry[n] for n in names]
  if len(entry) != len(names):
    raise ValueError(f'evaluate_voc: {what} of image {key!r} must be a tuple {names}; '
                     f'got {len(entry)} fields.')
  return list(entry)


def _parse_gt(entry, key, num_classes):
  boxes, classes, difficult = _fields(entry, ('boxes', 'classes', 'difficult'), 'gt', key)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  classes = np.asarray(classes).reshape(-1).astype(np.int64)
  difficult = np.asarray(difficult).reshape(-1).astype(bool)
  if not boxes.shape[0] == classes.shape[0] == difficult.shape[0]:
    raise ValueError(f'evaluate_voc: gt of image {key!r}: boxes, classes and difficult '
                     f'have different lengths {boxes.shape[0]}, {classes.shape[0]}, '
                     f'{difficult.shape[0]}.')
  keep = classes >= 0  # negative class = padding
  if np.any(classes[keep] >= num_classes):
    raise ValueError(f'evaluate_voc: gt of image {key!r} has class {classes.max()} >= '
                     f'num_classes={num_classes}; classes must be 0..num_classes-1.')
  return boxes[keep], classes[keep], difficult[keep]


def _parse_det(entry, key, num_classes):
  boxes, scores, classes = _fields(entry, ('boxes', 'scores', 'classes'), 'detections',
                                   key)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  classes = np.asarray(classes).reshape(-1).astype(np.int64)
  if not boxes.shape[0] == scores.shape[0] == classes.shape[0]:
    raise ValueError(f'evaluate_voc: detections of image {key!r}: boxes, scores and '
                     f'classes have different lengths {boxes.shape[0]}, '
                     f'{scores.shape[0]}, {classes.shape[0]}.')
  keep = classes >= 0  # negative class = padding (fixed-size detector output)
  if np.any(classes[keep] >= num_classes):
    raise ValueError(f'evaluate_voc: detections of image {key!r} have class '
                     f'{classes.max()} >= num_classes={num_classes}.')
  if not np.all(np.isfinite(scores[keep])):
    raise ValueError(f'evaluate_voc: detections of image {key!r} have non-finite scores.')
  return boxes[keep], scores[keep], classes[keep]


def _match_image_class(det_boxes, det_scores, gt_boxes, gt_difficult, iou_threshold,
                       pixel_plus_one):
  """TP/FP/ignore flags of one image's detections of one class, greedy in score order.

  Returns labels in input order: 1 = TP, 0 = FP, -1 = ignored (matched a difficult GT).
  """
  n = det_boxes.shape[0]
  labels = np.zeros(n, np.int8)
  if gt_boxes.shape[0] == 0 or n == 0:
    return labels
  order = np.argsort(-det_scores, kind='stable')
  iou = box_iou_matrix(det_boxes[order], gt_boxes, pixel_plus_one)
  best = np.argmax(iou, axis=1)
  best_iou = iou[np.arange(n), best]
  matched = np.zeros(gt_boxes.shape[0], bool)
  out = np.zeros(n, np.int8)
  for k in range(n):  # sequential by nature: a GT can be claimed only once
    if best_iou[k] >= iou_threshold:
      j = best[k]
      if gt_difficult[j]:
        out[k] = -1
      elif not matched[j]:
        out[k] = 1
        matched[j] = True
  labels[order] = out
  return labels


def evaluate_voc(gt, detections, num_classes: int, iou_threshold: float = 0.5,
                 use_07_metric: bool = True, pixel_plus_one: bool = True) -> dict:
  """VOC mAP of detections against ground truth.

  Args:
    gt: per image (a list, or a dict keyed by image id) either a tuple
      (boxes [G,4] xyxy, classes [G] int in 0..num_classes-1, difficult [G] bool) or a dict
      with keys 'boxes', 'classes', 'difficult'. A negative class marks a padding row.
    detections: same keying (a dict may omit images without detections; a list must have
      one entry per gt image), each (boxes [D,4], scores [D], classes [D]) or a dict with
      keys 'boxes', 'scores', 'classes'. Negative class = padding row, skipped.
    num_classes: number of object classes (no background).
    iou_threshold: minimum IoU for a match (0.5 for VOC).
    use_07_metric: VOC2007 11-point AP (True, the VOC07-test convention of the papers) or
      the VOC2010+ area AP.
    pixel_plus_one: VOC +1 pixel convention in widths/heights (devkit: True).

  Returns:
    dict with 'mAP' (float, mean over classes that have non-difficult GT),
    'per_class_ap' (np.ndarray [num_classes], NaN where a class has no non-difficult GT),
    'num_gt' (non-difficult GT count per class), 'num_det' (per class),
    'max_recall' (per class, NaN where no GT).
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 1:
    raise ValueError(f'evaluate_voc: num_classes must be a positive int; got {num_classes!r}.')
  if not 0.0 < float(iou_threshold) <= 1.0:
    raise ValueError(f'evaluate_voc: iou_threshold must be in (0, 1]; got {iou_threshold!r}.')
  gt_keys, gt_vals = _as_items(gt, 'gt')
  det_keys, det_vals = _as_items(detections, 'detections')
  if isinstance(gt, Mapping) != isinstance(detections, Mapping):
    raise ValueError('evaluate_voc: gt and detections must both be dicts keyed by image id '
                     'or both be lists in the same image order.')
  if not isinstance(gt, Mapping) and len(det_vals) != len(gt_vals):
    raise ValueError(f'evaluate_voc: detections list has {len(det_vals)} images but gt has '
                     f'{len(gt_vals)}; give one entry (possibly empty) per image.')
  unknown = set(det_keys) - set(gt_keys)
  if unknown:
    raise ValueError(f'evaluate_voc: detections for images not in gt: '
                     f'{sorted(map(str, unknown))[:5]}.')
  gts = {k: _parse_gt(v, k, num_classes) for k, v in zip(gt_keys, gt_vals)}
  dets = {k: _parse_det(v, k, num_classes) for k, v in zip(det_keys, det_vals)}

  num_gt = np.zeros(num_classes, np.int64)
  for _, cls, diff in gts.values():
    num_gt += np.bincount(cls[~diff], minlength=num_classes)

  scores_per_class = [[] for _ in range(num_classes)]
  labels_per_class = [[] for _ in range(num_classes)]
  for key, (d_boxes, d_scores, d_cls) in dets.items():
    g_boxes, g_cls, g_diff = gts[key]
    for c in np.unique(d_cls):
      dm, gm = d_cls == c, g_cls == c
      labels = _match_image_class(d_boxes[dm], d_scores[dm], g_boxes[gm], g_diff[gm],
                                  iou_threshold, pixel_plus_one)
      scores_per_class[c].append(d_scores[dm])
      labels_per_class[c].append(labels)

  ap = np.full(num_classes, np.nan)
  max_recall = np.full(num_classes, np.nan)
  num_det = np.zeros(num_classes, np.int64)
  for c in range(num_classes):
    scores = np.concatenate(scores_per_class[c]) if scores_per_class[c] else np.zeros(0)
    labels = (np.concatenate(labels_per_class[c]) if labels_per_class[c]
              else np.zeros(0, np.int8))
    num_det[c] = scores.shape[0]
    if num_gt[c] == 0:
      continue
    order = np.argsort(-scores, kind='stable')
    labels = labels[order]
    labels = labels[labels >= 0]  # detections on difficult GTs are neither TP nor FP
    tp = np.cumsum(labels == 1)
    fp = np.cumsum(labels == 0)
    recall = tp / num_gt[c]
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap[c] = voc_ap(recall, precision, use_07_metric)
    max_recall[c] = recall[-1] if recall.size else 0.0
  valid = num_gt > 0
  m_ap = float(np.mean(ap[valid])) if valid.any() else float('nan')
  return {'mAP': m_ap, 'per_class_ap': ap, 'num_gt': num_gt, 'num_det': num_det,
          'max_recall': max_recall}


def _coco_dataset(coco_gt):
  if hasattr(coco_gt, 'dataset'):
    return coco_gt.dataset
  if isinstance(coco_gt, Mapping):
    return coco_gt
  raise ValueError('evaluate_voc_from_coco: coco_gt must be a pycocotools COCO object or '
                   'a COCO-format dict with "images", "annotations", "categories".')


def _xywh_to_xyxy(bbox):
  x, y, w, h = (float(v) for v in bbox)
  return [x, y, x + w, y + h]


def evaluate_voc_from_coco(coco_gt, results, iou_threshold: float = 0.5,
                           use_07_metric: bool = True, pixel_plus_one: bool = False,
                           image_ids=None) -> dict:
  """VOC mAP from COCO-format ground truth and a COCO result list.

  Args:
    coco_gt: pycocotools ``COCO`` object (or its ``dataset`` dict).
    results: list of {'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}.
    iou_threshold, use_07_metric: as in ``evaluate_voc``.
    pixel_plus_one: boxes are converted [x, y, w, h] -> [x, y, x + w, y + h]. Keep False for
      ground truth in jaxdet's continuous frame (module docstring: ``coco_from_source`` of a
      ``CocoJsonSource`` whose JSON stores w = xmax - xmin + 1, or of a ``TfdsSource`` of
      ``voc/*``): that reproduces the devkit's +1 IoU exactly. Pass True only for a JSON that
      stores w = xmax - xmin (inclusive pixel corners, e.g. mmdetection's
      ``tools/dataset_converters/pascal_voc.py``: x = xmin - 1, w = xmax - xmin), with
      detections in that same frame.
    image_ids: optional subset of image ids to evaluate (like COCOeval ``params.imgIds``):
      GTs of other images are left out and results on other images are dropped. Default:
      every image of coco_gt (images without results count as all-missed).

  An annotation with a true 'iscrowd', 'ignore' or 'difficult' field is a difficult GT.
  Classes are the categories in increasing id order; the returned dict adds
  'category_ids' (the id of each entry of 'per_class_ap').
  """
  dataset = _coco_dataset(coco_gt)
  cat_ids = sorted(int(c['id']) for c in dataset.get('categories', []))
  if not cat_ids:
    raise ValueError('evaluate_voc_from_coco: coco_gt has no categories.')
  cat_index = {cid: i for i, cid in enumerate(cat_ids)}
  all_ids = [int(im['id']) for im in dataset.get('images', [])]
  all_set = set(all_ids)
  if image_ids is None:
    keep_ids = all_set
  else:
    keep_ids = {int(i) for i in image_ids}
    missing = keep_ids - all_set
    if missing:
      raise ValueError(f'evaluate_voc_from_coco: image_ids {sorted(missing)[:5]} are not in '
                       f'coco_gt["images"].')
  gt_lists = {i: ([], [], []) for i in all_ids if i in keep_ids}
  for ann in dataset.get('annotations', []):
    img = int(ann['image_id'])
    if img not in keep_ids:
      if img not in all_set:
        raise ValueError(f'evaluate_voc_from_coco: annotation {ann.get("id")} refers to '
                         f'image {img} that is not in coco_gt["images"].')
      continue
    b, c, d = gt_lists[img]
    b.append(_xywh_to_xyxy(ann['bbox']))
    c.append(cat_index[int(ann['category_id'])])
    d.append(bool(ann.get('iscrowd', 0) or ann.get('ignore', 0) or ann.get('difficult', 0)))
  gt = {i: (np.asarray(b, np.float64).reshape(-1, 4), np.asarray(c, np.int64),
            np.asarray(d, bool)) for i, (b, c, d) in gt_lists.items()}

  det_lists = {}
  for r in results:
    img, cid = int(r['image_id']), int(r['category_id'])
    if image_ids is not None and img not in keep_ids:
      continue
    if cid not in cat_index:
      raise ValueError(f'evaluate_voc_from_coco: result with category_id {cid} not in '
                       f'coco_gt categories {cat_ids[:10]}...')
    b, s, c = det_lists.setdefault(img, ([], [], []))
    b.append(_xywh_to_xyxy(r['bbox']))
    s.append(float(r['score']))
    c.append(cat_index[cid])
  detections = {i: (np.asarray(b, np.float64).reshape(-1, 4), np.asarray(s, np.float64),
                    np.asarray(c, np.int64)) for i, (b, s, c) in det_lists.items()}
  out = evaluate_voc(gt, detections, len(cat_ids), iou_threshold, use_07_metric,
                     pixel_plus_one)
  out['category_ids'] = cat_ids
  return out
