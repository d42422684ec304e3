"""sigmoid / softmax cross-entropy vs float64 numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses.classification import sigmoid_cross_entropy, softmax_cross_entropy


def test_sigmoid_cross_entropy():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(5, 6)) * 5).astype(np.float32)
  t = rng.uniform(0, 1, size=(5, 6)).astype(np.float32)
  t[0] = -1  # ignored
  p = 1 / (1 + np.exp(-x.astype(np.float64)))
  want = np.where(t >= 0, -(t * np.log(p) + (1 - t) * np.log(1 - p)), 0.0)
  np.testing.assert_allclose(jax.jit(sigmoid_cross_entropy)(x, t), want, rtol=1e-5, atol=1e-6)
  big = sigmoid_cross_entropy(jnp.array([500.0, -500.0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(big, [500.0, 500.0])
  g = jax.grad(lambda z: jnp.sum(sigmoid_cross_entropy(z, jnp.array([0.0, 1.0, -1.0]))))(jnp.array([500.0, -500.0, 1.0]))
  np.testing.assert_allclose(g, [1.0, -1.0, 0.0])


def test_softmax_cross_entropy():
  rng = np.random.default_rng(1)
  x = (rng.normal(size=(3, 4, 5)) * 3).astype(np.float32)
  labels = rng.integers(-1, 5, size=(3, 4))
  want = np.zeros((3, 4))
  for i in range(3):
    for j in range(4):
      if labels[i, j] >= 0:
        z = x[i, j].astype(np.float64)
        want[i, j] = np.log(np.sum(np.exp(z))) - z[labels[i, j]]
  np.testing.assert_allclose(jax.jit(softmax_cross_entropy)(x, labels), want, rtol=1e-5, atol=1e-6)
  assert np.isfinite(float(softmax_cross_entropy(jnp.array([1000.0, -1000.0]), jnp.array(1))))
  with pytest.raises(ValueError, match="integer"):
    softmax_cross_entropy(x, labels.astype(np.float32))
  with pytest.raises(ValueError, match="shape"):
    softmax_cross_entropy(x, labels[0])
