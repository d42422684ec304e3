"""jaxdet.ops.mask_targets: mask targets from box-frame masks vs a slow numpy reference on the
full-image masks (both rasterised by pycocotools from the same polygons), exact hand cases, and
L_mask vs a numpy binary cross-entropy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import mask_targets as MT

mask_utils = pytest.importorskip("pycocotools.mask")

mask_targets = jax.jit(MT.mask_targets, static_argnames=("size", "sampling_ratio"))
mask_loss = jax.jit(MT.mask_loss)


# ------------------------------------------------------------------------------- references
def rasterise(polygons, height, width):
  """uint8 [height, width] union of polygons (lists of x, y, x, y, ...) by pycocotools."""
  rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
  return mask_utils.decode(mask_utils.merge(rles))


def frame_mask(polygons, frame, side):
  """The box-frame mask: the polygons in the frame's cell coordinates, rasterised at side x side
  (detectron2's rasterize_polygons_within_box)."""
  fx1, fy1, fx2, fy2 = frame
  moved = []
  for p in polygons:
    p = np.asarray(p, np.float64).reshape(-1, 2)
    moved.append(np.stack([(p[:, 0] - fx1) * side / (fx2 - fx1),
                           (p[:, 1] - fy1) * side / (fy2 - fy1)], 1).ravel())
  return rasterise(moved, side, side)


def bilinear(image, y, x):
  """torchvision's bilinear_interpolate on a 2-D array at index coordinates (y, x)."""
  height, width = image.shape
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return 0.0
  y, x = max(y, 0.0), max(x, 0.0)
  y0, x0 = int(y), int(x)
  if y0 >= height - 1:
    y0 = y1 = height - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= width - 1:
    x0 = x1 = width - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  return ((1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x1]
          + ly * (1 - lx) * image[y1, x0] + ly * lx * image[y1, x1])


def ref_target(full_mask, roi, size, ratio):
  """The intersection of an RoI with a full-image mask: RoIAlign (aligned) sample points in image
  pixels, the mask sampled bilinearly there, averaged per cell and thresholded at 0.5."""
  x1, y1, x2, y2 = (float(v) for v in roi)
  out = np.zeros((size, size), np.float32)
  for i in range(size):
    for j in range(size):
      acc = 0.0
      for a in range(ratio):
        y = y1 + (i + (a + 0.5) / ratio) * (y2 - y1) / size - 0.5
        for b in range(ratio):
          x = x1 + (j + (b + 0.5) / ratio) * (x2 - x1) / size - 0.5
          acc += bilinear(full_mask, y, x)
      out[i, j] = acc / ratio ** 2 >= 0.5
  return out


def random_object(rng, height, width):
  """One or two star-shaped polygons (a two-part object tests pycocotools' merge)."""
  polys = []
  cx, cy = rng.uniform(0.35 * width, 0.65 * width), rng.uniform(0.35 * height, 0.65 * height)
  for part in range(rng.integers(1, 3)):
    k = rng.integers(6, 12)
    angle = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.1, 0.2) * min(height, width) * rng.uniform(0.7, 1.0, k)
    px = cx + part * rng.uniform(-0.2, 0.2) * width + radius * np.cos(angle)
    py = cy + part * rng.uniform(-0.2, 0.2) * height + radius * np.sin(angle)
    polys.append(np.stack([px, py], 1).ravel())
  return polys


def polygon_bbox(polys):
  pts = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys])
  return np.concatenate([pts.min(0), pts.max(0)])


def rois_around(rng, frame, bbox):
  """RoIs overlapping the object: the frame, the object's box, jittered boxes, a box larger than
  the frame, boxes partly outside the frame, a smaller box inside."""
  fx1, fy1, fx2, fy2 = frame
  fw, fh = fx2 - fx1, fy2 - fy1
  out = [frame, bbox,
         [fx1 - 0.4 * fw, fy1 - 0.3 * fh, fx2 + 0.5 * fw, fy2 + 0.2 * fh],   # larger than frame
         [fx1 + 0.6 * fw, fy1 - 0.2 * fh, fx2 + 0.6 * fw, fy2 - 0.2 * fh],   # partly outside
         [fx1 - 0.5 * fw, fy1 + 0.5 * fh, fx2 - 0.5 * fw, fy2 + 0.5 * fh],   # partly outside
         [fx1 + 0.2 * fw, fy1 + 0.15 * fh, fx1 + 0.8 * fw, fy1 + 0.75 * fh]]  # inside
  for _ in range(3):
    d = rng.uniform(-0.25, 0.25, 4) * np.array([fw, fh, fw, fh])
    out.append(np.asarray(frame) + d)
  return np.asarray(out, np.float64)


# ------------------------------------------------------------------------------- (a) vs full image
@pytest.mark.parametrize("side,size,ratio,height,width", [(56, 28, 2, 240, 280),
                                                          (64, 28, 3, 300, 300)])
def test_matches_full_image_reference(side, size, ratio, height, width):
  """The targets from M x M box-frame masks agree with the RoI / full-image-mask intersection.
  Both masks are rasterisations of the same polygons (at 1 px and at frame-box / M), so they may
  differ near the object boundary: >= 95% of each RoI's cells agree (objects of ~50-120 px,
  frame masks no coarser than the 28 x 28 targets); the exact check is the next test."""
  rng = np.random.default_rng(side + size + ratio)
  num_gt = 4
  gt_masks = np.zeros((2, num_gt, side, side), np.uint8)
  mask_boxes = np.zeros((2, num_gt, 4), np.float32)
  full = np.zeros((2, num_gt, height, width), np.uint8)
  rois, gt_index, overlapping = [], [], []
  for b in range(2):
    rois_b, index_b, over_b = [], [], []
    for g in range(num_gt - 1):  # the last gt slot is padding
      polys = random_object(rng, height, width)
      full[b, g] = rasterise(polys, height, width)
      bbox = polygon_bbox(polys)
      margin = 0.0 if g == 0 else rng.uniform(0.0, 6.0, 4)  # tight frame or a looser one
      frame = bbox + np.array([-1, -1, 1, 1]) * margin
      mask_boxes[b, g] = frame
      gt_masks[b, g] = frame_mask(polys, mask_boxes[b, g].astype(np.float64), side)
      for roi in rois_around(rng, mask_boxes[b, g].astype(np.float64), bbox):
        rois_b.append(roi)
        index_b.append(g)
        over_b.append(True)
    rois_b += [[0, 0, 0, 0], [0, 0, 0, 0], [5, 5, 40, 30], [-30, -20, -2, -1]]
    index_b += [0, num_gt - 1, num_gt - 1, 1]  # padding RoIs / a padded gt / far outside the gt
    over_b += [False] * 4
    rois.append(rois_b)
    gt_index.append(index_b)
    overlapping.append(over_b)
  rois = np.asarray(rois, np.float32)
  gt_index = np.asarray(gt_index, np.int32)
  got = np.asarray(mask_targets(gt_masks, mask_boxes, rois, gt_index, size=size,
                                sampling_ratio=ratio))
  assert got.shape == (2, rois.shape[1], size, size) and got.dtype == np.float32
  assert set(np.unique(got)) <= {0.0, 1.0}
  agreement = []
  for b in range(2):
    for r in range(rois.shape[1]):
      want = ref_target(full[b, gt_index[b, r]].astype(np.float64), rois[b, r], size, ratio)
      if overlapping[b][r]:
        agree = float(np.mean(got[b, r] == want))
        agreement.append(agree)
        assert want.sum() > 0, (b, r)  # the RoI does see the object
        assert agree >= 0.95, (b, r, rois[b, r], agree)
      else:
        np.testing.assert_array_equal(got[b, r], want)
        np.testing.assert_array_equal(got[b, r], 0.0)
  assert np.mean(agreement) >= 0.98, np.mean(agreement)


def ref_frame_target(mask, frame, roi, size, ratio):
  """Soft target straight from the definition on the frame mask: RoIAlign sample points mapped to
  mask-cell index coordinates u = (x - fx1) M / fw - 0.5, bilinear interpolation of the mask with
  zeros outside it (each of the 2 x 2 taps outside [0, M) contributes 0), cell mean. No padding
  and no clamping: a formulation independent of the implementation's."""
  mask_h, mask_w = mask.shape
  fx1, fy1, fx2, fy2 = (float(v) for v in frame)
  if not (fx2 > fx1 and fy2 > fy1):
    return np.zeros((size, size))
  x1, y1, x2, y2 = (float(v) for v in roi)

  def tap(row, col):
    return float(mask[row, col]) if 0 <= row < mask_h and 0 <= col < mask_w else 0.0

  out = np.zeros((size, size))
  for i in range(size):
    for j in range(size):
      acc = 0.0
      for a in range(ratio):
        y = y1 + (i + (a + 0.5) / ratio) * (y2 - y1) / size
        v = (y - fy1) * mask_h / (fy2 - fy1) - 0.5
        for c in range(ratio):
          x = x1 + (j + (c + 0.5) / ratio) * (x2 - x1) / size
          u = (x - fx1) * mask_w / (fx2 - fx1) - 0.5
          r0, c0 = int(np.floor(v)), int(np.floor(u))
          fy, fx = v - r0, u - c0
          acc += ((1 - fy) * (1 - fx) * tap(r0, c0) + (1 - fy) * fx * tap(r0, c0 + 1)
                  + fy * (1 - fx) * tap(r0 + 1, c0) + fy * fx * tap(r0 + 1, c0 + 1))
      out[i, j] = acc / ratio ** 2
  return out


@pytest.mark.parametrize("side,size,ratio", [(28, 28, 2), (16, 14, 3), (40, 28, 1)])
def test_matches_frame_mask_definition_exactly(side, size, ratio):
  """Random (not polygon) frame masks, fractional frames and RoIs of every kind: the binary
  targets equal the thresholded definition exactly, except cells within 1e-5 of the threshold."""
  rng = np.random.default_rng(100 + side + size + ratio)
  num_gt, height, width = 3, 80, 90
  gt_masks = (rng.uniform(size=(2, num_gt, side, side)) < 0.55).astype(np.uint8)
  gt_masks[:, 0, : side // 3] = 1                       # solid bands touching the frame border
  gt_masks[:, 1, :, -side // 4:] = 1
  gt_masks[1, 2] = 0                                    # padded gt: zero mask, zero frame
  x1, y1 = rng.uniform(5, 40, (2, num_gt)), rng.uniform(5, 35, (2, num_gt))
  mask_boxes = np.stack([x1, y1, x1 + rng.uniform(8, 40, (2, num_gt)),
                         y1 + rng.uniform(8, 40, (2, num_gt))], -1).astype(np.float32)
  mask_boxes[1, 2] = 0.0
  rois, gt_index = [], []
  for b in range(2):
    rois_b, index_b = [], []
    for g in range(num_gt):
      frame = mask_boxes[b, g].astype(np.float64)
      fw, fh = frame[2] - frame[0], frame[3] - frame[1]
      cell = np.array([fw, fh, fw, fh]) / side
      extra = [frame, frame + cell * np.array([-0.5, -0.5, 0.5, 0.5]),   # half a cell larger
               frame + cell * np.array([1, 0, 1, 0]),                  # shifted by one cell
               [frame[0] - 50, frame[1] - 50, frame[2] + 50, frame[3] + 50],
               [frame[2] + 2, frame[1], frame[2] + 20, frame[3]],      # right of the frame
               [frame[0] + 0.3, frame[1] + 0.2, frame[0] + 0.9, frame[1] + 0.5]]  # tiny
      for roi in extra + [frame + rng.uniform(-0.4, 0.4, 4) * np.array([fw, fh, fw, fh])
                          for _ in range(3)]:
        rois_b.append(roi)
        index_b.append(g)
    rois_b += [[0, 0, 0, 0], [3, 3, 3, 3]]
    index_b += [0, 1]
    rois.append(rois_b)
    gt_index.append(index_b)
  rois = np.asarray(rois, np.float32)
  gt_index = np.asarray(gt_index, np.int32)
  got = np.asarray(mask_targets(gt_masks, mask_boxes, rois, gt_index, size=size,
                                sampling_ratio=ratio))
  ties = 0
  for b in range(2):
    for r in range(rois.shape[1]):
      soft = ref_frame_target(gt_masks[b, gt_index[b, r]], mask_boxes[b, gt_index[b, r]],
                              rois[b, r], size, ratio)
      clear = np.abs(soft - 0.5) > 1e-5
      ties += int((~clear).sum())
      np.testing.assert_array_equal(got[b, r][clear], (soft >= 0.5)[clear], err_msg=f"{b} {r}")
  assert ties < 0.01 * got.size
  assert 0.2 < got.mean() < 0.8


def test_frame_border_does_not_leak_outside():
  """A mask that is 1 along the frame's left column: without the zero border, RoIAlign's
  "within one cell outside takes the edge value" rule would make the cell just left of the frame
  (and, thresholded, a band outside it) part of the object."""
  side = 8
  gt_masks = np.zeros((1, 1, side, side), np.uint8)
  gt_masks[0, 0, :, 0] = 1
  frame = np.array([[[16.0, 8.0, 32.0, 24.0]]], np.float32)  # 2 px per cell
  # RoI = the 2 px strip [14, 16) just left of the frame, one target cell wide.
  roi = np.array([[[14.0, 8.0, 16.0, 24.0], [16.0, 8.0, 18.0, 24.0]]], np.float32)
  got = np.asarray(mask_targets(gt_masks, frame, roi, np.zeros((1, 2), np.int32), size=4))
  np.testing.assert_array_equal(got[0, 0], 0.0)  # outside the frame
  np.testing.assert_array_equal(got[0, 1], 1.0)  # the frame's first column


# ------------------------------------------------------------------------------- (b) by hand
def test_hand_cases():
  size = 28
  ones = np.ones((1, 2, 28, 28), np.uint8)
  ones[0, 1] = 0  # a padded gt
  frame = np.array([[[10.5, 20.25, 66.5, 62.25], [0, 0, 0, 0]]], np.float32)  # 56 x 42 px
  fx1, fy1, fx2, fy2 = frame[0, 0]
  fw = fx2 - fx1
  rois = np.array([[[fx1, fy1, fx2, fy2],                     # the frame -> all ones
                    [fx2 + 1, fy1, fx2 + 30, fy2],              # entirely outside -> zeros
                    [fx1 + fw / 2, fy1, fx2 + fw / 2, fy2],     # right half + outside right
                    [fx1 - fw / 2, fy1, fx2 - fw / 2, fy2],     # outside left + left half
                    [fx1, fy1, fx2, fy2]]], np.float32)         # matched to the padded gt
  index = np.array([[0, 0, 0, 0, 1]], np.int32)
  for dtype in (np.uint8, bool, np.float32):
    got = np.asarray(mask_targets(ones.astype(dtype), frame, rois, index, size=size))
    np.testing.assert_array_equal(got[0, 0], 1.0)
    np.testing.assert_array_equal(got[0, 1], 0.0)
    half = np.zeros((size, size), np.float32)
    half[:, : size // 2] = 1.0
    np.testing.assert_array_equal(got[0, 2], half)        # left half ones
    np.testing.assert_array_equal(got[0, 3], half[:, ::-1])  # right half ones
    np.testing.assert_array_equal(got[0, 4], 0.0)
  # gt_index out of range is clamped; no gradient reaches the masks or boxes
  clamped = mask_targets(ones, frame, rois, np.full((1, 5), -3, np.int32), size=size)
  np.testing.assert_array_equal(np.asarray(clamped)[0, 0], 1.0)
  grads = jax.grad(lambda m, f, r: MT.mask_targets(m, f, r, index, 28).sum(), argnums=(0, 1, 2))(
      ones.astype(np.float32), frame, rois)
  assert all(np.all(np.asarray(g) == 0) for g in grads)


def test_no_gt_and_argument_checks():
  rois = np.zeros((2, 3, 4), np.float32)
  index = np.zeros((2, 3), np.int32)
  empty = MT.mask_targets(np.zeros((2, 0, 28, 28), np.uint8), np.zeros((2, 0, 4)), rois, index, 14)
  assert empty.shape == (2, 3, 14, 14) and not np.any(np.asarray(empty))
  masks, boxes = np.zeros((2, 1, 28, 28), np.uint8), np.zeros((2, 1, 4), np.float32)
  with pytest.raises(ValueError, match="gt_masks"):
    MT.mask_targets(masks[0], boxes, rois, index, 14)
  with pytest.raises(ValueError, match="mask_boxes"):
    MT.mask_targets(masks, boxes[:1], rois, index, 14)
  with pytest.raises(ValueError, match="rois"):
    MT.mask_targets(masks, boxes, rois[:1], index, 14)
  with pytest.raises(ValueError, match="gt_index"):
    MT.mask_targets(masks, boxes, rois, index[:, :2], 14)
  with pytest.raises(ValueError, match="integer"):
    MT.mask_targets(masks, boxes, rois, index.astype(np.float32), 14)
  with pytest.raises(ValueError, match="size"):
    MT.mask_targets(masks, boxes, rois, index, 0)


# ------------------------------------------------------------------------------- (c) L_mask
def ref_mask_loss(logits, classes, targets, fg):
  logits = np.asarray(logits, np.float64)
  total, count = 0.0, 0
  for b in range(logits.shape[0]):
    for r in range(logits.shape[1]):
      if not fg[b, r]:
        continue
      x = logits[b, r, :, :, classes[b, r]]
      p = 1.0 / (1.0 + np.exp(-x))
      t = targets[b, r]
      total += np.sum(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
      count += x.size
  return total / count if count else 0.0


def test_mask_loss_matches_numpy_bce():
  rng = np.random.default_rng(0)
  b, r, s, k = 2, 6, 5, 3
  logits = rng.normal(scale=3.0, size=(b, r, s, s, k)).astype(np.float32)
  targets = (rng.uniform(size=(b, r, s, s)) < 0.4).astype(np.float32)
  fg = np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0]], bool)
  classes = rng.integers(0, k, (b, r)).astype(np.int32)
  classes[~fg] = k  # the background class of detectron2: clamped, and ignored anyway
  got = float(mask_loss(logits, classes, targets, fg))
  want = ref_mask_loss(logits, classes, targets, fg)
  assert got == pytest.approx(want, rel=1e-5)
  # only the class channel counts: changing the other channels leaves the loss unchanged
  other = logits.copy()
  chan = np.arange(k)[None, None, None, None, :] != np.minimum(classes, k - 1)[:, :, None, None,
                                                                                None]
  other[np.broadcast_to(chan, other.shape)] += 50.0
  assert float(mask_loss(other, classes, targets, fg)) == pytest.approx(want, rel=1e-5)
  # only fg RoIs count, and the mean is over fg RoIs x pixels
  changed = logits.copy()
  changed[~fg] = -logits[~fg]
  assert float(mask_loss(changed, classes, targets, fg)) == pytest.approx(want, rel=1e-5)
  one = np.zeros_like(fg)
  one[0, 0] = True
  assert float(mask_loss(logits, classes, targets, one)) == pytest.approx(
      ref_mask_loss(logits, classes, targets, one), rel=1e-5)
  # bf16 logits are upcast to float32
  half = float(mask_loss(jnp.asarray(logits, jnp.bfloat16), classes, targets, fg))
  assert half == pytest.approx(ref_mask_loss(np.asarray(jnp.asarray(logits, jnp.bfloat16),
                                                        np.float32), classes, targets, fg),
                               rel=1e-4)


def test_mask_loss_no_fg_extreme_logits_and_gradient():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(1, 3, 4, 4, 2)).astype(np.float32)
  targets = (rng.uniform(size=(1, 3, 4, 4)) < 0.5).astype(np.float32)
  classes = np.array([[0, 1, 2]], np.int32)
  none = np.zeros((1, 3), bool)
  assert float(mask_loss(logits, classes, targets, none)) == 0.0
  grad = jax.jit(jax.grad(MT.mask_loss))(logits, classes, targets, none)
  assert np.all(np.asarray(grad) == 0)

  # |x| = 100: the naive log(sigmoid) form overflows in float32; the stable one gives |x| or 0
  big = np.where(targets[..., None] > 0, -100.0, 100.0) * np.ones((1, 1, 1, 1, 2), np.float32)
  fg = np.array([[True, True, False]])
  assert float(mask_loss(big.astype(np.float32), classes, targets, fg)) == pytest.approx(100.0)
  assert float(mask_loss(-big.astype(np.float32), classes, targets, fg)) == pytest.approx(0.0,
                                                                                         abs=1e-30)

  grad = np.asarray(jax.jit(jax.grad(MT.mask_loss))(logits, classes, targets, fg))
  assert np.all(np.isfinite(grad))
  want = np.zeros_like(logits)
  count = fg.sum() * 16
  for r in range(2):
    k = classes[0, r]
    want[0, r, :, :, k] = (1.0 / (1.0 + np.exp(-logits[0, r, :, :, k])) - targets[0, r]) / count
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)
  big_grad = jax.jit(jax.grad(MT.mask_loss))(big.astype(np.float32), classes, targets, fg)
  assert np.all(np.isfinite(np.asarray(big_grad)))


def test_mask_loss_argument_checks():
  logits = np.zeros((1, 2, 3, 3, 4), np.float32)
  targets = np.zeros((1, 2, 3, 3), np.float32)
  classes, fg = np.zeros((1, 2), np.int32), np.ones((1, 2), bool)
  with pytest.raises(ValueError, match="mask_logits"):
    MT.mask_loss(logits[..., 0], classes, targets, fg)
  with pytest.raises(ValueError, match="targets"):
    MT.mask_loss(logits, classes, targets[:, :1], fg)
  with pytest.raises(ValueError, match="classes and fg"):
    MT.mask_loss(logits, classes[:, :1], targets, fg)
  with pytest.raises(ValueError, match="integer"):
    MT.mask_loss(logits, classes.astype(np.float32), targets, fg)
