"""jaxdet.ops.boxes vs slow plain-numpy references (loops over boxes)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import boxes as _boxes


class _Jitted:
  """The module's functions under jax.jit (one compile per call signature, and checks jit-compat)."""

  def __getattr__(self, name):
    fn = getattr(_boxes, name)
    static = ("weights", "clamp")
    return jax.jit(fn, static_argnames=[a for a in static if a in fn.__code__.co_varnames])


B = _Jitted()


def ref_area(b):
  return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def ref_iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  union = ref_area(a) + ref_area(b) - inter
  return inter / union if union > 0 else 0.0


def ref_giou(a, b):
  cw = max(a[2], b[2]) - min(a[0], b[0])
  ch = max(a[3], b[3]) - min(a[1], b[1])
  c = cw * ch
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  union = ref_area(a) + ref_area(b) - iw * ih
  return ref_iou(a, b) - ((c - union) / c if c > 0 else 0.0)


def ref_diou(a, b):
  rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
  c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
  return ref_iou(a, b) - (rho2 / c2 if c2 > 0 else 0.0)


def ref_ciou(a, b):
  i = ref_iou(a, b)
  v = 4 / math.pi ** 2 * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
  alpha = v / (1 - i + v) if (1 - i + v) > 0 else 0.0
  return ref_diou(a, b) - alpha * v


def rand_boxes(rng, n, size=100.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(1, size / 2, (n, 2))
  return np.concatenate([xy, xy + wh], -1).astype(np.float32)


EDGE = np.array([
    [0, 0, 0, 0],          # padding
    [5, 5, 5, 5],          # point
    [5, 5, 15, 5],         # zero height
    [10, 10, 20, 30],      # normal
    [10, 10, 20, 30],      # identical to the previous
    [20, 30, 10, 10],      # inverted (negative extent)
    [0, 0, 1e4, 1e4],      # huge
], np.float32)


def test_area():
  b = np.concatenate([rand_boxes(np.random.default_rng(0), 20), EDGE])
  np.testing.assert_allclose(B.area(b), [ref_area(x) for x in b], rtol=1e-6)
  assert B.area(b.reshape(3, 9, 4)).shape == (3, 9)


def test_pairwise_iou_matches_reference_and_broadcasts():
  rng = np.random.default_rng(1)
  b1 = np.concatenate([rand_boxes(rng, 15), EDGE])
  b2 = np.concatenate([EDGE, rand_boxes(rng, 11)])
  got = np.asarray(B.pairwise_iou(b1, b2))
  want = np.array([[ref_iou(a, b) for b in b2] for a in b1])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(got))
  # batch dims broadcast: [2, N, 4] x [1, M, 4]
  got_b = B.pairwise_iou(np.stack([b1, b1[::-1]]), b2[None])
  assert got_b.shape == (2, len(b1), len(b2))
  np.testing.assert_allclose(got_b[1], want[::-1], rtol=1e-5, atol=1e-7)
  # identical non-empty boxes -> 1, degenerate boxes -> 0
  assert got[15 + 3, 4] == pytest.approx(1.0)
  assert got[15 + 0, 0] == 0.0 and got[15 + 1, 1] == 0.0


@pytest.mark.parametrize("fn,ref", [(B.iou, ref_iou), (B.giou, ref_giou), (B.diou, ref_diou), (B.ciou, ref_ciou)])
def test_aligned_overlaps_match_reference(fn, ref):
  rng = np.random.default_rng(2)
  a, b = rand_boxes(rng, 40), rand_boxes(rng, 40)
  shift = rng.uniform(-3, 3, (10, 2)).astype(np.float32)
  b[:10] = a[:10] + np.concatenate([shift, shift * 0.5], -1)  # overlapping pairs, widths stay >= 1
  b[10] = a[10]
  got = np.asarray(fn(a, b))
  want = np.array([ref(x, y) for x, y in zip(a.astype(np.float64), b.astype(np.float64))])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert got[10] == pytest.approx(1.0, abs=1e-6)
  assert fn(a.reshape(4, 10, 4), b.reshape(4, 10, 4)).shape == (4, 10)


def test_hand_computed_values():
  a = np.array([0, 0, 2, 2], np.float32)
  b = np.array([1, 1, 3, 3], np.float32)
  assert float(B.iou(a, b)) == pytest.approx(1 / 7)
  assert float(B.giou(a, b)) == pytest.approx(1 / 7 - 2 / 9)
  assert float(B.diou(a, b)) == pytest.approx(1 / 7 - 2 / 18)
  assert float(B.ciou(a, b)) == pytest.approx(1 / 7 - 2 / 18)  # same aspect ratio: v = 0
  far = np.array([10, 0, 12, 2], np.float32)
  assert float(B.giou(a, far)) == pytest.approx(-(24 - 8) / 24)


def test_degenerate_values_and_gradients_finite():
  pairs = [(EDGE[0], EDGE[0]), (EDGE[1], EDGE[1]), (EDGE[3], EDGE[4]), (EDGE[0], EDGE[3]),
           (EDGE[2], EDGE[1]), (EDGE[5], EDGE[3]), (EDGE[1], EDGE[6])]
  a = jnp.asarray(np.stack([p[0] for p in pairs]))
  b = jnp.asarray(np.stack([p[1] for p in pairs]))

  @jax.jit
  def all_values_and_grads(x, y):
    out = {}
    for name in ("iou", "giou", "diou", "ciou"):
      fn = getattr(_boxes, name)
      out[name] = (fn(x, y),) + jax.grad(lambda p, q: jnp.sum(fn(p, q)), argnums=(0, 1))(x, y)
    out["pairwise"] = jax.grad(lambda p: jnp.sum(_boxes.pairwise_iou(p, y)))(x)
    out["area"] = jax.grad(lambda p: jnp.sum(_boxes.area(p)))(x)
    return out

  for name, arrays in all_values_and_grads(a, b).items():
    for arr in jax.tree_util.tree_leaves(arrays):
      assert np.all(np.isfinite(arr)), name
  assert float(B.iou(a, b)[2]) == pytest.approx(1.0)


def test_ciou_alpha_is_stop_gradient():
  a = jnp.array([0.0, 0.0, 4.0, 2.0])
  b = jnp.array([1.0, 0.0, 3.0, 3.0])

  def manual(x):
    i = B.iou(x, b)
    v = 4 / math.pi ** 2 * (jnp.arctan(2.0 / 3.0) - jnp.arctan((x[2] - x[0]) / (x[3] - x[1]))) ** 2
    alpha = v / (1 - i + v)
    return B.diou(x, b) - jax.lax.stop_gradient(alpha) * v

  np.testing.assert_allclose(jax.jit(jax.grad(_boxes.ciou))(a, b), jax.jit(jax.grad(manual))(a), rtol=1e-5, atol=1e-7)


def ref_encode(g, a, w):
  aw, ah = a[2] - a[0], a[3] - a[1]
  gw, gh = g[2] - g[0], g[3] - g[1]
  return [w[0] * ((g[0] + g[2]) / 2 - (a[0] + a[2]) / 2) / aw, w[1] * ((g[1] + g[3]) / 2 - (a[1] + a[3]) / 2) / ah,
          w[2] * math.log(gw / aw), w[3] * math.log(gh / ah)]


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode(weights):
  rng = np.random.default_rng(3)
  g, a = rand_boxes(rng, 30), rand_boxes(rng, 30)
  d = np.asarray(B.encode(g, a, weights))
  np.testing.assert_allclose(d, [ref_encode(x, y, weights) for x, y in zip(g, a)], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(B.decode(d, a, weights), g, rtol=1e-5, atol=1e-3)
  # broadcast anchors [A, 4] against batched deltas [2, A, 4]
  assert B.decode(np.stack([d, d]), a, weights).shape == (2, 30, 4)
  # SSD variances (0.1, 0.1, 0.2, 0.2) == weights (10, 10, 5, 5)
  if weights[0] == 10.0:
    np.testing.assert_allclose(d, np.asarray(B.encode(g, a)) / np.array([0.1, 0.1, 0.2, 0.2]), rtol=1e-4, atol=1e-4)


def test_decode_clamp_and_padding_finite():
  a = np.array([[0, 0, 16, 16]], np.float32)
  big = B.decode(np.array([[0, 0, 50.0, 50.0]], np.float32), a)
  np.testing.assert_allclose(big, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-5)
  np.testing.assert_allclose(B.decode(np.array([[0, 0, 5.0, -500.0]], np.float32), a, clamp=None),
                             [[8 - 8 * math.exp(5), 8, 8 + 8 * math.exp(5), 8]], rtol=1e-5)
  d = B.encode(np.zeros((2, 4), np.float32), np.concatenate([a, np.zeros((1, 4), np.float32)]))
  assert np.all(np.isfinite(d))
  with pytest.raises(ValueError, match="weights"):
    B.encode(a, a, (1.0, 1.0, 1.0))


def test_clip_with_traced_sizes_and_conversions():
  b = np.array([[-5, -5, 50, 80], [10, 20, 30, 40]], np.float32)
  got = jax.jit(B.clip)(b, jnp.float32(60), jnp.float32(40))
  np.testing.assert_allclose(got, [[0, 0, 40, 60], [10, 20, 30, 40]])
  per_image = B.clip(np.stack([b, b]), np.array([[60.0], [30.0]]), np.array([[40.0], [20.0]]))
  np.testing.assert_allclose(per_image[1], [[0, 0, 20, 30], [10, 20, 20, 30]])
  xywh = np.array([[1, 2, 3, 4]], np.float32)
  np.testing.assert_allclose(B.xywh_to_xyxy(xywh), [[1, 2, 4, 6]])
  np.testing.assert_allclose(B.xyxy_to_xywh(B.xywh_to_xyxy(xywh)), xywh)
  with pytest.raises(ValueError, match="trailing dimension"):
    B.area(np.zeros((3, 5)))
