"""Tests of jaxdet.data.roi_crops: RoI labels against a slow exact reference, box-coder round trip,
sampling, and crops against hand-computed pixels."""
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from jaxdet.data import roi_crops as R
from jaxdet.ops import boxes as box_ops


# ----------------------------------------------------------------------------- assign_rois
def reference_assign(rois, gts, classes, pos, neg):
  """Plain-Python reference with exact rational IoUs (boxes on an integer grid) and the thresholds
  read as the decimals they are written as. Best GT: first of the maximal IoUs."""
  pos, neg = Fraction(str(pos)), Fraction(str(neg))
  labels, index, ious = [], [], []
  for r in rois:
    r = [Fraction(int(v)) for v in r]
    best, best_j = Fraction(-1), -1
    for j, g in enumerate(gts):
      g = [Fraction(int(v)) for v in g]
      iw = max(Fraction(0), min(r[2], g[2]) - max(r[0], g[0]))
      ih = max(Fraction(0), min(r[3], g[3]) - max(r[1], g[1]))
      inter = iw * ih
      ra = max(Fraction(0), r[2] - r[0]) * max(Fraction(0), r[3] - r[1])
      ga = max(Fraction(0), g[2] - g[0]) * max(Fraction(0), g[3] - g[1])
      union = ra + ga - inter
      iou = inter / union if union > 0 else Fraction(0)
      if iou > best:
        best, best_j = iou, j
    if best_j < 0:
      labels.append(0), index.append(-1), ious.append(0.0)
      continue
    if best >= pos:
      labels.append(int(classes[best_j]) + 1)
    elif best < neg:
      labels.append(0)
    else:
      labels.append(-1)
    index.append(best_j)
    ious.append(float(best))
  return np.array(labels), np.array(index), np.array(ious)


def grid_boxes(rng, n, size=8):
  """Integer boxes on a small grid: many exact ties and IoUs that equal the thresholds."""
  a = rng.integers(0, size, (n, 2))
  b = a + rng.integers(1, size // 2 + 1, (n, 2))
  return np.concatenate([a, b], 1).astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_assign_rois_matches_exact_reference(seed):
  rng = np.random.default_rng(seed)
  rois = grid_boxes(rng, 400)
  m = [0, 1, 3, 6][seed]
  gts = grid_boxes(rng, m)
  if m >= 3:
    gts[2] = gts[0]  # an exact tie between GT 0 and GT 2: GT 0 wins
  classes = rng.integers(0, 5, m)
  for pos, neg in ((0.5, 0.35), (0.5, 0.5), (0.6, 0.1)):
    out = R.assign_rois(rois, gts, classes, positive_iou=pos, negative_iou=neg)
    labels, index, ious = reference_assign(rois, gts, classes, pos, neg)
    np.testing.assert_array_equal(out["label"], labels)
    np.testing.assert_array_equal(out["gt_index"], index)
    np.testing.assert_allclose(out["iou"], ious, rtol=1e-6)
    assert out["label"].dtype == np.int32 and out["reg_target"].dtype == np.float32
    np.testing.assert_array_equal(out["reg_target"][out["label"] <= 0], 0.0)
  # the grid hits every case
  labels, _, ious = reference_assign(rois, gts, classes, 0.5, 0.35)
  if m:
    assert {-1, 0}.issubset(set(labels)) and (labels > 0).any()


def test_assign_rois_exact_thresholds_and_ties():
  rois = np.array([[0, 0, 2, 1],      # IoU 1/2 with GT 0 -> positive (>= 0.5)
                   [0, 0, 20, 1],     # IoU 7/20 = 0.35 with GT 1 -> ignored (not < 0.35)
                   [0, 0, 21, 1],     # IoU 7/21 < 0.35 -> background
                   [50, 50, 60, 60]], float)  # GT 2 and 3 identical: the lower index wins
  gts = np.array([[0, 0, 1, 1], [0, 0, 7, 1], [50, 50, 60, 60], [50, 50, 60, 60]], float)
  out = R.assign_rois(rois, gts, [4, 1, 2, 3])
  np.testing.assert_array_equal(out["label"], [5, -1, 0, 3])
  np.testing.assert_array_equal(out["gt_index"], [0, 1, 1, 2])
  np.testing.assert_allclose(out["iou"], [0.5, 0.35, 1 / 3, 1.0], rtol=1e-7)


def test_assign_rois_without_ground_truth_is_all_background():
  rois = np.array([[0, 0, 10, 10], [5, 5, 30, 40]], float)
  out = R.assign_rois(rois, np.zeros((0, 4)), np.zeros((0,), int))
  np.testing.assert_array_equal(out["label"], [0, 0])
  np.testing.assert_array_equal(out["gt_index"], [-1, -1])
  np.testing.assert_array_equal(out["reg_target"], np.zeros((2, 4)))
  empty = R.assign_rois(np.zeros((0, 4)), [[0, 0, 1, 1]], [0])
  assert empty["label"].shape == (0,) and empty["reg_target"].shape == (0, 4)


def test_assign_rois_crowd_is_never_matched_and_ignores_background_inside_it():
  gts = np.array([[0, 0, 100, 100], [10, 10, 20, 20]], float)  # GT 0 is a crowd region
  rois = np.array([[0, 0, 100, 100],   # exactly the crowd box: would be positive, is ignored
                   [10, 10, 20, 21],   # the person inside the crowd: positive, GT 1
                   [40, 40, 60, 60],   # background inside the crowd -> ignored
                   [90, 90, 130, 130],  # 1/16 inside the crowd -> background
                   [200, 200, 210, 210]], float)
  out = R.assign_rois(rois, gts, [0, 2], gt_crowd=[True, False])
  np.testing.assert_array_equal(out["label"], [-1, 3, -1, 0, 0])
  assert out["gt_index"][1] == 1 and out["gt_index"][0] == 1  # crowd never the match
  only_crowd = R.assign_rois(rois, gts[:1], [0], gt_crowd=[True])
  np.testing.assert_array_equal(only_crowd["label"], [-1, -1, -1, 0, 0])
  np.testing.assert_array_equal(only_crowd["gt_index"], -1)


def test_regression_targets_decode_to_the_matched_ground_truth():
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 300, (8, 2))
  gts = np.concatenate([xy, xy + rng.uniform(4, 80, (8, 2))], 1)
  j = rng.integers(0, 8, 500)
  wh = gts[j, 2:] - gts[j, :2]
  rois = gts[j] + rng.normal(0, 0.12, (500, 4)) * np.concatenate([wh, wh], 1)  # mostly positives
  weights = (10.0, 10.0, 5.0, 5.0)
  out = R.assign_rois(rois, gts, np.arange(8), box_weights=weights)
  pos = out["label"] > 0
  assert 100 < pos.sum() < 500
  decoded = np.asarray(box_ops.decode(out["reg_target"][pos], rois[pos].astype(np.float32), weights))
  np.testing.assert_allclose(decoded, gts[out["gt_index"][pos]], atol=0.01)
  # and the convention written out: centres x1 + w/2, widths x2 - x1, dx = 10 (gx - rx) / rw, ...
  g, r = gts[out["gt_index"][pos]], rois[pos]
  gw, gh, rw, rh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1], r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
  expected = np.stack([10 * ((g[:, 0] + gw / 2) - (r[:, 0] + rw / 2)) / rw,
                       10 * ((g[:, 1] + gh / 2) - (r[:, 1] + rh / 2)) / rh,
                       5 * np.log(gw / rw), 5 * np.log(gh / rh)], 1)
  np.testing.assert_allclose(out["reg_target"][pos], expected, atol=2e-4)
  np.testing.assert_array_equal(out["reg_target"][~pos], 0.0)
  unit = R.assign_rois(rois, gts, np.arange(8), box_weights=(1.0, 2.0, 1.0, 0.5))
  np.testing.assert_allclose(unit["reg_target"][pos], expected * [0.1, 0.2, 0.2, 0.1], atol=2e-5)


def test_assign_rois_rejects_bad_arguments():
  with pytest.raises(ValueError, match="negative_iou"):
    R.assign_rois([[0, 0, 1, 1]], [[0, 0, 1, 1]], [0], positive_iou=0.3, negative_iou=0.4)
  with pytest.raises(ValueError, match="one row per object"):
    R.assign_rois([[0, 0, 1, 1]], [[0, 0, 1, 1]], [0, 1])
  with pytest.raises(ValueError, match=r"\[N, 4\]"):
    R.assign_rois([[0, 0, 1]], [[0, 0, 1, 1]], [0])


# ----------------------------------------------------------------------------- sample_rois
def test_sample_rois_fraction_exclusions_and_determinism():
  labels = np.array([1] * 60 + [3] * 40 + [0] * 500 + [-1] * 50)
  np.random.default_rng(0).shuffle(labels)
  a = {"label": labels}
  idx = R.sample_rois(a, np.random.default_rng(7), num=64, positive_fraction=0.25)
  assert len(idx) == 64 and len(set(idx.tolist())) == 64 and np.all(np.diff(idx) > 0)
  assert (labels[idx] > 0).sum() == 16 and (labels[idx] == 0).sum() == 48
  np.testing.assert_array_equal(idx, R.sample_rois(a, np.random.default_rng(7), num=64))
  assert not np.array_equal(idx, R.sample_rois(a, np.random.default_rng(8), num=64))
  idx = R.sample_rois(a, 3, num=10, positive_fraction=0.5)
  assert (labels[idx] > 0).sum() == 5 and (labels[idx] == 0).sum() == 5
  assert (labels[R.sample_rois(a, 3, num=20, positive_fraction=0.0)] == 0).all()
  assert (labels[R.sample_rois(a, 3, num=20, positive_fraction=1.0)] > 0).all()
  # too few positives: all of them, background fills up; too few RoIs: all non-ignored ones
  few = {"label": np.array([2, 2, 2] + [0] * 100 + [-1] * 5)}
  idx = R.sample_rois(few, 0, num=64, positive_fraction=0.25)
  assert len(idx) == 64 and set(np.flatnonzero(few["label"] > 0)) <= set(idx.tolist())
  tiny = {"label": np.array([0, -1, 1, 0, -1])}
  np.testing.assert_array_equal(R.sample_rois(tiny, 0, num=64), [0, 2, 3])
  # draws over the whole positive pool, not just its start
  seen = set()
  for s in range(80):
    seen.update(R.sample_rois(a, s, num=64).tolist())
  assert (labels[sorted(seen)] > 0).sum() == 100


# ----------------------------------------------------------------------------- crops
def gradient_image(h=60, w=80):
  """Pixel (r, c), centred on (c + .5, r + .5), holds linear functions of (c, r)."""
  r, c = np.mgrid[0:h, 0:w].astype(np.float64)
  image = np.stack([3 * c, 4 * r, 100 + c - r], -1).astype(np.uint8)
  return image, lambda x, y: np.stack([3 * (x - .5), 4 * (y - .5), 100 + (x - .5) - (y - .5)], -1)


@pytest.mark.parametrize("roi", [[10.3, 12.7, 30.1, 40.2],     # upsampled to 64 x 64
                                 [5.5, 3.25, 75.0, 55.5],      # shrunk in x, enlarged in y
                                 [20.0, 10.0, 21.0, 50.0]])    # 1 px wide
def test_crop_of_a_linear_image_is_the_linear_function_at_the_sample_centres(roi):
  image, f = gradient_image()
  hr = R.crop_resize(image, [roi], 64)[0]
  x1, y1, x2, y2 = roi
  u = np.arange(64) + 0.5
  xs, ys = np.meshgrid(x1 + u * (x2 - x1) / 64, y1 + u * (y2 - y1) / 64)
  np.testing.assert_allclose(hr.astype(float), f(xs, ys), atol=1.0)
  # non-square output: (height, width)
  out = R.crop_resize(image, [roi], (24, 40))[0]
  xs, ys = np.meshgrid(x1 + (np.arange(40) + .5) * (x2 - x1) / 40,
                       y1 + (np.arange(24) + .5) * (y2 - y1) / 24)
  np.testing.assert_allclose(out.astype(float), f(xs, ys), atol=1.0)


def test_crop_outside_the_image_is_zero_padded():
  image = np.empty((40, 40, 3), np.uint8)
  image[:] = (200, 100, 50)
  hr = R.crop_resize(image, [[-20, -20, 20, 20]], 64)[0]
  centres = -20 + (np.arange(64) + 0.5) * 40 / 64
  out_x, in_x = centres <= -0.5, centres >= 0.5
  assert out_x.sum() > 25 and in_x.sum() > 25
  np.testing.assert_array_equal(hr[out_x], 0)
  np.testing.assert_array_equal(hr[:, out_x], 0)
  inside = hr[np.ix_(in_x, in_x)].reshape(-1, 3)
  np.testing.assert_array_equal(inside, np.broadcast_to([200, 100, 50], inside.shape))


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_crop_reaching_outside_equals_the_crop_of_the_zero_padded_image(resample):
  """Bilinear: equal up to rounding. Bicubic overshoots, and Pillow clips its uint8 intermediate
  after a first pass whose direction (x or y first) it picks from the two sizes, so it is only
  close on average -- one reason the HR crop is bilinear."""
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
  pad = 200
  padded = np.zeros((50 + 2 * pad, 70 + 2 * pad, 3), np.uint8)
  padded[pad:pad + 50, pad:pad + 70] = image
  rois = np.array([[-10.5, -3.2, 20.0, 30.7], [60.2, 40.1, 95.0, 62.0], [-30, -30, 100, 90],
                   [30, 10, 31.5, 12], [100, 100, 140, 120]])
  got = R.crop_resize(image, rois, 32, resample=resample)
  want = R.crop_resize(padded, rois + pad, 32, resample=resample)
  diff = np.abs(got.astype(int) - want.astype(int))
  if resample == "bilinear":
    assert diff.max() <= 1
  else:
    assert diff.mean() < 0.25
  np.testing.assert_array_equal(got[-1], 0)  # entirely outside


def test_crop_hr_lr_shapes_and_lr_is_pil_bicubic_of_hr():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
  rois = np.array([[3.5, 4.0, 20.0, 30.0], [-5, -5, 70, 60], [10, 10, 12, 13]])
  hr, lr = R.crop_hr_lr(image, rois)
  assert hr.shape == (3, 64, 64, 3) and lr.shape == (3, 16, 16, 3)
  assert hr.dtype == np.uint8 and lr.dtype == np.uint8
  np.testing.assert_array_equal(hr, R.crop_resize(image, rois, 64, resample="bilinear"))
  for h, l in zip(hr, lr):
    np.testing.assert_array_equal(l, np.asarray(Image.fromarray(h).resize((16, 16), Image.BICUBIC)))
  # not a point sample: the LR of a 1-px checkerboard HR is flat grey
  checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
  flat = R.downsample_bicubic(np.repeat(checker[None, ..., None], 3, -1))
  assert np.abs(flat.astype(int) - 128).max() <= 2
  hr, lr = R.crop_hr_lr(image, rois, hr_size=32, scale=2)
  assert hr.shape == (3, 32, 32, 3) and lr.shape == (3, 16, 16, 3)
  hr, lr = R.crop_hr_lr(image, np.zeros((0, 4)))
  assert hr.shape == (0, 64, 64, 3) and lr.shape == (0, 16, 16, 3)
  with pytest.raises(ValueError, match="multiple"):
    R.crop_hr_lr(image, rois, hr_size=30)
  with pytest.raises(ValueError, match="positive width"):
    R.crop_resize(image, [[5, 5, 5, 9]], 8)


def test_mine_rois_one_image():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
  gts = np.array([[10, 10, 30, 40], [60, 50, 100, 90]], float)
  xy = rng.uniform([32, 0], [48, 80], (30, 2))  # background: between the two objects
  rois = np.concatenate([gts + rng.normal(0, 1.5, (2, 4)), np.concatenate([xy, xy + 10], 1),
                         [[50, 50, 50.5, 70]]])
  scores = rng.uniform(0, 1, len(rois))
  out = R.mine_rois(image, rois, scores, gts, [0, 6], rng=np.random.default_rng(3), num=8,
                    positive_fraction=0.5)
  k = len(out["label"])
  assert k == 8 and set(out) == {"hr", "lr", "label", "reg_target", "roi", "score", "iou"}
  assert out["hr"].shape == (k, 64, 64, 3) and out["lr"].shape == (k, 16, 16, 3)
  np.testing.assert_array_equal(np.sort(out["label"][out["label"] > 0]), [1, 7])
  assert (out["label"] >= 0).all() and (out["iou"][out["label"] > 0] >= 0.5).all()
  hr, _ = R.crop_hr_lr(image, out["roi"])
  np.testing.assert_array_equal(out["hr"], hr)
  row = [np.flatnonzero(np.all(np.isclose(rois, r, atol=1e-4), 1))[0] for r in out["roi"]]
  np.testing.assert_allclose(out["score"], scores[row], rtol=1e-6)
  every = R.mine_rois(image, rois, scores, gts, [0, 6], num=None)
  assert len(every["label"]) == len(rois) - 1  # all but the 0.5 px wide RoI
  np.testing.assert_array_equal(np.sort(every["label"])[-2:], [1, 7])
