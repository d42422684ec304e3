"""Tests for jaxdet.losses.landmark_gan: heatmap L2 (Eq. 5, 6, 10, 11), D2's BEGAN loss (Eq. 7),
D3's least-squares loss (Eq. 9) and G2's loss (Eq. 10-13) against numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import landmark_gan as L

RNG = np.random.default_rng(0)
SHAPE = (3, 8, 8, 5)        # B, h, w, N + 1


def heatmaps():
  return RNG.normal(size=SHAPE).astype(np.float32)


def np_l2(t, p):
  """Per image mean over pixels of the channel sum of squared errors."""
  return ((t.astype(np.float64) - p) ** 2).sum(-1).mean((1, 2))


def test_heatmap_l2_normalisation_and_masks():
  t, p = heatmaps(), heatmaps()
  assert float(L.heatmap_l2(t, p)) == pytest.approx(np_l2(t, p).mean(), rel=1e-5)
  # the channel sum: (N + 1) x the element-wise MSE
  assert float(L.heatmap_l2(t, p)) == pytest.approx(5 * np.mean((t - p) ** 2), rel=1e-5)
  # per-image mask
  v = np.array([1, 0, 1], bool)
  assert float(L.heatmap_l2(t, p, v)) == pytest.approx(np_l2(t, p)[v].mean(), rel=1e-5)
  # per-channel mask (an invisible landmark): image 1 has no valid channel and does not count
  m = np.ones((3, 5), np.float32)
  m[0, 2] = 0
  m[1] = 0
  per = (((t - p) ** 2).mean((1, 2)) * m).sum(-1)
  assert float(L.heatmap_l2(t, p, m)) == pytest.approx((per[0] + per[2]) / 2, rel=1e-5)
  # a NaN in a masked channel neither leaks into the value nor into the gradient
  p_nan = p.copy()
  p_nan[0, :, :, 2] = np.nan
  val, g = jax.value_and_grad(lambda x: L.heatmap_l2(t, x, m))(jnp.asarray(p_nan))
  assert float(val) == pytest.approx((per[0] + per[2]) / 2, rel=1e-5)
  assert np.all(np.isfinite(np.asarray(g))) and not np.any(np.asarray(g)[1])
  with pytest.raises(ValueError, match=r"\[B, N\+1\]"):
    L.heatmap_l2(t, p, np.ones((3, 4)))


def test_d2_losses_eq5_to_7():
  h, h_rec, h_hat, h_hat_rec = heatmaps(), heatmaps(), heatmaps(), heatmaps()
  k = 0.3
  loss, terms = L.d2_losses(h, h_rec, h_hat, h_hat_rec, k)
  l_real, l_fake = np_l2(h, h_rec).mean(), np_l2(h_hat, h_hat_rec).mean()
  assert float(terms["l_real"]) == pytest.approx(l_real, rel=1e-5)
  assert float(terms["l_fake"]) == pytest.approx(l_fake, rel=1e-5)
  assert float(loss) == pytest.approx(l_real - k * l_fake, rel=1e-5)
  # k_t is a control variable: no gradient into it
  assert float(jax.grad(lambda k: L.d2_losses(h, h_rec, h_hat, h_hat_rec, k)[0])(0.3)) == 0.0
  # gradient w.r.t. the fake reconstruction: -k dl_fake (D2 pushes l_fake up)
  g = jax.grad(lambda r: L.d2_losses(h, h_rec, h_hat, r, k)[0])(jnp.asarray(h_hat_rec))
  want = -k * 2 * (h_hat_rec - h_hat) / (3 * 8 * 8)
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-7)


def test_d3_loss_eq9():
  real = np.array([0.9, 0.2], np.float32)
  fake_gen = np.array([0.1, -0.3], np.float32)
  fake_real_lr = np.array([0.5, 0.0, 1.0], np.float32)
  want = np.mean((real - 1) ** 2) + np.mean(fake_gen ** 2) + np.mean(fake_real_lr ** 2)
  assert float(L.d3_loss(real, fake_gen, fake_real_lr)) == pytest.approx(want, rel=1e-5)
  got = L.d3_loss(real, fake_gen, fake_real_lr, fake_real_lr_valid=np.array([1, 1, 0]))
  want = np.mean((real - 1) ** 2) + np.mean(fake_gen ** 2) + 0.125
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_g2_loss_eq10_to_13():
  h, h_hat, h_hat_rec = heatmaps(), heatmaps(), heatmaps()
  d3 = np.array([0.2, 1.5, -0.4, 0.9, 1.0, 0.0], np.float32)     # both fake kinds, concatenated
  a, b, c = 1.0, 0.1, 0.01
  total, terms = L.g2_loss(h, h_hat, h_hat_rec, d3, a=a, b=b, c=c)
  l_mse, l_kp = np_l2(h, h_hat).mean(), np_l2(h_hat, h_hat_rec).mean()
  l_conf = np.mean((d3 - 1) ** 2)
  assert float(terms["l_mse"]) == pytest.approx(l_mse, rel=1e-5)
  assert float(terms["l_kp"]) == pytest.approx(l_kp, rel=1e-5)
  assert float(terms["l_conf"]) == pytest.approx(l_conf, rel=1e-5)
  assert float(total) == pytest.approx(a * l_mse + b * l_kp + c * l_conf, rel=1e-5)
  # Eq. 11 is differentiated through Ĥ directly and through D2(Ĥ, I)
  g_pred, g_rec = jax.grad(lambda p, r: L.g2_loss(h, p, r, None, a=0.0, b=1.0, c=0.0)[0],
                           argnums=(0, 1))(jnp.asarray(h_hat), jnp.asarray(h_hat_rec))
  np.testing.assert_allclose(np.asarray(g_pred), 2 * (h_hat - h_hat_rec) / (3 * 64), rtol=1e-4,
                             atol=1e-7)
  np.testing.assert_allclose(np.asarray(g_rec), -np.asarray(g_pred), rtol=1e-5, atol=1e-7)
  # settings without D2 / D3: the missing terms are 0
  total, terms = L.g2_loss(h, h_hat, None, None, a=2.0, b=0.0, c=0.0)
  assert float(terms["l_kp"]) == 0.0 and float(terms["l_conf"]) == 0.0
  assert float(total) == pytest.approx(2 * l_mse, rel=1e-5)
  # masks: heatmap mask for l_MSE and l_kp, logit mask for l_conf
  v = np.array([1, 1, 0], bool)
  _, terms = L.g2_loss(h, h_hat, h_hat_rec, d3, a=a, b=b, c=c, valid=v,
                       d3_valid=np.array([1, 1, 1, 0, 0, 0]))
  assert float(terms["l_mse"]) == pytest.approx(np_l2(h, h_hat)[v].mean(), rel=1e-5)
  assert float(terms["l_kp"]) == pytest.approx(np_l2(h_hat, h_hat_rec)[v].mean(), rel=1e-5)
  assert float(terms["l_conf"]) == pytest.approx(np.mean((d3[:3] - 1) ** 2), rel=1e-5)
  with pytest.raises(ValueError, match="h_fake_rec"):
    L.g2_loss(h, h_hat, None, d3, a=a, b=b, c=c)
  with pytest.raises(ValueError, match="d3_fake_logits"):
    L.g2_loss(h, h_hat, h_hat_rec, None, a=a, b=b, c=c)
