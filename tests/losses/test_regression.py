"""Regression losses vs numpy references; finite gradients on degenerate boxes."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import regression as R
from jaxdet.ops import boxes as box_ops


def ref_smooth_l1(d, beta):
  d = abs(d)
  if beta == 0:
    return d
  return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


@pytest.mark.parametrize("beta", [1.0, 0.11, 0.0])
def test_l1_and_smooth_l1(beta):
  rng = np.random.default_rng(0)
  p, t = rng.normal(size=(2, 5, 4)).astype(np.float32), rng.normal(size=(2, 5, 4)).astype(np.float32)
  np.testing.assert_allclose(R.l1_loss(p, t), np.abs(p - t), rtol=1e-6)
  want = np.vectorize(lambda d: ref_smooth_l1(d, beta))(p - t)
  np.testing.assert_allclose(jax.jit(R.smooth_l1_loss, static_argnums=2)(p, t, beta), want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(R.regression_loss("smooth_l1", p, t, None, beta=beta), want.sum(-1), rtol=1e-5)
  np.testing.assert_allclose(R.regression_loss("l1", p, t, None), np.abs(p - t).sum(-1), rtol=1e-5)
  g = jax.grad(lambda x: jnp.sum(R.smooth_l1_loss(x, t, beta)))(jnp.asarray(t))
  np.testing.assert_array_equal(g, 0.0)  # finite (zero) at d = 0, even for beta = 0


def ref_iou_terms(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  i = inter / union
  cw, ch = max(a[2], b[2]) - min(a[0], b[0]), max(a[3], b[3]) - min(a[1], b[1])
  giou = i - (cw * ch - union) / (cw * ch)
  rho2 = ((a[0] + a[2] - b[0] - b[2]) / 2) ** 2 + ((a[1] + a[3] - b[1] - b[3]) / 2) ** 2
  diou = i - rho2 / (cw ** 2 + ch ** 2)
  v = 4 / math.pi ** 2 * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
  return {"giou": 1 - giou, "diou": 1 - diou, "ciou": 1 - diou + v * v / (1 - i + v)}


@pytest.mark.parametrize("name", ["giou", "diou", "ciou"])
def test_iou_losses_via_regression_loss(name):
  rng = np.random.default_rng(1)
  anchors = np.concatenate([rng.uniform(0, 50, (6, 2)), rng.uniform(60, 100, (6, 2))], -1).astype(np.float32)
  pred = (rng.normal(size=(2, 6, 4)) * 0.3).astype(np.float32)
  tgt = (rng.normal(size=(2, 6, 4)) * 0.3).astype(np.float32)
  w = (10.0, 10.0, 5.0, 5.0)
  got = jax.jit(R.regression_loss, static_argnums=(0, 4))(name, pred, tgt, anchors, w)
  assert got.shape == (2, 6)
  pb, tb = np.asarray(box_ops.decode(pred, anchors, w)), np.asarray(box_ops.decode(tgt, anchors, w))
  want = [[ref_iou_terms(pb[i, j].astype(np.float64), tb[i, j].astype(np.float64))[name] for j in range(6)]
          for i in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  direct = getattr(R, f"{name}_loss")(pb, tb)
  np.testing.assert_allclose(direct, got, rtol=1e-5, atol=1e-6)


def test_iou_losses_finite_grads_on_degenerate_boxes():
  pred = jnp.array([[0, 0, 0, 0], [5, 5, 5, 5], [1, 2, 3, 4], [0, 0, 10, 0], [3, 3, 1, 1]], jnp.float32)
  tgt = jnp.array([[0, 0, 0, 0], [5, 5, 5, 5], [1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 4, 4]], jnp.float32)

  @jax.jit
  def grads(p, t):
    return {n: jax.value_and_grad(lambda x: jnp.sum(getattr(R, f"{n}_loss")(x, t)))(p)
            for n in ("giou", "diou", "ciou")}

  for name, (val, g) in grads(pred, tgt).items():
    assert np.isfinite(float(val)) and np.all(np.isfinite(g)), name
  # identical boxes: zero loss
  same = jax.jit(lambda b: jnp.stack([R.giou_loss(b, b), R.diou_loss(b, b), R.ciou_loss(b, b)]))(tgt[2])
  np.testing.assert_allclose(same, 0.0, atol=1e-6)
  # padded (zero) target deltas and anchors through the dispatcher
  z = jnp.zeros((3, 4))

  @jax.jit
  def dispatched(x):
    return {n: jax.value_and_grad(lambda y: jnp.sum(R.regression_loss(n, y, z, z)))(x) for n in R.REGRESSION_LOSSES}

  for n, (val, g) in dispatched(z).items():
    assert np.isfinite(float(val)) and np.all(np.isfinite(g)), n


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="smooth_l1.*giou.*ciou"):
    R.regression_loss("huber", np.zeros((1, 4)), np.zeros((1, 4)), np.zeros((1, 4)))
