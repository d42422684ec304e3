"""Gaussian landmark heatmaps and their sub-pixel decoding (jaxdet.ops.heatmaps)."""
import math

import jax
import numpy as np
import pytest

from jaxdet.ops.heatmaps import decode_heatmaps, gaussian_heatmaps


@pytest.mark.parametrize("size", [32, 128])
def test_encode_decode_round_trip_subpixel(size):
  rng = np.random.default_rng(size)
  b, n = 3, 7
  pts = rng.uniform(4.0, size - 4.0, (b, n, 2)).astype(np.float32)
  vis = np.ones((b, n), bool)
  maps = jax.jit(gaussian_heatmaps, static_argnums=(2, 3))(pts, vis, size, size)
  assert maps.shape == (b, size, size, n + 1) and maps.dtype == np.float32
  dec, peak = jax.jit(decode_heatmaps, static_argnums=1)(maps, n)
  dec = np.asarray(dec)
  assert np.abs(dec - pts).max() < 0.02, np.abs(dec - pts).max()
  # integer decoding alone would be off by up to 0.5 px: the refinement matters
  assert np.all(np.asarray(peak) > math.exp(-0.5 / 8) - 1e-6)


def test_hand_computed_value():
  # landmark at (10.3, 5.7), sigma 2: cell (row 4, col 12) has centre (12.5, 4.5)
  maps = np.asarray(gaussian_heatmaps(np.array([[[10.3, 5.7]]]), np.array([[True]]), 16, 20,
                                      sigma=2.0, background=False))
  assert maps.shape == (1, 16, 20, 1)
  expected = math.exp(-((12.5 - 10.3) ** 2 + (4.5 - 5.7) ** 2) / 8.0)
  assert maps[0, 4, 12, 0] == pytest.approx(expected, rel=1e-6)
  # a landmark exactly at a cell centre gives that cell 1
  m2 = np.asarray(gaussian_heatmaps(np.array([[[3.5, 7.5]]]), np.array([[True]]), 16, 16))
  assert m2[0, 7, 3, 0] == pytest.approx(1.0)
  assert m2[0, 7, 3, 0] == m2[..., 0].max()


def test_invisible_zero_and_background():
  pts = np.array([[[5.0, 6.0], [np.nan, np.nan], [20.2, 11.1]]], np.float32)
  vis = np.array([[True, False, True]])
  maps = np.asarray(gaussian_heatmaps(pts, vis, 24, 24))
  assert np.all(np.isfinite(maps))
  assert np.all(maps[..., 1] == 0)
  np.testing.assert_allclose(maps[..., 3], 1.0 - maps[..., :3].max(-1), atol=1e-7)
  assert maps[..., 3].min() < 0.05 and maps[..., 3].max() == pytest.approx(1.0)
  # no landmarks: background all ones
  empty = np.asarray(gaussian_heatmaps(np.zeros((2, 0, 2)), np.zeros((2, 0), bool), 8, 8))
  assert empty.shape == (2, 8, 8, 1) and np.all(empty == 1)


def test_decode_ignores_background_and_handles_borders():
  pts = np.array([[[0.3, 0.2], [15.5, 9.5]]], np.float32)   # first: in the corner cell
  maps = gaussian_heatmaps(pts, np.ones((1, 2), bool), 16, 16)
  dec, peak = decode_heatmaps(maps, num_points=2)
  dec = np.asarray(dec)
  assert dec.shape == (1, 2, 2)
  np.testing.assert_allclose(dec[0, 0], [0.5, 0.5])   # border: falls back to the cell centre
  np.testing.assert_allclose(dec[0, 1], [15.5, 9.5], atol=1e-3)
  # all channels: the background's argmax is far from every landmark
  dec_all, _ = decode_heatmaps(maps)
  assert dec_all.shape == (1, 3, 2)
  # flat / non-positive maps: integer position, no NaN
  flat = np.zeros((1, 8, 8, 1), np.float32)
  d, p = decode_heatmaps(flat)
  assert np.all(np.isfinite(np.asarray(d))) and float(p[0, 0]) == 0.0
  with pytest.raises(ValueError, match="num_points"):
    decode_heatmaps(maps, num_points=4)
