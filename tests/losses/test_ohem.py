"""CE + OHEM (jaxdet.losses.ohem) against a plain-numpy per-image reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import ohem


def ref_ohem(logits, classes, state, ratio=3, min_neg=3):
  """Loss and its gradient; per image the hardest negatives by a stable descending sort."""
  x = np.asarray(logits, np.float64)
  logp = x - x.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  p = np.exp(logp)
  num_pos = max(int((state == 1).sum()), 1)
  loss, grad = 0.0, np.zeros_like(x)
  for b in range(x.shape[0]):
    chosen = []  # (anchor, channel)
    for a in range(x.shape[1]):
      if state[b, a] == 1:
        chosen.append((a, classes[b, a] + 1))
    negs = [a for a in range(x.shape[1]) if state[b, a] == 0]
    n_pos = sum(state[b] == 1)
    n_neg = min(max(int(np.floor(ratio * n_pos)), min_neg), len(negs))
    negs = sorted(negs, key=lambda a: -(-logp[b, a, 0]))  # stable: ties keep index order
    chosen += [(a, 0) for a in negs[:n_neg]]
    for a, c in chosen:
      loss -= logp[b, a, c]
      grad[b, a] += p[b, a]
      grad[b, a, c] -= 1.0
  return loss / num_pos, grad / num_pos


def make(seed, b=3, a=50, c=4, p=(0.1, 0.8, 0.1)):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, a, c + 1)).astype(np.float32)
  state = rng.choice([-1, 0, 1], p=p, size=(b, a)).astype(np.int32)
  classes = np.where(state == 1, rng.integers(0, c, size=(b, a)), -1).astype(np.int32)
  return logits, classes, state


vg = jax.jit(jax.value_and_grad(ohem.ce_ohem_loss), static_argnames=("neg_pos_ratio", "min_negatives"))


def assert_matches_reference(logits, classes, state, **kw):
  loss, g = vg(jnp.asarray(logits), classes, state, **kw)
  ref_loss, ref_g = ref_ohem(logits, classes, state,
                             kw.get("neg_pos_ratio", 3), kw.get("min_negatives", 3))
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(g), ref_g, atol=1e-6)


def test_random_batch():
  assert_matches_reference(*make(0))


def test_image_without_positives_and_few_negatives():
  logits, classes, state = make(1)
  state[0] = np.where(state[0] == 1, 0, state[0])  # image 0: only negatives -> min_negatives
  state[1] = np.where(np.arange(50) < 20, 1, np.where(np.arange(50) < 45, -1, 0))  # 20 pos, 5 neg
  classes = np.where(state == 1, np.abs(classes), -1).astype(np.int32)
  assert_matches_reference(logits, classes, state)
  assert_matches_reference(logits, classes, state, neg_pos_ratio=2, min_negatives=0)


def test_no_positives_anywhere_and_ties():
  logits, classes, state = make(2, p=(0.2, 0.8, 0.0))
  logits[:, 10:30] = logits[:, 10:11]  # identical rows: tied background losses
  assert_matches_reference(logits, classes, state, min_negatives=5)


def test_selection_is_the_hardest():
  logits, classes, state = make(3, b=1, a=12, p=(0.0, 0.9, 0.1))
  state[0, :] = 0
  state[0, 0] = 1
  classes[0, 0] = 1
  bg = -jax.nn.log_softmax(jnp.asarray(logits), -1)[..., 0]
  mask = np.asarray(ohem.hard_negative_mask(bg, jnp.asarray(state), neg_pos_ratio=3))
  want = np.zeros(12, bool)
  want[1 + np.argsort(-np.asarray(bg)[0, 1:], kind="stable")[:3]] = True
  np.testing.assert_array_equal(mask[0], want)


def test_bad_arguments():
  logits, classes, state = make(4)
  with pytest.raises(ValueError, match="logits"):
    ohem.ce_ohem_loss(logits[0], classes, state)
  with pytest.raises(ValueError, match="state"):
    ohem.ce_ohem_loss(logits, classes, state[:, :3])
  with pytest.raises(ValueError, match="neg_pos_ratio"):
    ohem.ce_ohem_loss(logits, classes, state, neg_pos_ratio=-1)
