"""jaxdet.ops.anchors vs a loop reference and hand-computed values."""
import math

import numpy as np
import pytest

from jaxdet.ops import anchors as A


def ref_anchors(image_hw, min_level, max_level, anchor_size, scales, ratios):
  out = []
  for level in range(min_level, max_level + 1):
    stride = 2 ** level
    h = math.ceil(image_hw[0] / stride)
    w = math.ceil(image_hw[1] / stride)
    for y in range(h):
      for x in range(w):
        cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
        for s in scales:
          for r in ratios:
            bw = anchor_size * stride * s / math.sqrt(r)
            bh = anchor_size * stride * s * math.sqrt(r)
            out.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
  return np.array(out)


@pytest.mark.parametrize("image_size,levels,scales", [
    ((70, 45), (3, 5), A.DEFAULT_SCALES),
    (64, (2, 4), (1.0, 2 ** 0.5)),
])
def test_generate_anchors_matches_loop_reference(image_size, levels, scales):
  hw = (image_size, image_size) if isinstance(image_size, int) else image_size
  got = A.generate_anchors(image_size, *levels, anchor_size=4.0, scales=scales)
  want = ref_anchors(hw, *levels, 4.0, scales, A.DEFAULT_ASPECT_RATIOS)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_feature_shapes_and_slices():
  assert A.feature_shapes((800, 1333), 3, 7) == [(100, 167), (50, 84), (25, 42), (13, 21), (7, 11)]
  assert A.feature_shapes(512, 3, 7) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
  k = A.num_anchors_per_location()
  assert k == 9 and A.num_anchors_per_location((1.0, 2 ** 0.5)) == 6
  sl = A.level_slices((800, 1333), 3, 7, k)
  assert sl[0] == (0, 100 * 167 * 9) and sl[-1][1] == A.generate_anchors((800, 1333)).shape[0]
  assert all(a[1] == b[0] for a, b in zip(sl, sl[1:]))


def test_base_sizes_and_order():
  anchors = A.generate_anchors(512)
  sl = A.level_slices(512, 3, 7, 9)
  for level, (start, _) in zip(range(3, 8), sl):
    first = anchors[start:start + 9]
    w, h = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    # k = 1: scale 2^0, ratio 1 -> square of side anchor_size * 2**level
    assert w[1] == pytest.approx(4 * 2 ** level) and h[1] == pytest.approx(4 * 2 ** level)
    np.testing.assert_allclose(h / w, np.tile([0.5, 1.0, 2.0], 3), rtol=1e-5)  # ratios inner
    np.testing.assert_allclose(np.sqrt(w * h)[::3] / (4 * 2 ** level), A.DEFAULT_SCALES, rtol=1e-5)
    centre = (first[0, :2] + first[0, 2:]) / 2
    np.testing.assert_allclose(centre, [2 ** level / 2] * 2)
  # second location of P3 is x + 1 (row-major over (y, x))
  np.testing.assert_allclose((anchors[9, 0] + anchors[9, 2]) / 2, 1.5 * 8)


def test_bad_arguments():
  with pytest.raises(ValueError, match="min_level"):
    A.feature_shapes(512, 5, 3)
  with pytest.raises(ValueError, match="image_size"):
    A.generate_anchors((0, 10))
  with pytest.raises(ValueError, match="aspect_ratios"):
    A.generate_anchors(64, aspect_ratios=())
  with pytest.raises(ValueError, match="num_per_loc"):
    A.level_slices(64, 3, 4, 0)
