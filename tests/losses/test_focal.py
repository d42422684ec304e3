"""sigmoid_focal_loss vs a float64 numpy evaluation of Lin et al. Eq. 5."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses.focal import sigmoid_focal_loss


def ref_focal(x, t, alpha, gamma):
  out = np.zeros(x.shape)
  for i, (xi, ti) in enumerate(zip(x.ravel().astype(np.float64), t.ravel())):
    if ti < 0:
      continue
    p = 1 / (1 + np.exp(-xi))
    pt = p if ti == 1 else 1 - p
    at = alpha if ti == 1 else 1 - alpha
    if alpha < 0:
      at = 1.0
    out.ravel()[i] = -at * (1 - pt) ** gamma * np.log(pt)
  return out


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.25, 1.0), (0.5, 0.0), (-1.0, 2.0)])
def test_matches_reference(alpha, gamma):
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(6, 7)) * 4).astype(np.float32)
  t = rng.integers(-1, 2, size=(6, 7))
  got = jax.jit(sigmoid_focal_loss, static_argnames=("alpha", "gamma"))(x, t, alpha=alpha, gamma=gamma)
  np.testing.assert_allclose(got, ref_focal(x, t, alpha, gamma), rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(got)[t < 0] == 0)


def test_large_logits_stable_and_grads_finite():
  x = jnp.array([-200.0, -30.0, 30.0, 200.0, -200.0, 200.0, 0.0, 5.0])
  t = jnp.array([1, 1, 0, 0, 0, 1, -1, -1])
  val = sigmoid_focal_loss(x, t)
  g = jax.grad(lambda z: jnp.sum(sigmoid_focal_loss(z, t)))(x)
  assert np.all(np.isfinite(val)) and np.all(np.isfinite(g))
  # confidently wrong: loss ~ alpha_t * |x|
  np.testing.assert_allclose(val[:4], [0.25 * 200, 0.25 * 30, 0.75 * 30, 0.75 * 200], rtol=1e-4)
  np.testing.assert_allclose(val[4:6], 0.0, atol=1e-30)
  np.testing.assert_array_equal(g[6:], 0.0)


def test_gradient_matches_finite_difference():
  x = jnp.array([-1.3, 0.2, 2.5], jnp.float32)
  t = jnp.array([1, 0, 1])
  g = jax.grad(lambda z: jnp.sum(sigmoid_focal_loss(z, t)))(x)
  eps = 1e-3
  for i in range(3):
    e = np.zeros(3, np.float32)
    e[i] = eps
    fd = (ref_focal(np.asarray(x) + e, np.asarray(t), 0.25, 2.0).sum()
          - ref_focal(np.asarray(x) - e, np.asarray(t), 0.25, 2.0).sum()) / (2 * eps)
    assert float(g[i]) == pytest.approx(fd, rel=1e-3, abs=1e-5)
