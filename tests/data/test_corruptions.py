"""Tests for jaxdet.data.corruptions (AP-loss Table 3 corruptions)."""

import numpy as np
import pytest

from jaxdet.data import corruptions as R


def textured(h=60, w=80, seed=0):
  return np.random.default_rng(seed).integers(1, 256, size=(h, w, 3), dtype=np.uint8)


def test_patch_region_hand_computed():
  # box 20 wide, 10 high, centre (30, 25): patch 10 x 5 at x 25..35, y 22..27 (floor 22.5)
  assert R.patch_region([20, 20, 40, 30], 60, 80) == (22, 27, 25, 35)
  # odd sizes: box 7 x 9 at (0, 0): patch 3.5 -> 4 wide, 4.5 -> 5 high (half up)
  # centre (3.5, 4.5): x0 = floor(1.5) = 1, y0 = floor(2.0) = 2
  assert R.patch_region([0, 0, 7, 9], 60, 80) == (2, 7, 1, 5)
  assert R.patch_region([5, 5, 5, 9], 60, 80) is None  # no area
  # partly outside the image: clipped
  assert R.patch_region([70, 50, 100, 70], 60, 80) == (55, 60, 77, 80)


def test_black_patch_zeroes_exactly_the_patches():
  img = textured()  # values >= 1 so zeros can only come from the patch
  boxes = np.array([[20, 20, 40, 30], [50, 5, 70, 45]], float)
  out = R.black_patch(img, boxes, np.random.default_rng(0))
  expected = img.copy()
  expected[22:27, 25:35] = 0
  expected[15:35, 55:65] = 0  # box 2: 20 x 40, centre (60, 25) -> 10 x 20 patch
  np.testing.assert_array_equal(out, expected)
  assert np.all(img > 0)  # input untouched
  np.testing.assert_array_equal(R.black_patch(img, np.zeros((0, 4)), None), img)


@pytest.mark.parametrize('mode,flip', [
    ('horizontal', np.fliplr), ('vertical', np.flipud),
    ('both', lambda a: np.flipud(np.fliplr(a)))])
def test_flipped_patch_fixed_modes(mode, flip):
  img = textured()
  out = R.flipped_patch(img, [[20, 20, 40, 30]], np.random.default_rng(0), mode=mode)
  expected = img.copy()
  expected[22:27, 25:35] = flip(img[22:27, 25:35])
  np.testing.assert_array_equal(out, expected)


def test_flipped_patch_random_mode_draws_all_three():
  img = textured()
  rng = np.random.default_rng(1)
  region = img[22:27, 25:35]
  flips = {'h': np.fliplr(region), 'v': np.flipud(region),
           'b': np.flipud(np.fliplr(region))}
  seen = set()
  for _ in range(30):
    patch = R.flipped_patch(img, [[20, 20, 40, 30]], rng)[22:27, 25:35]
    hits = [k for k, f in flips.items() if np.array_equal(patch, f)]
    assert len(hits) == 1
    seen.add(hits[0])
  assert seen == {'h', 'v', 'b'}
  # deterministic with a seed
  a = R.flipped_patch(img, [[20, 20, 40, 30], [0, 0, 30, 30]], np.random.default_rng(7))
  b = R.flipped_patch(img, [[20, 20, 40, 30], [0, 0, 30, 30]], np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)


def _find_source(img, patch, box):
  """All top-left positions of an exact copy of ``patch`` in ``img`` (brute force)."""
  ph, pw = patch.shape[:2]
  found = []
  for y in range(img.shape[0] - ph + 1):
    for x in range(img.shape[1] - pw + 1):
      if np.array_equal(img[y:y + ph, x:x + pw], patch):
        found.append((y, x))
  return found


def test_random_patch_copies_a_region_outside_the_box():
  img = textured(40, 50, seed=3)  # random texture: a window occurs once
  box = [10, 8, 30, 28]
  rng = np.random.default_rng(0)
  positions = set()
  for _ in range(6):
    out = R.random_patch(img, [box], rng)
    y0, y1, x0, x1 = R.patch_region(box, 40, 50)
    mask = np.zeros(img.shape[:2], bool)
    mask[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(out[~mask], img[~mask])  # nothing else changes
    found = _find_source(img, out[y0:y1, x0:x1], box)
    assert len(found) == 1
    sy, sx = found[0]
    ph, pw = y1 - y0, x1 - x0
    # the source window does not overlap the box
    assert sx + pw <= box[0] or sx >= box[2] or sy + ph <= box[1] or sy >= box[3]
    positions.add((sy, sx))
  assert len(positions) > 1  # it is random
  a = R.random_patch(img, [box], np.random.default_rng(5))
  b = R.random_patch(img, [box], np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)


def test_random_patch_when_box_covers_the_image():
  img = textured(20, 20, seed=4)
  out = R.random_patch(img, [[0, 0, 20, 20]], np.random.default_rng(0))
  assert out.shape == img.shape and out.dtype == np.uint8
  # least overlap: a 10 x 10 window in a corner is the only choice family (overlap 100
  # everywhere), so the patch is some 10 x 10 window of the image
  assert _find_source(img, out[5:15, 5:15], None)


def test_gaussian_noise_variance_and_determinism():
  img = np.full((400, 500, 3), 128, np.uint8)
  out = R.gaussian_noise(img, np.random.default_rng(0))
  diff = out.astype(np.float64) / 255 - 128 / 255
  assert abs(diff.mean()) < 1e-3
  assert diff.var() == pytest.approx(0.01, rel=0.02)
  out2 = R.gaussian_noise(img, np.random.default_rng(0))
  np.testing.assert_array_equal(out, out2)
  assert not np.array_equal(out, R.gaussian_noise(img, np.random.default_rng(1)))
  # clipping keeps uint8 range; extreme pixels saturate
  white = R.gaussian_noise(np.full((50, 50), 255, np.uint8), np.random.default_rng(0))
  assert white.dtype == np.uint8 and white.max() == 255
  np.testing.assert_array_equal(R.gaussian_noise(img, np.random.default_rng(0), 0.0), img)


def test_corruptions_common_signature():
  img = textured()
  boxes = np.array([[20, 20, 40, 30]], float)
  assert set(R.CORRUPTIONS) == {'clean', 'black_patch', 'random_patch', 'flipped_patch',
                                'gaussian_noise'}
  for name, fn in R.CORRUPTIONS.items():
    out = fn(img, boxes, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8, name
    if name == 'clean':
      np.testing.assert_array_equal(out, img)
    else:
      assert not np.array_equal(out, img), name
  assert R.get_corruption('black_patch') is R.black_patch


def test_bad_arguments():
  img = textured()
  with pytest.raises(ValueError, match='uint8'):
    R.black_patch(img.astype(np.float32), [[0, 0, 4, 4]])
  with pytest.raises(ValueError, match=r'\[N, 4\]'):
    R.black_patch(img, [[0, 0, 4]])
  with pytest.raises(ValueError, match='Generator'):
    R.random_patch(img, [[0, 0, 4, 4]], 0)
  with pytest.raises(ValueError, match='horizontal'):
    R.flipped_patch(img, [[0, 0, 4, 4]], np.random.default_rng(0), mode='diagonal')
  with pytest.raises(ValueError, match='valid ones'):
    R.get_corruption('blur')
