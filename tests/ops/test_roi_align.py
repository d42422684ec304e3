"""jaxdet.ops.roi_align vs a slow plain-numpy RoIAlign written from torchvision's definition."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import roi_align as RA

STATIC = ("output_size", "sampling_ratio", "aligned", "method", "size", "min_level",
          "canonical_size", "canonical_level")


def jitted(fn):
  """``fn`` under jax.jit with its configuration static (checks jit-compatibility)."""
  return jax.jit(fn, static_argnames=[a for a in STATIC if a in fn.__code__.co_varnames])


roi_align = jitted(RA.roi_align)
multilevel = jitted(RA.multilevel_roi_align)
crop_and_resize = jitted(RA.crop_and_resize)
METHODS = ("gather", "matmul")


# ------------------------------------------------------------------------------- numpy reference
def ref_bilinear_taps(height, width, y, x):
  """torchvision's bilinear_interpolate as a list of (row, col, weight)."""
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return []
  y, x = max(y, 0.0), max(x, 0.0)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_low = y_high = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_low = x_high = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1.0 - ly, 1.0 - lx
  return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx),
          (y_high, x_high, ly * lx)]


def ref_roi_align(feats, boxes, out_hw, scale, ratio, aligned=True):
  """Loops over images, RoIs, bins and sample points. Returns the pooled ``[B, R, oh, ow, C]``
  (float64) and d(sum of outputs)/d(features) per cell ``[B, H, W]`` (the same for every
  channel): the accumulated bilinear weights."""
  feats = np.asarray(feats, np.float64)
  boxes = np.asarray(boxes, np.float64)
  nb, height, width, channels = feats.shape
  out_h, out_w = out_hw
  out = np.zeros((nb, boxes.shape[1], out_h, out_w, channels))
  grad = np.zeros((nb, height, width))
  offset = 0.5 if aligned else 0.0
  for b in range(nb):
    for r in range(boxes.shape[1]):
      x1, y1, x2, y2 = boxes[b, r]
      start_x, start_y = x1 * scale - offset, y1 * scale - offset
      roi_w, roi_h = x2 * scale - offset - start_x, y2 * scale - offset - start_y
      if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
      bin_w, bin_h = roi_w / out_w, roi_h / out_h
      count = ratio * ratio
      for ph in range(out_h):
        for pw in range(out_w):
          acc = np.zeros(channels)
          for iy in range(ratio):
            y = start_y + ph * bin_h + (iy + 0.5) * bin_h / ratio
            for ix in range(ratio):
              x = start_x + pw * bin_w + (ix + 0.5) * bin_w / ratio
              for row, col, w in ref_bilinear_taps(height, width, y, x):
                acc += w * feats[b, row, col]
                grad[b, row, col] += w / count
          out[b, r, ph, pw] = acc / count
  return out, grad


def random_boxes(rng, nb, height, width, stride):
  """Inside, partly outside, tiny (< 1 px), empty and fully outside boxes (image pixels)."""
  img_h, img_w = height * stride, width * stride
  rows = []
  for _ in range(nb):
    x1 = rng.uniform(0, img_w * 0.7, 3)
    y1 = rng.uniform(0, img_h * 0.7, 3)
    x2, y2 = x1 + rng.uniform(2, img_w * 0.3, 3), y1 + rng.uniform(2, img_h * 0.3, 3)
    inside = np.stack([x1, y1, x2, y2], 1)
    extra = [[-5.0, -3.0, 0.4 * img_w, 0.5 * img_h],              # over the top-left corner
             [0.6 * img_w, 0.5 * img_h, img_w + 7.0, img_h + 9.0],  # past the bottom-right
             [-0.8 * stride, 2.0, 1.5 * stride, 5.0],               # samples in [-1, 0)
             [3.2, 4.1, 3.7, 4.5],                                  # tiny: 0.5 x 0.4 px
             [5.0, 5.0, 5.0, 5.0],                                  # empty
             [img_w + 20.0, 1.0, img_w + 40.0, 9.0]]                # fully outside
    rows.append(np.concatenate([inside, np.asarray(extra)]))
  return np.stack(rows).astype(np.float32)


# ------------------------------------------------------------------------------- RoIAlign
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ratio,out_hw,stride,aligned", [
    (1, (3, 4), 2, True), (2, (2, 2), 1, True), (3, (4, 3), 2, True), (2, (3, 4), 2, False)])
def test_matches_numpy_reference(method, ratio, out_hw, stride, aligned):
  rng = np.random.default_rng(ratio * 10 + stride)
  feats = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  boxes = random_boxes(rng, 2, 9, 11, stride)
  got = roi_align(feats, boxes, out_hw, spatial_scale=1.0 / stride, sampling_ratio=ratio,
                  aligned=aligned, method=method)
  want, _ = ref_roi_align(feats, boxes, out_hw, 1.0 / stride, ratio, aligned)
  assert got.shape == want.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  assert np.abs(want[:, -1]).max() == 0 and np.abs(want[:, 3]).max() > 0  # outside: 0; corner: not


@pytest.mark.parametrize("method", METHODS)
def test_linear_ramp_by_hand(method):
  """F[r, c] = 2 c + 3 r + 1 at stride 2. Box (4, 6, 10, 12) spans feature coordinates
  x in [1.5, 4.5], y in [2.5, 5.5] (aligned: x * 0.5 - 0.5); bilinear is exact on a ramp."""
  rows, cols = np.mgrid[0:8, 0:8]
  feats = (2.0 * cols + 3.0 * rows + 1.0)[None, :, :, None].astype(np.float32)
  boxes = np.array([[[4.0, 6.0, 10.0, 12.0]]], np.float32)
  one = roi_align(feats, boxes, 1, spatial_scale=0.5, sampling_ratio=2, method=method)
  assert float(one[0, 0, 0, 0, 0]) == pytest.approx(19.0)  # centre (7, 9) -> (3, 4): 6 + 12 + 1
  # 2 x 2 bins of 1.5 cells: centres x = 2.25, 3.75 and y = 3.25, 4.75.
  four = roi_align(feats, boxes, 2, spatial_scale=0.5, sampling_ratio=3, method=method)
  np.testing.assert_allclose(np.asarray(four)[0, 0, :, :, 0], [[15.25, 18.25], [19.75, 22.75]],
                             rtol=1e-6)
  legacy = roi_align(feats, boxes, 1, spatial_scale=0.5, aligned=False, method=method)
  assert float(legacy[0, 0, 0, 0, 0]) == pytest.approx(21.5)  # no offset: (3.5, 4.5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ratio", [1, 2])
def test_gradient_is_accumulated_bilinear_weights(method, ratio):
  rng = np.random.default_rng(3)
  feats = rng.normal(size=(2, 7, 8, 2)).astype(np.float32)
  boxes = random_boxes(rng, 2, 7, 8, 2)
  grad = jax.grad(lambda f: roi_align(f, boxes, (3, 2), spatial_scale=0.5, sampling_ratio=ratio,
                                      method=method).sum())(feats)
  _, want = ref_roi_align(feats, boxes, (3, 2), 0.5, ratio)
  np.testing.assert_allclose(np.asarray(grad), np.repeat(want[..., None], 2, -1), rtol=1e-5,
                             atol=1e-6)
  box_grad = jax.grad(lambda b: roi_align(feats, b, 2, method=method).sum())(boxes)
  assert np.all(np.asarray(box_grad) == 0)  # proposals are constants, as in torchvision


def test_matches_torchvision():
  torch = pytest.importorskip("torch")
  tv_ops = pytest.importorskip("torchvision.ops")
  rng = np.random.default_rng(4)
  feats = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  boxes = random_boxes(rng, 2, 9, 11, 4)
  index = np.repeat(np.arange(2, dtype=np.float32), boxes.shape[1])[:, None]
  rois = torch.from_numpy(np.concatenate([index, boxes.reshape(-1, 4)], 1))
  for aligned in (True, False):
    want = tv_ops.roi_align(torch.from_numpy(feats).permute(0, 3, 1, 2), rois, (5, 4), 0.25, 2,
                            aligned).permute(0, 2, 3, 1).numpy().reshape(2, -1, 5, 4, 3)
    for method in METHODS:
      got = roi_align(feats, boxes, (5, 4), spatial_scale=0.25, aligned=aligned, method=method)
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_dtypes():
  rng = np.random.default_rng(5)
  feats = rng.normal(size=(1, 6, 6, 4)).astype(np.float32)
  boxes = np.array([[[1.0, 2.0, 9.0, 11.0], [0.0, 0.0, 12.0, 12.0]]], np.float32)
  ref = roi_align(feats, boxes, 3, spatial_scale=0.5)
  for method in METHODS:
    half = roi_align(jnp.asarray(feats, jnp.bfloat16), boxes, 3, spatial_scale=0.5, method=method)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), ref, rtol=2e-2, atol=2e-2)
  ints = roi_align((feats * 10).astype(np.int32), boxes, 3, spatial_scale=0.5)
  assert ints.dtype == jnp.float32


def test_argument_checks():
  feats = np.zeros((2, 4, 4, 1), np.float32)
  boxes = np.zeros((2, 3, 4), np.float32)
  with pytest.raises(ValueError, match="adaptive"):
    RA.roi_align(feats, boxes, 2, sampling_ratio=0)
  with pytest.raises(ValueError, match=r"\[B=2, R, 4\]"):
    RA.roi_align(feats, boxes[:1], 2)
  with pytest.raises(ValueError, match="NHWC"):
    RA.roi_align(feats[0], boxes, 2)
  with pytest.raises(ValueError, match="output_size"):
    RA.roi_align(feats, boxes, (0, 2))
  with pytest.raises(ValueError, match="method"):
    RA.roi_align(feats, boxes, 2, method="loop")
  with pytest.raises(ValueError, match="consecutive"):
    RA.multilevel_roi_align({2: feats, 4: feats}, boxes, 2)
  assert RA.roi_align(feats, np.zeros((2, 0, 4), np.float32), 2).shape == (2, 0, 2, 2, 1)


# ------------------------------------------------------------------------------- FPN
def test_fpn_levels_by_hand():
  def square(side, x=10.0):
    return [x, x, x + side, x + side]
  boxes = np.array([square(224), square(112), square(448), square(4), square(5000),
                    [0, 0, 112, 448], square(223.5), square(0), [5, 5, 1, 1]], np.float32)
  want = [4, 3, 5, 2, 5, 4, 3, 2, 2]
  np.testing.assert_array_equal(np.asarray(RA.fpn_levels(boxes)), want)
  for side, level in [(224, 4), (112, 3), (448, 5), (56, 2), (20, 2), (3000, 5)]:
    ref = min(max(math.floor(4 + math.log2(side / 224 + 1e-8)), 2), 5)
    assert ref == level
  assert RA.fpn_levels(boxes, 3, 7).tolist() == [4, 3, 5, 3, 7, 4, 3, 3, 3]
  assert RA.fpn_levels(boxes[None]).shape == (1, 9) and RA.fpn_levels(boxes).dtype == jnp.int32


def pyramid(rng, nb=2, channels=3):
  return {lvl: rng.normal(size=(nb, 32 >> (lvl - 2), 40 >> (lvl - 2), channels)).astype(np.float32)
          for lvl in range(2, 6)}


def level_boxes(rng, nb=2):
  """Boxes of sides ~8, 16, 32, 64 px (levels 2..5 with canonical_size 32) in a 128 x 160 image,
  some crossing its border."""
  out = []
  for _ in range(nb):
    side = np.repeat([6.0, 12.0, 24.0, 48.0, 90.0], 2) * rng.uniform(1.0, 1.3, 10)
    aspect = rng.uniform(0.5, 2.0, 10)
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    cx, cy = rng.uniform(-5, 165, 10), rng.uniform(-5, 133, 10)
    out.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1))
  return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_multilevel_equals_per_level(method):
  rng = np.random.default_rng(6)
  feats, boxes = pyramid(rng), level_boxes(rng)
  level = np.asarray(RA.fpn_levels(boxes, 2, 5, canonical_size=32))
  assert set(level.ravel()) == {2, 3, 4, 5}
  got = multilevel(feats, boxes, (3, 2), canonical_size=32, method=method)
  want = np.zeros(got.shape, np.float32)
  for lvl, fmap in feats.items():
    pooled = np.asarray(roi_align(fmap, boxes, (3, 2), spatial_scale=2.0 ** -lvl))
    want[level == lvl] = pooled[level == lvl]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  as_list = multilevel([feats[l] for l in range(2, 6)], boxes, (3, 2), min_level=2,
                       canonical_size=32, method=method)
  np.testing.assert_allclose(np.asarray(as_list), np.asarray(got), rtol=1e-6, atol=1e-6)


def test_multilevel_gradient():
  rng = np.random.default_rng(7)
  feats, boxes = pyramid(rng, channels=1), level_boxes(rng)
  level = np.asarray(RA.fpn_levels(boxes, 2, 5, canonical_size=32))
  grads = jax.grad(lambda f: multilevel(f, boxes, 2, canonical_size=32).sum())(feats)
  for lvl, fmap in feats.items():
    _, want = ref_roi_align(fmap, np.where((level == lvl)[..., None], boxes, -1e4), (2, 2),
                            2.0 ** -lvl, 2)
    np.testing.assert_allclose(np.asarray(grads[lvl])[..., 0], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- jit / vmap
@pytest.mark.parametrize("method", METHODS)
def test_vmap_over_stacked_batches(method):
  rng = np.random.default_rng(8)
  feats = rng.normal(size=(3, 2, 6, 7, 2)).astype(np.float32)
  boxes = np.stack([random_boxes(rng, 2, 6, 7, 2) for _ in range(3)])
  fn = jax.jit(jax.vmap(lambda f, b: RA.roi_align(f, b, (2, 3), spatial_scale=0.5, method=method)))
  got = fn(feats, boxes)
  for k in range(3):
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(
        roi_align(feats[k], boxes[k], (2, 3), spatial_scale=0.5, method=method)), rtol=1e-6,
        atol=1e-6)
  pyr = [pyramid(rng) for _ in range(2)]
  stacked = {l: np.stack([p[l] for p in pyr]) for l in range(2, 6)}
  bxs = np.stack([level_boxes(rng) for _ in range(2)])
  ml = jax.jit(jax.vmap(
      lambda f, b: RA.multilevel_roi_align(f, b, 2, canonical_size=32, method=method)))
  got = ml(stacked, bxs)
  for k in range(2):
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(
        multilevel(pyr[k], bxs[k], 2, canonical_size=32, method=method)), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------- crops
def test_crop_and_resize_vs_host_crop_resize():
  """Same sample positions as the PIL crop for enlarged RoIs inside the image (agreement up to
  PIL's uint8 rounding); different conventions when shrinking (PIL antialiases) and at the image
  border (PIL pads with black, RoIAlign takes the edge value within one pixel)."""
  roi_crops = pytest.importorskip("jaxdet.data.roi_crops")
  rng = np.random.default_rng(9)
  image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
  x1, y1 = rng.uniform(3, 30, 6), rng.uniform(3, 22, 6)
  rois = np.stack([x1, y1, x1 + rng.uniform(2, 15, 6), y1 + rng.uniform(2, 15, 6)], 1)
  rois = rois.astype(np.float32)
  host = roi_crops.crop_resize(image, rois, (16, 15)).astype(np.float32)
  dev = np.asarray(crop_and_resize(image[None], rois[None], (16, 15)))[0]
  assert dev.dtype == np.float32
  np.testing.assert_allclose(dev, host, atol=1.0 + 1e-3)
  assert np.abs(dev - host).mean() < 0.5

  checker = (((np.arange(64)[:, None] + np.arange(64)[None, :]) % 2) * 255).astype(np.uint8)
  checker = np.repeat(checker[..., None], 3, -1)
  shrink = np.array([[8.5, 8.5, 56.5, 56.5]], np.float32)  # 48 px -> 8: samples on pixel centres
  host = roi_crops.crop_resize(checker, shrink, 8).astype(np.float32)
  dev = np.asarray(crop_and_resize(checker[None], shrink[None], 8))[0]
  assert np.all(dev == 0) and np.abs(host - 127.5).max() < 20  # point samples vs averages

  flat = np.full((20, 20, 3), 200, np.uint8)
  border = np.array([[-2.0, 5.0, 10.0, 17.0]], np.float32)  # columns centred at x = -1.5, -0.5, ...
  host = roi_crops.crop_resize(flat, border, 12).astype(np.float32)
  dev = np.asarray(crop_and_resize(flat[None], border[None], 12))[0]
  assert np.all(dev[:, :, 0] == 0) and np.all(host[:, :, 0] == 0)    # > 1 px out: 0 in both
  assert np.all(dev[:, :, 1] == 200) and np.all(host[:, :, 1] == 0)  # within 1 px: edge vs black
  np.testing.assert_array_equal(dev[:, :, 2:], host[:, :, 2:])


def test_crop_and_resize_sampling_ratio():
  rng = np.random.default_rng(10)
  images = rng.uniform(size=(2, 12, 14, 3)).astype(np.float32)
  boxes = random_boxes(rng, 2, 12, 14, 1)
  for ratio in (1, 3):
    got = crop_and_resize(images, boxes, (4, 5), sampling_ratio=ratio)
    want, _ = ref_roi_align(images, boxes, (4, 5), 1.0, ratio)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- feature_index
def test_feature_index_equals_gathering_the_maps():
  """RoI (b, r) pools from features[feature_index[b, r]]: the same as copying that map out and
  pooling the single RoI from it (B' = 3 rows of RoIs on N = 4 maps); gradients too."""
  rng = np.random.default_rng(11)
  feats = rng.normal(size=(4, 7, 9, 2)).astype(np.float32)
  boxes = random_boxes(rng, 3, 7, 9, 2)                             # [3, 9, 4]
  index = rng.integers(0, 4, boxes.shape[:2]).astype(np.int32)
  index[0, :4] = 3                                                  # several RoIs on one map
  fn = jax.jit(lambda f, b, i: RA.roi_align(f, b, (3, 2), spatial_scale=0.5, sampling_ratio=2,
                                            feature_index=i))
  got = np.asarray(fn(feats, boxes, index))
  assert got.shape == (3, 9, 3, 2, 2)
  want = np.zeros_like(got)
  for b in range(3):
    for r in range(boxes.shape[1]):
      want[b, r] = np.asarray(roi_align(feats[index[b, r]][None], boxes[b, r][None, None], (3, 2),
                                        spatial_scale=0.5))[0, 0]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  ref, _ = ref_roi_align(feats[index.reshape(-1)], boxes.reshape(-1, 1, 4), (3, 2), 0.5,
                         2)                                         # each RoI alone on its map
  np.testing.assert_allclose(got, ref.reshape(got.shape), rtol=1e-5, atol=1e-5)
  assert np.abs(got[:, 5:8]).max() > 0  # the corner / past-the-border RoIs pool something

  grad = jax.grad(lambda f: fn(f, boxes, index).sum())(feats)
  want_grad = np.zeros_like(feats)
  for b in range(3):
    for r in range(boxes.shape[1]):
      _, g = ref_roi_align(feats[index[b, r]][None], boxes[b, r][None, None], (3, 2), 0.5, 2)
      want_grad[index[b, r]] += g[0][..., None]
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-6)

  # an index equal to the row reproduces the default pairing; out-of-range indices are clamped
  same = RA.roi_align(feats[:3], boxes, 2, feature_index=np.repeat(np.arange(3)[:, None], 9, 1))
  np.testing.assert_allclose(np.asarray(same), np.asarray(roi_align(feats[:3], boxes, 2)),
                             rtol=1e-6, atol=1e-6)
  clamped = RA.roi_align(feats, boxes, 2, feature_index=np.full(index.shape, 7))
  np.testing.assert_array_equal(np.asarray(clamped), np.asarray(
      RA.roi_align(feats, boxes, 2, feature_index=np.full(index.shape, 3))))


def test_feature_index_argument_checks():
  feats = np.zeros((2, 4, 4, 1), np.float32)
  boxes = np.zeros((5, 3, 4), np.float32)
  index = np.zeros((5, 3), np.int32)
  assert RA.roi_align(feats, boxes, 2, feature_index=index).shape == (5, 3, 2, 2, 1)
  with pytest.raises(ValueError, match="gather"):
    RA.roi_align(feats, boxes, 2, method="matmul", feature_index=index)
  with pytest.raises(ValueError, match="integer"):
    RA.roi_align(feats, boxes, 2, feature_index=index.astype(np.float32))
  with pytest.raises(ValueError, match=r"\[B', R\]"):
    RA.roi_align(feats, boxes, 2, feature_index=index[:, :2])
  with pytest.raises(ValueError, match=r"\[B', R, 4\]"):
    RA.roi_align(feats, boxes[..., :3], 2, feature_index=index)
  with pytest.raises(ValueError, match=r"\[B=2, R, 4\]"):
    RA.roi_align(feats, boxes, 2)  # without feature_index the rows still pair with the maps
