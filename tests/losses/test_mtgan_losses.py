"""MTGAN Eq. 10 (generator) and Eq. 11 (discriminator) against values written out in numpy."""
import numpy as np
import pytest

from jaxdet.losses import mtgan as L


def _softplus(x):
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _ce(logits, label):
  z = logits - logits.max()
  return -(z[label] - np.log(np.exp(z).sum()))


def _sl1(x):
  a = np.abs(x)
  return np.where(a < 1, 0.5 * x * x, a - 0.5).sum()


@pytest.fixture
def case():
  rng = np.random.default_rng(0)
  b = 4
  return dict(
      d_sr={"adv": rng.normal(size=b).astype(np.float32),
            "cls": rng.normal(size=(b, 3)).astype(np.float32),
            "reg": rng.normal(size=(b, 4)).astype(np.float32)},
      d_hr={"adv": rng.normal(size=b).astype(np.float32),
            "cls": rng.normal(size=(b, 3)).astype(np.float32),
            "reg": rng.normal(size=(b, 4)).astype(np.float32)},
      sr=rng.uniform(-1, 1, (b, 2, 2, 3)).astype(np.float32),
      hr=rng.uniform(-1, 1, (b, 2, 2, 3)).astype(np.float32),
      labels=np.array([2, 0, 1, -1], np.int32),           # last row: padding
      v=rng.normal(size=(b, 4)).astype(np.float32),
      valid=np.array([True, True, True, False]))


def test_generator_loss_equals_eq10_written_out(case):
  a, b_, g = 0.001, 0.01, 0.01
  rows = [0, 1, 2]                      # valid RoIs; N = 3
  adv = np.mean([-_softplus(case["d_sr"]["adv"][i]) for i in rows])     # log(1 - sigmoid(l))
  cls = np.mean([_ce(case["d_sr"]["cls"][i], case["labels"][i]) for i in rows])
  reg = np.mean([_sl1(case["d_sr"]["reg"][i] - case["v"][i]) if case["labels"][i] >= 1 else 0.0
                 for i in rows])
  mse = np.mean([np.mean((case["sr"][i] - case["hr"][i]) ** 2) for i in rows])
  total, terms = L.generator_loss(case["d_sr"], case["sr"], case["hr"], case["labels"], case["v"],
                                  valid=case["valid"])
  np.testing.assert_allclose(float(terms["adv"]), a * adv, rtol=1e-5)
  np.testing.assert_allclose(float(terms["cls"]), b_ * cls, rtol=1e-5)
  np.testing.assert_allclose(float(terms["reg"]), g * reg, rtol=1e-5)
  np.testing.assert_allclose(float(terms["mse"]), mse, rtol=1e-5)
  np.testing.assert_allclose(float(total), a * adv + b_ * cls + g * reg + mse, rtol=1e-5)
  # Switching one term off removes exactly that term.
  total_no_cls, t2 = L.generator_loss(case["d_sr"], case["sr"], case["hr"], case["labels"],
                                      case["v"], valid=case["valid"], use_cls=False)
  assert float(t2["cls"]) == 0.0
  np.testing.assert_allclose(float(total_no_cls), float(total) - b_ * cls, rtol=1e-5)
  # The non-saturating form: -alpha log D(G).
  _, t3 = L.generator_loss(case["d_sr"], case["sr"], case["hr"], case["labels"], case["v"],
                           valid=case["valid"], adversarial="non_saturating")
  want = a * np.mean([_softplus(-case["d_sr"]["adv"][i]) for i in rows])
  np.testing.assert_allclose(float(t3["adv"]), want, rtol=1e-5)


def test_discriminator_loss_equals_eq11_written_out(case):
  a, b_, g = 0.001, 0.01, 0.01
  rows = [0, 1, 2]
  adv = np.mean([_softplus(case["d_sr"]["adv"][i]) + _softplus(-case["d_hr"]["adv"][i])
                 for i in rows])
  cls = np.mean([_ce(case["d_sr"]["cls"][i], case["labels"][i])
                 + _ce(case["d_hr"]["cls"][i], case["labels"][i]) for i in rows])
  reg = np.mean([(_sl1(case["d_hr"]["reg"][i] - case["v"][i])
                  + _sl1(case["d_sr"]["reg"][i] - case["v"][i])) if case["labels"][i] >= 1
                 else 0.0 for i in rows])
  total, terms = L.discriminator_loss(case["d_hr"], case["d_sr"], case["labels"], case["v"],
                                      valid=case["valid"])
  np.testing.assert_allclose(float(terms["adv"]), a * adv, rtol=1e-5)
  np.testing.assert_allclose(float(terms["cls"]), b_ * cls, rtol=1e-5)
  np.testing.assert_allclose(float(terms["reg"]), g * reg, rtol=1e-5)
  np.testing.assert_allclose(float(total), a * adv + b_ * cls + g * reg, rtol=1e-5)


def test_padding_rows_contribute_nothing(case):
  total, _ = L.discriminator_loss(case["d_hr"], case["d_sr"], case["labels"], case["v"],
                                  valid=case["valid"])
  changed = {k: {n: x.copy() for n, x in case[k].items()} for k in ("d_hr", "d_sr")}
  for k in changed:
    for n in changed[k]:
      changed[k][n][3] = 1e3          # the padding row
  total2, _ = L.discriminator_loss(changed["d_hr"], changed["d_sr"], case["labels"], case["v"],
                                   valid=case["valid"])
  assert float(total) == float(total2)


def test_pretrain_loss_is_the_per_pixel_mse(case):
  want = np.mean([np.mean((case["sr"][i] - case["hr"][i]) ** 2) for i in range(3)])
  np.testing.assert_allclose(float(L.pretrain_loss(case["sr"], case["hr"], case["valid"])), want,
                             rtol=1e-6)
