"""Tests for jaxdet.evaluation.voc against a slow devkit-style reference and hand cases."""

import numpy as np
import pytest

from jaxdet.evaluation import voc as V


# ----------------------------------------------------------------------------------------
# Slow reference, written from the devkit description (VOCevaldet.m): one class at a time,
# one global loop over detections in decreasing score order, IoU by scalar arithmetic.
def ref_iou(d, g, plus):
  one = 1.0 if plus else 0.0
  iw = min(d[2], g[2]) - max(d[0], g[0]) + one
  ih = min(d[3], g[3]) - max(d[1], g[1]) + one
  if iw <= 0 or ih <= 0:
    return None
  inter = iw * ih
  ua = (d[2] - d[0] + one) * (d[3] - d[1] + one) + (g[2] - g[0] + one) * (
      g[3] - g[1] + one) - inter
  return inter / ua


def ref_ap(rec, prec, use07):
  if use07:
    ap = 0.0
    for k in range(11):
      t = np.arange(0.0, 1.1, 0.1)[k]
      ps = [p for r, p in zip(rec, prec) if r >= t]
      ap += (max(ps) if ps else 0.0) / 11
    return ap
  mrec = [0.0] + list(rec) + [1.0]
  mpre = [0.0] + list(prec) + [0.0]
  for i in range(len(mpre) - 2, -1, -1):
    mpre[i] = max(mpre[i], mpre[i + 1])
  ap = 0.0
  for i in range(1, len(mrec)):
    if mrec[i] != mrec[i - 1]:
      ap += (mrec[i] - mrec[i - 1]) * mpre[i]
  return ap


def ref_eval(gt, dets, num_classes, thr, use07, plus):
  aps = []
  for c in range(num_classes):
    npos = 0
    gt_c = {}
    for img, (boxes, cls, diff) in enumerate(gt):
      gt_c[img] = [(boxes[k], bool(diff[k])) for k in range(len(cls)) if cls[k] == c]
      npos += sum(1 for k in range(len(cls)) if cls[k] == c and not diff[k])
    detected = {img: [False] * len(v) for img, v in gt_c.items()}
    dl = []
    for img, (boxes, scores, cls) in enumerate(dets):
      for k in range(len(cls)):
        if cls[k] == c:
          dl.append((scores[k], img, boxes[k]))
    order = sorted(range(len(dl)), key=lambda i: -dl[i][0])  # Python sort is stable
    tp = [0] * len(dl)
    fp = [0] * len(dl)
    for n, i in enumerate(order):
      _, img, box = dl[i]
      ovmax, jmax = -np.inf, -1
      for j, (g, _) in enumerate(gt_c[img]):
        ov = ref_iou(box, g, plus)
        if ov is not None and ov > ovmax:
          ovmax, jmax = ov, j
      if ovmax >= thr:
        if not gt_c[img][jmax][1]:
          if not detected[img][jmax]:
            tp[n] = 1
            detected[img][jmax] = True
          else:
            fp[n] = 1
      else:
        fp[n] = 1
    if npos == 0:
      aps.append(np.nan)
      continue
    ctp, cfp, rec, prec = 0, 0, [], []
    for n in range(len(dl)):
      ctp += tp[n]
      cfp += fp[n]
      rec.append(ctp / npos)
      prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))
    aps.append(ref_ap(rec, prec, use07))
  return np.array(aps)


def random_dataset(rng, n_images=12, num_classes=4):
  gt, dets = [], []
  for _ in range(n_images):
    g = rng.integers(0, 6)
    xy = rng.integers(0, 80, size=(g, 2)).astype(float)
    wh = rng.integers(12, 50, size=(g, 2)).astype(float)
    gboxes = np.concatenate([xy, xy + wh], axis=1)
    gcls = rng.integers(0, num_classes, size=g)
    gdiff = rng.random(g) < 0.2
    gt.append((gboxes, gcls, gdiff))
    # detections: jittered copies (some duplicated / wrong class) plus random boxes
    rows, scores, cls = [], [], []
    for k in range(g):
      for _ in range(rng.integers(0, 3)):
        rows.append(gboxes[k] + rng.integers(-4, 5, size=4))
        cls.append(gcls[k] if rng.random() < 0.85 else rng.integers(0, num_classes))
        scores.append(rng.random())
    for _ in range(rng.integers(0, 5)):
      xy0 = rng.integers(0, 90, size=2).astype(float)
      rows.append(np.concatenate([xy0, xy0 + rng.integers(3, 40, size=2)]))
      cls.append(rng.integers(0, num_classes))
      scores.append(rng.random())
    scores = np.round(np.array(scores), 2)  # some ties
    dets.append((np.array(rows, float).reshape(-1, 4), scores, np.array(cls, int)))
  return gt, dets


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('use07', [True, False])
@pytest.mark.parametrize('plus', [True, False])
def test_matches_slow_reference(seed, use07, plus):
  rng = np.random.default_rng(seed)
  gt, dets = random_dataset(rng)
  for thr in (0.7, 0.5):
    ref = ref_eval(gt, dets, 4, thr, use07, plus)
    out = V.evaluate_voc(gt, dets, 4, iou_threshold=thr, use_07_metric=use07,
                         pixel_plus_one=plus)
    np.testing.assert_allclose(out['per_class_ap'], ref, rtol=1e-12, atol=1e-12)
    assert out['mAP'] == pytest.approx(np.nanmean(ref), abs=1e-12)
  # the random case is non-trivial at IoU 0.5: every class has 0 < AP < 1
  assert np.all((ref > 0.01) & (ref < 0.99)), ref


def _img(boxes, cls, diff=None):
  boxes = np.asarray(boxes, float).reshape(-1, 4)
  diff = np.zeros(len(boxes), bool) if diff is None else np.asarray(diff, bool)
  return (boxes, np.asarray(cls, int), diff)


def _det(boxes, scores, cls):
  return (np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float),
          np.asarray(cls, int))


def test_perfect_detections_give_one():
  gt = [_img([[0, 0, 10, 10], [20, 20, 40, 50]], [0, 1]), _img([[5, 5, 30, 30]], [1])]
  dets = [_det([[0, 0, 10, 10], [20, 20, 40, 50]], [0.9, 0.8], [0, 1]),
          _det([[5, 5, 30, 30]], [0.3], [1])]
  for use07 in (True, False):
    out = V.evaluate_voc(gt, dets, 2, use_07_metric=use07)
    assert out['mAP'] == pytest.approx(1.0)
    np.testing.assert_allclose(out['per_class_ap'], [1.0, 1.0])


def test_false_positive_ranked_first():
  # one GT, a FP with the highest score then the TP: rec [0, 1], prec [0, 0.5]
  gt = [_img([[0, 0, 10, 10]], [0])]
  dets = [_det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.5], [0, 0])]
  assert V.evaluate_voc(gt, dets, 1, use_07_metric=False)['mAP'] == pytest.approx(0.5)
  assert V.evaluate_voc(gt, dets, 1, use_07_metric=True)['mAP'] == pytest.approx(0.5)
  # the FP ranked last instead: AP = 1
  dets = [_det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.1, 0.5], [0, 0])]
  assert V.evaluate_voc(gt, dets, 1, use_07_metric=False)['mAP'] == pytest.approx(1.0)


def test_duplicate_detection_is_false_positive():
  # two GTs; the same GT detected twice (second copy FP) before the other GT
  gt = [_img([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 0])]
  dets = [_det([[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.8, 0.7],
               [0, 0, 0])]
  # rec [.5, .5, 1], prec [1, .5, 2/3] -> area: .5*1 + .5*(2/3)
  out = V.evaluate_voc(gt, dets, 1, use_07_metric=False)
  assert out['mAP'] == pytest.approx(0.5 + 0.5 * 2 / 3)
  # 11-point: t<=.5 -> 1 (6 points), t>.5 -> 2/3 (5 points)
  out = V.evaluate_voc(gt, dets, 1, use_07_metric=True)
  assert out['mAP'] == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)


def test_difficult_gt_neither_tp_nor_fp():
  gt = [_img([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 0], [False, True])]
  # detection on the difficult GT ranked first: ignored, so AP = 1
  dets = [_det([[30, 30, 40, 40], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
  out = V.evaluate_voc(gt, dets, 1, use_07_metric=False)
  assert out['mAP'] == pytest.approx(1.0)
  assert out['num_gt'][0] == 1
  # missing the difficult GT costs nothing either
  dets = [_det([[0, 0, 10, 10]], [0.8], [0])]
  assert V.evaluate_voc(gt, dets, 1, use_07_metric=False)['mAP'] == pytest.approx(1.0)
  # a second detection on the difficult GT is still ignored, not a duplicate FP
  dets = [_det([[30, 30, 40, 40], [30, 30, 40, 40], [0, 0, 10, 10]], [0.9, 0.85, 0.8],
               [0, 0, 0])]
  assert V.evaluate_voc(gt, dets, 1, use_07_metric=False)['mAP'] == pytest.approx(1.0)


def test_pixel_plus_one_changes_iou_at_the_border():
  # [0,0,9,9] vs [1,0,10,9]: +1 convention 90/110 = .818; continuous 81/99 = .818...
  # choose boxes where the threshold is crossed only with +1: 1-wide strips
  gt = [_img([[0, 0, 1, 10]], [0])]
  dets = [_det([[1, 0, 2, 10]], [0.9], [0])]
  # +1: inter = 1*11=11, union = 2*11*2-11=33 -> 1/3; continuous: inter 0 -> 0
  iou_plus = V.box_iou_matrix(dets[0][0], gt[0][0], True)[0, 0]
  iou_cont = V.box_iou_matrix(dets[0][0], gt[0][0], False)[0, 0]
  assert iou_plus == pytest.approx(1 / 3) and iou_cont == 0.0
  assert V.evaluate_voc(gt, dets, 1, iou_threshold=0.3)['mAP'] == pytest.approx(1.0)
  assert V.evaluate_voc(gt, dets, 1, iou_threshold=0.3,
                        pixel_plus_one=False)['mAP'] == 0.0


def test_voc_ap_hand_cases():
  assert V.voc_ap([], [], True) == 0.0
  assert V.voc_ap([0.2, 0.4], [1.0, 1.0], False) == pytest.approx(0.4)
  # recall exactly 0.3 does not reach the float threshold 0.30000000000000004 (as in the
  # Python devkit port): points t=0,.1,.2 -> 1.0
  assert V.voc_ap([0.3], [1.0], True) == pytest.approx(3 / 11)


def test_dict_inputs_padding_and_classes_without_gt():
  gt = {'a': {'boxes': [[0, 0, 10, 10], [0, 0, 0, 0]], 'classes': [1, -1],
              'difficult': [False, False]},
        'b': {'boxes': np.zeros((0, 4)), 'classes': [], 'difficult': []}}
  dets = {'a': {'boxes': [[0, 0, 10, 10], [0, 0, 5, 5]], 'scores': [0.9, 0.0],
                'classes': [1, -1]},
          'b': {'boxes': [[0, 0, 5, 5]], 'scores': [0.5], 'classes': [0]}}
  out = V.evaluate_voc(gt, dets, 3)
  assert np.isnan(out['per_class_ap'][0]) and np.isnan(out['per_class_ap'][2])
  assert out['per_class_ap'][1] == pytest.approx(1.0)
  assert out['mAP'] == pytest.approx(1.0)
  assert list(out['num_det']) == [1, 1, 0]


def test_bad_arguments():
  gt = [_img([[0, 0, 10, 10]], [0])]
  with pytest.raises(ValueError, match='num_classes'):
    V.evaluate_voc(gt, [_det([[0, 0, 1, 1]], [1.0], [3])], 2)
  with pytest.raises(ValueError, match='one entry'):
    V.evaluate_voc(gt, [], 1)
  with pytest.raises(ValueError, match='not in gt'):
    V.evaluate_voc({1: gt[0]}, {2: _det([[0, 0, 1, 1]], [1.0], [0])}, 1)
  with pytest.raises(ValueError, match='iou_threshold'):
    V.evaluate_voc(gt, [_det([], [], [])], 1, iou_threshold=0.0)


def test_from_coco_matches_direct_form():
  rng = np.random.default_rng(5)
  gt, dets = random_dataset(rng, n_images=8, num_classes=3)
  cat_ids = [3, 7, 11]
  images, anns, results = [], [], []
  for i, (boxes, cls, diff) in enumerate(gt):
    images.append({'id': 100 + i, 'width': 128, 'height': 128})
    for k in range(len(cls)):
      x1, y1, x2, y2 = boxes[k]
      flag = {} if not diff[k] else ({'iscrowd': 1} if k % 2 else {'difficult': 1})
      anns.append({'id': len(anns) + 1, 'image_id': 100 + i, 'category_id': cat_ids[cls[k]],
                   'bbox': [x1, y1, x2 - x1, y2 - y1], 'area': 1.0, **flag})
    dboxes, scores, dcls = dets[i]
    for k in range(len(dcls)):
      x1, y1, x2, y2 = dboxes[k]
      results.append({'image_id': 100 + i, 'category_id': cat_ids[dcls[k]],
                      'bbox': [x1, y1, x2 - x1, y2 - y1], 'score': float(scores[k])})
  dataset = {'images': images, 'annotations': anns,
             'categories': [{'id': c, 'name': str(c)} for c in cat_ids]}
  direct = V.evaluate_voc(gt, dets, 3, pixel_plus_one=False)
  via = V.evaluate_voc_from_coco(dataset, results)
  np.testing.assert_allclose(via['per_class_ap'], direct['per_class_ap'], rtol=1e-12)
  assert via['category_ids'] == cat_ids
  # also a real pycocotools COCO object
  from pycocotools.coco import COCO
  coco = COCO()
  coco.dataset = dataset
  coco.createIndex()
  via2 = V.evaluate_voc_from_coco(coco, results)
  np.testing.assert_allclose(via2['per_class_ap'], direct['per_class_ap'], rtol=1e-12)
  # a subset of images, as COCOeval params.imgIds: results elsewhere are dropped
  sub = V.evaluate_voc_from_coco(coco, results, image_ids=[100, 101, 102, 103])
  direct_sub = V.evaluate_voc(gt[:4], dets[:4], 3, pixel_plus_one=False)
  np.testing.assert_allclose(sub['per_class_ap'], direct_sub['per_class_ap'], rtol=1e-12)
  assert not np.allclose(np.nan_to_num(sub['per_class_ap']),
                         np.nan_to_num(direct['per_class_ap']))
  with pytest.raises(ValueError, match='image_ids'):
    V.evaluate_voc_from_coco(coco, results, image_ids=[999])
