"""Mask AP plumbing: coco_from_source keeps the objects' segmentations, evaluate_coco(iou_type=
"segm") runs pycocotools' mask COCOeval (checked against COCOeval called directly), bbox
evaluation is unchanged by masks."""
import contextlib
import io
import types

import numpy as np
import pytest

from jaxdet.evaluation.coco import METRIC_NAMES, coco_from_source, evaluate_coco
from jaxdet.evaluation.segm import encode_masks

mask_utils = pytest.importorskip("pycocotools.mask")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

CATEGORY_IDS = [3, 8]
SIZES = {7: (60, 80), 11: (50, 50)}  # image id: (height, width)
# (image id, class, segmentation, crowd); polygons in image pixels, one object given as an RLE
OBJECTS = [
    (7, 0, [[10.0, 10.0, 40.0, 12.0, 25.0, 45.0]], 0),                         # triangle
    (7, 1, [[45.0, 5.0, 75.0, 5.0, 75.0, 20.0, 55.0, 20.0, 55.0, 50.0, 45.0, 50.0]], 0),  # L
    (7, 0, [[2.0, 48.0, 12.0, 48.0, 12.0, 58.0, 2.0, 58.0],                     # two parts
            [14.0, 50.0, 20.0, 50.0, 20.0, 56.0]], 0),
    (11, 1, "rle", 0),
    (11, 0, [[30.0, 30.0, 48.0, 31.0, 46.0, 47.0, 29.0, 44.0]], 0),
    (11, 1, [[0.0, 0.0, 8.0, 0.0, 8.0, 8.0, 0.0, 8.0]], 1),                     # crowd
]


def _rle_object():
  mask = np.zeros((50, 50), np.uint8)
  mask[5:22, 8:20] = 1
  mask[10:15, 20:27] = 1
  return encode_masks(mask[None].astype(bool))[0]


def _objects():
  out = []
  for iid, cls, seg, crowd in OBJECTS:
    seg = _rle_object() if isinstance(seg, str) else seg
    height, width = SIZES[iid]
    rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width)) if isinstance(seg, list) \
        else seg
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    out.append((iid, cls, seg, crowd, [x, y, x + w, y + h]))
  return out


class _Source:
  """A minimal DetectionSource of annotation-only examples; 'masks' only when with_masks (an
  example may lack the attribute altogether)."""

  def __init__(self, with_masks=True):
    self.category_ids, self.class_names, self._examples = CATEGORY_IDS, ["a", "b"], []
    for iid, (height, width) in SIZES.items():
      objs = [o for o in _objects() if o[0] == iid]
      ex = types.SimpleNamespace(
          image_id=iid, height=height, width=width, file_name=f"{iid}.png",
          boxes=np.array([o[4] for o in objs], np.float32),
          classes=np.array([o[1] for o in objs]), is_crowd=np.array([bool(o[3]) for o in objs]))
      if with_masks:
        ex.masks = [o[2] for o in objs]
      self._examples.append(ex)

  def __len__(self):
    return len(self._examples)

  def __getitem__(self, i):
    return self._examples[i]


def _reference_gt():
  """The same ground truth written directly as a COCO dataset (box area, as coco_from_source)."""
  anns = []
  for k, (iid, cls, seg, crowd, b) in enumerate(_objects()):
    w, h = float(b[2] - b[0]), float(b[3] - b[1])
    anns.append({"id": k + 1, "image_id": iid, "category_id": CATEGORY_IDS[cls],
                 "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": crowd,
                 "segmentation": seg})
  gt = COCO()
  gt.dataset = {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in SIZES.items()],
                "annotations": anns,
                "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, "ab")]}
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
  return gt


def _reference_metrics(gt, results, iou_type):
  with contextlib.redirect_stdout(io.StringIO()):
    dt = gt.loadRes([dict(r) for r in results])
    ev = COCOeval(gt, dt, iouType=iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  return {k: (float(v) if v >= 0 else np.nan) for k, v in zip(METRIC_NAMES, ev.stats[:6])}


def _results(shift=(0, 0), jitter=0.0, with_bbox=True):
  """One detection per non-crowd object: its gt mask (rolled by ``shift`` = (dy, dx) pixels) as
  an RLE and its box (jittered by ``jitter`` pixels)."""
  rng = np.random.default_rng(0)
  gt = _reference_gt()
  out = []
  for k, (iid, cls, seg, crowd, b) in enumerate(_objects()):
    if crowd:
      continue
    mask = gt.annToMask(gt.anns[k + 1]).astype(bool)
    mask = np.roll(mask, shift, axis=(0, 1))
    x1, y1, x2, y2 = np.asarray(b) + rng.uniform(-jitter, jitter, 4)
    r = {"image_id": iid, "category_id": CATEGORY_IDS[cls], "score": 0.9 - 0.1 * k,
         "segmentation": encode_masks(mask[None])[0]}
    if with_bbox:
      r["bbox"] = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
    out.append(r)
  return out


def _assert_metrics_equal(got, want):
  assert set(got) == set(METRIC_NAMES)
  for k in METRIC_NAMES:
    assert (np.isnan(got[k]) and np.isnan(want[k])) or got[k] == pytest.approx(want[k]), (k, got,
                                                                                          want)


def test_coco_from_source_keeps_segmentations():
  gt = coco_from_source(_Source())
  anns = gt.loadAnns(gt.getAnnIds())
  objs = _objects()
  assert len(anns) == len(objs)
  for ann, (iid, cls, seg, crowd, b) in zip(anns, objs):
    assert ann["segmentation"] == seg and ann["iscrowd"] == crowd
    assert ann["area"] == pytest.approx((b[2] - b[0]) * (b[3] - b[1]))  # the box area
    np.testing.assert_array_equal(gt.annToMask(ann), _reference_gt().annToMask(
        _reference_gt().anns[ann["id"]]))
  plain = coco_from_source(_Source(with_masks=False))
  assert all("segmentation" not in a for a in plain.loadAnns(plain.getAnnIds()))
  src = _Source()
  src._examples[0].masks = None
  assert all(("segmentation" in a) == (a["image_id"] == 11)
             for a in coco_from_source(src).loadAnns(coco_from_source(src).getAnnIds()))


def test_exact_masks_give_segm_ap_one():
  gt = coco_from_source(_Source())
  m = evaluate_coco(gt, _results(jitter=6.0), iou_type="segm")  # boxes are ignored for masks
  for k in METRIC_NAMES:
    assert np.isnan(m[k]) or m[k] == pytest.approx(1.0), (k, m)
  assert m["AP"] == pytest.approx(1.0)
  assert evaluate_coco(gt, _results(with_bbox=False), iou_type="segm") == pytest.approx(m,
                                                                                        nan_ok=True)


def test_shifted_masks_match_pycocotools():
  gt = coco_from_source(_Source())
  shifted = _results(shift=(2, 3))
  got = evaluate_coco(gt, shifted, iou_type="segm")
  # COCOeval called directly on the hand-written ground truth; without 'bbox' in the results,
  # as evaluate_coco passes them (detectron2: mask areas for the size ranges)
  want = _reference_metrics(_reference_gt(), [{k: v for k, v in r.items() if k != "bbox"}
                                              for r in shifted], "segm")
  _assert_metrics_equal(got, want)
  assert 0.0 < got["AP"] < 0.9  # the shift does cost mask AP
  assert got["AP"] != pytest.approx(evaluate_coco(gt, shifted)["AP"])  # (boxes are exact)
  only = evaluate_coco(gt, shifted, iou_type="segm", image_ids=[11])
  ref = _reference_gt()
  with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(ref, ref.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in shifted]),
                  iouType="segm")
    ev.params.imgIds = [11]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  assert only["AP"] == pytest.approx(ev.stats[0])


def test_bbox_evaluation_unchanged_by_masks():
  results = _results(jitter=3.0)
  with_masks = evaluate_coco(coco_from_source(_Source()), results)
  without = evaluate_coco(coco_from_source(_Source(with_masks=False)),
                          [{k: v for k, v in r.items() if k != "segmentation"} for r in results])
  _assert_metrics_equal(with_masks, without)
  _assert_metrics_equal(with_masks, _reference_metrics(_reference_gt(), results, "bbox"))
  assert 0.0 < with_masks["AP"] < 1.0
  assert evaluate_coco(coco_from_source(_Source()), results, iou_type="bbox") == pytest.approx(
      with_masks, nan_ok=True)


def test_segm_errors():
  gt = coco_from_source(_Source())
  results = _results()
  with pytest.raises(ValueError, match="segmentation"):
    evaluate_coco(gt, [dict(results[0])] + [{k: v for k, v in r.items() if k != "segmentation"}
                                            for r in results[1:]], iou_type="segm")
  with pytest.raises(ValueError, match="RLE"):
    evaluate_coco(gt, [dict(results[0], segmentation=[[0, 0, 5, 0, 5, 5]])], iou_type="segm")
  small = dict(results[0], segmentation=encode_masks(np.ones((1, 10, 10), bool))[0])
  with pytest.raises(ValueError, match="original image size"):
    evaluate_coco(gt, [small], iou_type="segm")
  with pytest.raises(ValueError, match="ground-truth segmentations"):
    evaluate_coco(coco_from_source(_Source(with_masks=False)), results, iou_type="segm")
  with pytest.raises(ValueError, match="iou_type"):
    evaluate_coco(gt, results, iou_type="keypoints")
  assert evaluate_coco(gt, [], iou_type="segm") == {k: 0.0 for k in METRIC_NAMES}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_faster_coco_eval_backend_gives_the_pycocotools_mask_and_box_metrics(iou_type):
  gt = _reference_gt()
  for shift, jitter in (((1, 2), 2.0), ((3, 0), 5.0)):
    results = _results(shift=shift, jitter=jitter)
    _assert_metrics_equal(evaluate_coco(gt, results, iou_type=iou_type, backend="faster_coco_eval"),
                          evaluate_coco(gt, results, iou_type=iou_type))
