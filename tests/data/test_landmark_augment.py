"""Similarity augmentation of faces: pixels and landmarks move together (landmark_augment)."""
import math

import numpy as np
import pytest

from jaxdet.data import landmark_augment as la


def blob(h, w, x, y, sigma=2.0, amp=255.0):
  """Gaussian blob at continuous (x, y); pixel (i, j) sampled at its centre (j + .5, i + .5)."""
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  return amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


def centroid(img, x=None, y=None, radius=None):
  """Intensity-weighted centroid in continuous coordinates (optionally in a window)."""
  img = np.asarray(img, np.float64)
  if img.ndim == 3:
    img = img.mean(-1)
  yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5
  wgt = img.copy()
  if radius is not None:
    wgt[(xx - x) ** 2 + (yy - y) ** 2 > radius ** 2] = 0
  return np.array([(wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()])


def test_blob_follows_transformed_point_uint8():
  rng = np.random.default_rng(0)
  for trial in range(12):
    p = rng.uniform(24, 40, 2)
    img = np.repeat(np.round(blob(64, 64, *p, sigma=2.5))[..., None], 3, -1).astype(np.uint8)
    m = la.random_similarity(rng, 64)
    out, pts = la.warp_face(img, p[None], m)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_allclose(pts[0], la.transform_points(m, p[None])[0])
    c = centroid(out)
    # measured ~0.01 px; a half-pixel convention slip gives 0.1-0.4 px on these draws
    assert np.linalg.norm(c - pts[0]) < 0.05, (trial, c, pts[0])


def test_blob_follows_float_image_and_out_size():
  # float path (PIL mode 'F') and an output of another size: a 2x zoom into 32 x 48
  p = np.array([13.3, 9.8])
  img = blob(24, 20, *p, sigma=1.5)
  m = la.similarity_matrix(24, scale=1.0)   # identity about the centre
  m = np.array([[2.0, 0, 0], [0, 2.0, 0]]) @ np.vstack([m, [0, 0, 1]])
  out, pts = la.warp_face(img, p[None], m, out_size=(48, 40))
  assert out.shape == (48, 40) and out.dtype == np.float32
  np.testing.assert_allclose(pts[0], 2 * p, atol=1e-5)
  assert np.linalg.norm(centroid(out) - pts[0]) < 0.1


def test_identity_leaves_image_unchanged():
  rng = np.random.default_rng(1)
  img = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
  eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
  out, pts = la.warp_face(img, np.array([[3.0, 4.0]]), eye)
  np.testing.assert_array_equal(out, img)
  np.testing.assert_allclose(pts, [[3.0, 4.0]])
  assert la.warp_face(img, None, eye)[1] is None
  np.testing.assert_allclose(la.similarity_matrix((17, 23)), eye, atol=1e-12)


def test_similarity_by_hand_and_ranges():
  # 90 deg about the centre (32, 32) of a 64 px image: (42, 32) -> (32, 42) (y down)
  m = la.similarity_matrix(64, scale=1.0, rotation_deg=90.0)
  np.testing.assert_allclose(la.transform_points(m, [[42.0, 32.0]]), [[32.0, 42.0]], atol=1e-5)
  m = la.similarity_matrix(64, scale=2.0, tx=3.0, ty=-1.0)
  np.testing.assert_allclose(la.transform_points(m, [[34.0, 32.0]]), [[39.0, 31.0]], atol=1e-5)
  rng = np.random.default_rng(2)
  for size in (128, 32):
    for _ in range(200):
      m = la.random_similarity(rng, size)
      a = m[:, :2]
      s = math.sqrt(np.linalg.det(a))
      assert 0.9 - 1e-9 <= s <= 1.1 + 1e-9
      assert abs(math.degrees(math.atan2(a[1, 0], a[0, 0]))) <= 30 + 1e-9
      c = np.array([size / 2, size / 2])
      t = la.transform_points(m, c[None])[0] - c        # the centre moves by the translation
      assert np.all(np.abs(t) <= 20 * size / 128 + 1e-4)
  with pytest.raises(ValueError, match="scale"):
    la.random_similarity(rng, 64, scale=(1.2, 1.0))


def test_transform_box_keeps_face_size():
  m = la.similarity_matrix(100, scale=1.1, rotation_deg=20.0, tx=4.0)
  box = np.array([20, 30, 60, 90], np.float32)
  out = la.transform_box(m, box)
  w, h = out[2:] - out[:2]
  assert math.sqrt(w * h) == pytest.approx(1.1 * math.sqrt(40 * 60), rel=1e-5)
  np.testing.assert_allclose((out[:2] + out[2:]) / 2,
                             la.transform_points(m, [[40.0, 60.0]])[0], atol=1e-4)
