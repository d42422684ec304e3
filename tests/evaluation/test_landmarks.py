"""Landmark metrics (jaxdet.evaluation.landmarks) against hand-computed values."""
import math

import numpy as np
import pytest

from jaxdet.evaluation import landmarks as lm


def test_nrmse_known_displacement_and_invisible_excluded():
  gt = np.zeros((2, 3, 2))
  gt[:, :, 0] = [10, 20, 30]
  pred = gt.copy()
  pred[0, :, 0] += 3.0            # every point off by (3, 4): distance 5
  pred[0, :, 1] += 4.0
  pred[1, 0] = [100.0, 100.0]     # a huge error on an invisible point
  pred[1, 1] += [0.0, 2.0]        # 2 px
  vis = np.array([[True, True, True], [False, True, True]])
  err = lm.nrmse_per_image(pred, gt, vis, np.array([50.0, 10.0]))
  np.testing.assert_allclose(err, [5 / 50, (2 + 0) / 2 / 10])
  # no visible point: NaN, counted as excluded downstream
  err2 = lm.nrmse_per_image(pred, gt, np.zeros((2, 3), bool), np.array([1.0, 1.0]))
  assert np.all(np.isnan(err2))
  with pytest.raises(ValueError, match="normaliser"):
    lm.nrmse_per_image(pred, gt, vis, np.array([0.0, 1.0]))


def test_auc_and_failure_by_hand():
  errors = [0.01, 0.03, 0.05, 0.1]
  # CED step function on [0, 0.07]: 0 up to .01, 1/4 to .03, 2/4 to .05, 3/4 to .07
  area = 0.25 * 0.02 + 0.5 * 0.02 + 0.75 * 0.02
  assert lm.auc(errors, 0.07) == pytest.approx(100 * area / 0.07)   # 42.857...
  assert lm.auc(errors, 0.07) == pytest.approx(300 / 7)
  assert lm.auc(errors + [np.nan], 0.07) == pytest.approx(300 / 7)   # NaN left out
  assert lm.failure_rate(errors, 0.07) == pytest.approx(25.0)
  assert lm.failure_rate(errors, 0.01) == pytest.approx(75.0)        # 0.01 itself is no failure
  assert lm.auc([0.0, 0.0], 0.08) == pytest.approx(100.0)
  assert lm.auc([0.5], 0.08) == pytest.approx(0.0)
  t, f = lm.ced(errors, 0.08, num=9)
  np.testing.assert_allclose(t, np.linspace(0, 0.08, 9))
  np.testing.assert_allclose(f, [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75])
  # the exact AUC agrees with a finely sampled CED integral
  t, f = lm.ced(errors, 0.07, num=70001)
  assert 100 * np.trapezoid(f, t) / 0.07 == pytest.approx(lm.auc(errors, 0.07), abs=1e-2)


def test_normalisers_by_hand():
  rng = np.random.default_rng(0)
  gt = rng.uniform(0, 100, (2, 68, 2))
  boxes = np.array([[0, 0, 40, 90], [10, 10, 30, 60]], np.float64)
  np.testing.assert_allclose(lm.normalisers(gt, boxes, "68", "box"), [60.0, math.sqrt(1000)])
  left, right = gt[:, 36:42].mean(1), gt[:, 42:48].mean(1)
  np.testing.assert_allclose(lm.normalisers(gt, None, "68", "inter_pupil"),
                             np.linalg.norm(left - right, axis=1))
  np.testing.assert_allclose(lm.normalisers(gt, None, "68", "inter_ocular"),
                             np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1))
  g19 = rng.uniform(0, 100, (1, 19, 2))
  assert lm.normalisers(g19, None, "19", "inter_pupil")[0] == pytest.approx(
      np.linalg.norm(g19[0, 7] - g19[0, 10]))
  vis = np.ones((1, 19), bool)
  vis[0, 7] = False
  assert np.isnan(lm.normalisers(g19, None, "19", "inter_pupil", visible=vis)[0])
  with pytest.raises(ValueError, match="outer eye corners"):
    lm.normalisers(rng.uniform(0, 1, (1, 5, 2)), None, "5", "inter_ocular")
  with pytest.raises(ValueError, match="boxes"):
    lm.normalisers(gt, None, "68", "box")
  with pytest.raises(ValueError, match="unknown normaliser"):
    lm.normalisers(gt, boxes, "68", "bogus")


def test_landmark_metrics_summary():
  b = 4
  gt = np.zeros((b, 5, 2))
  gt[:, :, 0] = np.arange(5) * 10.0
  boxes = np.tile(np.array([0, 0, 100, 100.0]), (b, 1))   # face size 100
  shifts = np.array([1.0, 3.0, 5.0, 10.0])                # -> errors .01 .03 .05 .10
  pred = gt.copy()
  pred[..., 1] += shifts[:, None]
  vis = np.ones((b, 5), bool)
  m = lm.landmark_metrics(pred, gt, vis, boxes, "5", return_errors=True)
  np.testing.assert_allclose(m["errors"], [0.01, 0.03, 0.05, 0.1])
  assert all(isinstance(v, (int, float)) for k, v in m.items() if k != "errors")
  # the 5-point default is the face size: halving the boxes doubles every error
  m_half = lm.landmark_metrics(pred, gt, vis, boxes / 2, "5")
  assert m_half["nrmse"] == pytest.approx(2 * 100 * 0.0475)
  assert m["nrmse"] == pytest.approx(100 * 0.0475)
  assert m["nrmse_std"] == pytest.approx(100 * np.std([0.01, 0.03, 0.05, 0.1]))
  assert m["auc@0.07"] == pytest.approx(300 / 7)
  assert m["auc@0.08"] == pytest.approx(100 * (0.07 + 0.05 + 0.03) / (4 * 0.08))
  assert m["failure@0.07"] == pytest.approx(25.0) and m["failure@0.08"] == pytest.approx(25.0)
  assert m["num_images"] == 4 and m["num_excluded"] == 0
  vis[3] = False
  m2 = lm.landmark_metrics(pred, gt, vis, boxes, "5")
  assert m2["num_images"] == 3 and m2["num_excluded"] == 1
  assert m2["nrmse"] == pytest.approx(100 * 0.03)
  assert lm.summary_line(m2, "face_size").startswith("NRMSE 3.00 +- ")


def test_ced_plot_png(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "ced.png"
  arr = lm.ced_plot_png({"S1": rng.uniform(0.02, 0.2, 200), "S2": rng.uniform(0, 0.08, 200),
                         "HR-LD": rng.uniform(0, 0.05, 200)}, path)
  assert path.exists() and arr.dtype == np.uint8 and arr.shape == (480, 640, 3)
  from PIL import Image
  np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), arr)
  # the three curve colours are drawn
  for colour in lm._COLOURS[:3]:
    assert np.any(np.all(arr == np.array(colour, np.uint8), axis=-1))
