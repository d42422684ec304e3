"""Tests for jaxdet.losses.gan: hinge (Eq. 2), least squares (Eq. 9, 12) and pixel L2 (Eq. 4) of
the low-resolution landmark paper against hand-computed numbers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import gan

REAL = np.array([2.0, 0.5, -1.0], np.float32)
FAKE = np.array([-2.0, 0.0, 0.5], np.float32)


def test_hinge_d_loss_hand_computed_and_equal_to_minus_printed_eq2():
  # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 1.5] -> 5/6
  assert float(gan.hinge_d_loss(REAL, FAKE)) == pytest.approx(5 / 3)
  # Eq. 2 as printed: E[min(0, -1 + D(x))] + E[min(0, -1 - D(x^))] is D's objective (to maximise)
  printed = np.mean(np.minimum(0, -1 + REAL)) + np.mean(np.minimum(0, -1 - FAKE))
  assert float(gan.hinge_d_loss(REAL, FAKE)) == pytest.approx(-printed)
  # masks: real rows 0, 1 -> (0 + 0.5) / 2; fake rows 1, 2 -> (1 + 1.5) / 2
  loss = gan.hinge_d_loss(REAL, FAKE, real_valid=np.array([1, 1, 0], bool),
                          fake_valid=np.array([0, 1, 1], bool))
  assert float(loss) == pytest.approx(0.25 + 1.25)
  # float weights: (1 * 0 + 3 * 0.5) / 4
  w = np.array([1.0, 3.0, 0.0], np.float32)
  assert float(gan.hinge_d_loss(REAL, FAKE, real_valid=w)) == pytest.approx(1.5 / 4 + 5 / 6)
  # a saturated discriminator has zero loss; [B, 1] logits are accepted
  assert float(gan.hinge_d_loss(np.full((4, 1), 1.5), np.full((2, 1), -1.5))) == 0.0


def test_hinge_g_loss():
  assert float(gan.hinge_g_loss(FAKE)) == pytest.approx(0.5)          # -mean([-2, 0, 0.5])
  assert float(gan.hinge_g_loss(FAKE, np.array([0, 0, 1]))) == pytest.approx(-0.5)
  g = jax.grad(lambda f: gan.hinge_g_loss(f))(jnp.asarray(FAKE))
  np.testing.assert_allclose(np.asarray(g), np.full(3, -1 / 3), rtol=1e-6)


def test_least_squares_losses():
  real = np.array([1.0, 0.0], np.float32)                 # (r - 1)^2 = [0, 1] -> 0.5
  fake1 = np.array([0.0, 1.0], np.float32)                # f^2 = [0, 1]      -> 0.5
  fake2 = np.array([0.5], np.float32)                     # 0.25
  # Eq. 9 sums the expectations
  assert float(gan.least_squares_d_loss(real, [fake1, fake2])) == pytest.approx(1.25)
  assert float(gan.least_squares_d_loss(real, fake1)) == pytest.approx(1.0)
  loss = gan.least_squares_d_loss(real, [fake1, fake2], real_valid=np.array([1, 0]),
                                  fake_valid=[np.array([0, 1]), None])
  assert float(loss) == pytest.approx(0.0 + 1.0 + 0.25)
  with pytest.raises(ValueError, match="one mask per fake kind"):
    gan.least_squares_d_loss(real, [fake1, fake2], fake_valid=np.array([1, 1]))
  # Eq. 12: E[(D(x^) - 1)^2]
  assert float(gan.least_squares_g_loss(np.array([1.0, 0.0, 3.0]))) == pytest.approx(5 / 3)
  assert float(gan.least_squares_g_loss(np.array([1.0, 0.0, 3.0]), np.array([1, 1, 0]))) == \
      pytest.approx(0.5)


def test_pixel_l2_hand_computed():
  gen = np.zeros((2, 2, 2, 3), np.float32)
  target = np.ones((2, 2, 2, 3), np.float32)
  target[1] = 2.0
  target[0, 0, 0] = [1.0, 4.0, 1.0]    # image 0: squared errors 11 ones + one 16 -> 27 / 12
  assert float(gan.pixel_l2(gen, target)) == pytest.approx((27 / 12 + 4.0) / 2)
  assert float(gan.pixel_l2(gen, target, np.array([True, False]))) == pytest.approx(27 / 12)
  target[1, 0, 0, 0] = np.nan          # a masked image cannot poison value or gradient
  val, g = jax.value_and_grad(lambda x: gan.pixel_l2(x, target, np.array([True, False])))(
      jnp.asarray(gen))
  assert float(val) == pytest.approx(27 / 12) and np.all(np.isfinite(np.asarray(g)))
  with pytest.raises(ValueError, match="one shape"):
    gan.pixel_l2(gen, target[:, :1])


def test_masked_rows_are_exact_zeros_without_nan_leak():
  real = jnp.array([0.0, jnp.nan])
  valid = jnp.array([True, False])
  val, g = jax.value_and_grad(
      lambda r: gan.hinge_d_loss(r, jnp.zeros(1), real_valid=valid))(real)
  assert float(val) == pytest.approx(2.0)
  assert np.all(np.isfinite(np.asarray(g))) and float(g[1]) == 0.0
  for loss_fn in (lambda r: gan.least_squares_d_loss(r, jnp.zeros(1), real_valid=valid),
                  lambda r: gan.least_squares_g_loss(r, valid),
                  lambda r: gan.hinge_g_loss(r, valid)):
    val, g = jax.value_and_grad(loss_fn)(real)
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g))) and float(g[1]) == 0.0
  # all-zero weights: the term is 0
  assert float(gan.weighted_mean(jnp.array([3.0, 4.0]), jnp.zeros(2))) == 0.0
  with pytest.raises(ValueError, match="one weight per sample"):
    gan.weighted_mean(jnp.ones(3), jnp.ones(2))
  with pytest.raises(ValueError, match="logits"):
    gan.hinge_g_loss(jnp.ones((2, 2)))
