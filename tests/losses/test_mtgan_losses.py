"""MTGAN losses (Eqs. 4, 8, 10, 11) against numbers computed by hand / in plain numpy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import mtgan as L

ALPHA, BETA, GAMMA = 0.001, 0.01, 0.01  # §4.2


# ------------------------------------------------------------ numpy references, written from the paper
def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def np_log_softmax_at(logits, labels):
  logits = np.asarray(logits, np.float64)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return np.log(p[np.arange(len(labels)), labels])


def np_sl1(x):  # Eq. 8
  x = np.abs(np.asarray(x, np.float64))
  return np.where(x < 1, 0.5 * x * x, x - 0.5)


def np_reg(pred, target, labels):  # [u >= 1] sum_j SL1(t_j - v_j), Eq. 7
  return (np.asarray(labels) >= 1) * np_sl1(np.asarray(pred) - np.asarray(target)).sum(-1)


def np_mse(sr, hr):  # Eq. 4, per-pixel mean per image
  d = np.asarray(sr, np.float64) - np.asarray(hr, np.float64)
  return (d * d).reshape(len(d), -1).mean(-1)


def fixed_batch():
  rng = np.random.default_rng(0)
  labels = np.array([2, 0, 1, 3], np.int32)  # u: class + 1, 0 background
  d_sr = {"adv": np.array([0.5, -1.0, 2.0, -3.0], np.float32),
          "cls": rng.normal(size=(4, 4)).astype(np.float32),
          "reg": (rng.normal(size=(4, 4)) * 1.5).astype(np.float32)}
  d_hr = {"adv": np.array([1.5, 0.2, -0.7, 4.0], np.float32),
          "cls": rng.normal(size=(4, 4)).astype(np.float32),
          "reg": (rng.normal(size=(4, 4)) * 1.5).astype(np.float32)}
  targets = rng.normal(size=(4, 4)).astype(np.float32)
  sr = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
  hr = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
  return d_sr, d_hr, sr, hr, labels, targets


# ------------------------------------------------------------------------------- literal numbers
def test_literal_values_one_roi():
  # One positive RoI (u = 1) of K = 2 classes: adv logit 0 -> D = 0.5; equal class logits ->
  # D_cls = 1/3; t - v = (0.5, -2, 0, 1) -> SL1 = 0.125 + 1.5 + 0 + 0.5 = 2.125;
  # SR - HR = 0.5 on all 2 x 2 x 1 pixels -> MSE 0.25.
  d_sr = {"adv": jnp.array([0.0]), "cls": jnp.zeros((1, 3)), "reg": jnp.array([[0.5, -2.0, 0.0, 1.0]])}
  labels, targets = jnp.array([1]), jnp.zeros((1, 4))
  sr, hr = jnp.full((1, 2, 2, 1), 0.5), jnp.zeros((1, 2, 2, 1))
  total, t = L.generator_loss(d_sr, sr, hr, labels, targets)
  assert float(t["adv"]) == pytest.approx(0.001 * math.log(0.5), rel=1e-6)      # -6.931e-4
  assert float(t["cls"]) == pytest.approx(0.01 * math.log(3.0), rel=1e-6)       # 1.0986e-2
  assert float(t["reg"]) == pytest.approx(0.01 * 2.125, rel=1e-6)
  assert float(t["mse"]) == pytest.approx(0.25, rel=1e-6)
  assert float(total) == pytest.approx(-6.931472e-4 + 1.0986123e-2 + 2.125e-2 + 0.25, rel=1e-6)
  _, t = L.generator_loss(d_sr, sr, hr, labels, targets, adversarial="non_saturating")
  assert float(t["adv"]) == pytest.approx(0.001 * math.log(2.0), rel=1e-6)      # -a log 0.5
  # D: real logit 0 as well -> -a (log 0.5 + log 0.5) = 2 a log 2; cls and reg doubled
  total, t = L.discriminator_loss(d_sr, d_sr, labels, targets)
  assert float(t["adv"]) == pytest.approx(0.002 * math.log(2.0), rel=1e-6)
  assert float(t["cls"]) == pytest.approx(0.02 * math.log(3.0), rel=1e-6)
  assert float(t["reg"]) == pytest.approx(0.02 * 2.125, rel=1e-6)
  assert float(L.pretrain_loss(sr, hr)) == pytest.approx(0.25, rel=1e-6)


# ------------------------------------------------------------------------- against numpy formulas
@pytest.mark.parametrize("adversarial", ["paper", "non_saturating"])
def test_generator_loss_eq10(adversarial):
  d_sr, _, sr, hr, labels, targets = fixed_batch()
  a, b, g = 0.3, 0.7, 1.3  # non-default weights so a swapped weight shows
  total, t = L.generator_loss(d_sr, sr, hr, labels, targets, alpha=a, beta=b, gamma=g,
                              adversarial=adversarial)
  D = np_sigmoid(d_sr["adv"])
  adv = np.log(1 - D) if adversarial == "paper" else -np.log(D)
  want = {"adv": a * adv.mean(),
          "cls": -b * np_log_softmax_at(d_sr["cls"], labels).mean(),
          "reg": g * np_reg(d_sr["reg"], targets, labels).mean(),   # 1/N over all N RoIs
          "mse": np_mse(sr, hr).mean()}
  assert set(t) == set(want)
  for k in want:
    np.testing.assert_allclose(t[k], want[k], rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5)
  if adversarial == "paper":
    assert float(t["adv"]) < 0  # log of a probability
  jitted = jax.jit(lambda *x: L.generator_loss(*x, adversarial=adversarial)[0])
  np.testing.assert_allclose(jitted(d_sr, sr, hr, labels, targets),
                             L.generator_loss(d_sr, sr, hr, labels, targets, adversarial=adversarial)[0],
                             rtol=1e-6)


def test_discriminator_loss_eq11():
  d_sr, d_hr, _, _, labels, targets = fixed_batch()
  a, b, g = 0.3, 0.7, 1.3
  total, t = L.discriminator_loss(d_hr, d_sr, labels, targets, alpha=a, beta=b, gamma=g)
  want = {"adv": -a * (np.log(1 - np_sigmoid(d_sr["adv"])) + np.log(np_sigmoid(d_hr["adv"]))).mean(),
          "cls": -b * (np_log_softmax_at(d_sr["cls"], labels)
                       + np_log_softmax_at(d_hr["cls"], labels)).mean(),
          "reg": g * (np_reg(d_hr["reg"], targets, labels) + np_reg(d_sr["reg"], targets, labels)).mean()}
  assert set(t) == set(want)
  for k in want:
    np.testing.assert_allclose(t[k], want[k], rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5)
  # real and fake are not interchangeable in the adversarial term
  _, swapped = L.discriminator_loss(d_sr, d_hr, labels, targets, alpha=a, beta=b, gamma=g)
  assert abs(float(swapped["adv"]) - want["adv"]) > 1e-3
  np.testing.assert_allclose(swapped["cls"], want["cls"], rtol=1e-5)


def test_default_weights_are_the_papers():
  d_sr, d_hr, sr, hr, labels, targets = fixed_batch()
  _, t = L.generator_loss(d_sr, sr, hr, labels, targets)
  _, t1 = L.generator_loss(d_sr, sr, hr, labels, targets, alpha=1.0, beta=1.0, gamma=1.0)
  for k, w in (("adv", ALPHA), ("cls", BETA), ("reg", GAMMA), ("mse", 1.0)):
    np.testing.assert_allclose(t[k], w * t1[k], rtol=1e-6)
  _, t = L.discriminator_loss(d_hr, d_sr, labels, targets)
  _, t1 = L.discriminator_loss(d_hr, d_sr, labels, targets, alpha=1.0, beta=1.0, gamma=1.0)
  for k, w in (("adv", ALPHA), ("cls", BETA), ("reg", GAMMA)):
    np.testing.assert_allclose(t[k], w * t1[k], rtol=1e-6)


def test_regression_counts_positives_only_but_normalises_by_all_rois():
  d_sr, _, sr, hr, labels, targets = fixed_batch()
  _, t = L.generator_loss(d_sr, sr, hr, labels, targets)
  moved = {**d_sr, "reg": d_sr["reg"].copy()}
  moved["reg"][1] += 100.0  # row 1 is background (u = 0)
  _, t2 = L.generator_loss(moved, sr, hr, labels, targets)
  np.testing.assert_array_equal(t2["reg"], t["reg"])
  pos = labels >= 1
  np.testing.assert_allclose(t["reg"], GAMMA * np_reg(d_sr["reg"], targets, labels)[pos].sum() / 4,
                             rtol=1e-5)


# ------------------------------------------------------------------------------ switches
@pytest.mark.parametrize("term", ["adv", "cls", "reg", "mse"])
def test_generator_switch_removes_exactly_that_term(term):
  d_sr, _, sr, hr, labels, targets = fixed_batch()
  total, t = L.generator_loss(d_sr, sr, hr, labels, targets)
  off_total, off = L.generator_loss(d_sr, sr, hr, labels, targets, **{f"use_{term}": False})
  assert float(off[term]) == 0.0 and float(t[term]) != 0.0
  for k in t:
    if k != term:
      assert float(off[k]) == float(t[k])
  np.testing.assert_allclose(off_total, total - t[term], rtol=1e-6, atol=1e-7)  # float32 sums


@pytest.mark.parametrize("term", ["adv", "cls", "reg"])
def test_discriminator_switch_removes_exactly_that_term(term):
  d_sr, d_hr, _, _, labels, targets = fixed_batch()
  total, t = L.discriminator_loss(d_hr, d_sr, labels, targets)
  off_total, off = L.discriminator_loss(d_hr, d_sr, labels, targets, **{f"use_{term}": False})
  assert float(off[term]) == 0.0 and float(t[term]) != 0.0
  for k in t:
    if k != term:
      assert float(off[k]) == float(t[k])
  np.testing.assert_allclose(off_total, total - t[term], rtol=1e-6, atol=1e-7)  # float32 sums


def test_missing_branch_needs_the_switch():
  d_sr, d_hr, sr, hr, labels, targets = fixed_batch()
  no_adv = {k: v for k, v in d_sr.items() if k != "adv"}
  no_reg = {k: v for k, v in d_sr.items() if k != "reg"}
  with pytest.raises(ValueError, match="use_adv"):
    L.generator_loss(no_adv, sr, hr, labels, targets)
  with pytest.raises(ValueError, match="use_reg"):
    L.discriminator_loss(d_hr, no_reg, labels, targets)
  _, t = L.generator_loss(no_adv, sr, hr, labels, targets, use_adv=False)
  _, full = L.generator_loss(d_sr, sr, hr, labels, targets)
  assert float(t["adv"]) == 0.0 and float(t["cls"]) == float(full["cls"])
  _, t = L.discriminator_loss({k: v for k, v in d_hr.items() if k != "reg"}, no_reg, labels, targets,
                              use_reg=False)
  assert float(t["reg"]) == 0.0
  with pytest.raises(ValueError, match="adversarial"):
    L.generator_loss(d_sr, sr, hr, labels, targets, adversarial="wgan")


# ------------------------------------------------------------------------------ padding, gradients
def padded(batch, extra=3):
  """The fixed batch plus ``extra`` padding rows (garbage values, label -1 or valid False)."""
  d_sr, d_hr, sr, hr, labels, targets = batch
  rng = np.random.default_rng(5)
  cat = lambda x, scale=50.0: np.concatenate([x, (rng.normal(size=(extra,) + x.shape[1:]) * scale)
                                              .astype(np.float32)])
  d_sr2 = {k: cat(v) for k, v in d_sr.items()}
  d_hr2 = {k: cat(v) for k, v in d_hr.items()}
  labels2 = np.concatenate([labels, np.array([-1, 2, 1], np.int32)[:extra]])
  valid = np.concatenate([np.ones(len(labels), bool), np.array([True, False, False])[:extra]])
  # row 4: valid but label -1 (padding label); rows 5, 6: real labels but valid False
  return d_sr2, d_hr2, cat(sr, 3.0), cat(hr, 3.0), labels2, cat(targets), valid


def test_padded_rois_contribute_nothing():
  batch = fixed_batch()
  d_sr, d_hr, sr, hr, labels, targets = batch
  p_sr, p_hr, p_srimg, p_hrimg, p_labels, p_targets, valid = padded(batch)
  want_g, tg = L.generator_loss(d_sr, sr, hr, labels, targets)
  got_g, pg = L.generator_loss(p_sr, p_srimg, p_hrimg, p_labels, p_targets, valid=valid)
  want_d, td = L.discriminator_loss(d_hr, d_sr, labels, targets)
  got_d, pd = L.discriminator_loss(p_hr, p_sr, p_labels, p_targets, valid=valid)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-6)
  np.testing.assert_allclose(got_d, want_d, rtol=1e-6)
  for k in tg:
    np.testing.assert_allclose(pg[k], tg[k], rtol=1e-6, err_msg=k)
  for k in td:
    np.testing.assert_allclose(pd[k], td[k], rtol=1e-6, err_msg=k)
  np.testing.assert_allclose(L.pretrain_loss(p_srimg, p_hrimg, valid=valid & (p_labels >= 0)),
                             np_mse(sr, hr).mean(), rtol=1e-6)
  # all padding: 0, not NaN
  none = np.zeros_like(valid)
  assert float(L.generator_loss(p_sr, p_srimg, p_hrimg, p_labels, p_targets, valid=none)[0]) == 0.0
  assert float(L.discriminator_loss(p_hr, p_sr, p_labels, p_targets, valid=none)[0]) == 0.0


def test_gradients_finite_and_zero_on_padding():
  p_sr, p_hr, p_srimg, p_hrimg, p_labels, p_targets, valid = padded(fixed_batch())
  p_sr["adv"][0], p_hr["adv"][0] = 200.0, -200.0  # saturated logits
  p_sr["cls"][0] = [300.0, -300.0, 0.0, 0.0]
  for adversarial in ("paper", "non_saturating"):
    g_d, g_img = jax.grad(
        lambda d, s: L.generator_loss(d, s, p_hrimg, p_labels, p_targets, valid=valid,
                                      adversarial=adversarial)[0], argnums=(0, 1))(p_sr, p_srimg)
    for x in jax.tree_util.tree_leaves((g_d, g_img)):
      assert np.isfinite(x).all()
      np.testing.assert_array_equal(np.asarray(x)[4:], 0.0)
      assert np.abs(np.asarray(x)[:4]).max() > 0
  g_hr, g_sr = jax.grad(lambda a, b: L.discriminator_loss(a, b, p_labels, p_targets, valid=valid)[0],
                        argnums=(0, 1))(p_hr, p_sr)
  for x in jax.tree_util.tree_leaves((g_hr, g_sr)):
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(np.asarray(x)[4:], 0.0)
  # d adv / d logit = alpha (sigma(l) - 1) for the real image at l = -200: -alpha, not NaN
  np.testing.assert_allclose(g_hr["adv"][0], -ALPHA / 4, rtol=1e-5)


def test_pretrain_loss_is_eq4_per_pixel_mean():
  _, _, sr, hr, _, _ = fixed_batch()
  np.testing.assert_allclose(L.pretrain_loss(sr, hr), np_mse(sr, hr).mean(), rtol=1e-6)
  np.testing.assert_allclose(L.pretrain_loss(sr, hr, valid=np.array([True, False, True, False])),
                             np_mse(sr, hr)[[0, 2]].mean(), rtol=1e-6)
  g = jax.grad(L.pretrain_loss)(jnp.asarray(sr), jnp.asarray(hr))
  np.testing.assert_allclose(g, 2 * (sr - hr) / sr.size, rtol=1e-5)
  with pytest.raises(ValueError, match="shape"):
    L.pretrain_loss(sr, hr[:, :2])
