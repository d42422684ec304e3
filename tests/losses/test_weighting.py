"""Tests for jaxdet.losses.weighting (ALWA) against a plain-Python replay of Algorithm 1."""

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import weighting as W


def replay(cls_seq, reg_seq, window, statistic, record, lam_cls=1.0, lam_reg=1.0):
  """Plain-Python ALWA: returns (weights used at each step, stats about the updates)."""
  s_cls, s_reg = [], []
  used = []
  taken = not_taken = 0
  min_margin = float('inf')
  for c, r in zip(cls_seq, reg_seq):
    used.append((lam_cls, lam_reg))  # this step's loss is weighted with these
    if record == 'weighted':
      c, r = lam_cls * c, lam_reg * r
    s_cls.append(float(c))
    s_reg.append(float(r))
    if len(s_cls) == window:
      if statistic == 'alwa1':
        cls = statistics.mean(s_cls) + statistics.stdev(s_cls)
        reg = statistics.mean(s_reg) + statistics.stdev(s_reg)
      else:
        cls = statistics.stdev(s_cls)
        reg = statistics.stdev(s_reg)
      min_margin = min(min_margin, abs(cls - reg) / max(cls, reg))
      if cls > reg:
        lam_cls = 1 - (cls - reg) / cls
        taken += 1
      else:
        not_taken += 1
      s_cls, s_reg = [], []
  return np.array(used), dict(taken=taken, not_taken=not_taken, min_margin=min_margin)


def synthetic_losses(n=350, window=5, seed=0):
  """Decaying losses whose noise level changes per window, so that cls > reg in some
  windows and cls <= reg in others, for both statistics."""
  rng = np.random.default_rng(seed)
  t = np.arange(n)
  n_windows = n // window + 1
  cls_amp = np.repeat(rng.uniform(0.02, 0.6, n_windows), window)[:n]
  reg_amp = np.repeat(rng.uniform(0.02, 0.3, n_windows), window)[:n]
  cls_level = np.repeat(rng.uniform(0.3, 1.5, n_windows), window)[:n]
  cls = cls_level * np.exp(-t / 300) + cls_amp * rng.standard_normal(n)
  reg = 0.8 * np.exp(-t / 600) + reg_amp * rng.standard_normal(n)
  return np.abs(cls).astype(np.float32), np.abs(reg).astype(np.float32)


def run_scan(state, cls_seq, reg_seq, statistic, record):
  """Jitted lax.scan over the sequence; returns (final state, weights used per step)."""

  @jax.jit
  def run(state, cls_seq, reg_seq):
    def step(s, losses):
      lam = jnp.stack(W.alwa_weights(s))
      s = W.alwa_update(s, losses[0], losses[1], statistic=statistic, record=record)
      return s, lam

    return jax.lax.scan(step, state, (cls_seq, reg_seq))

  return run(state, jnp.asarray(cls_seq), jnp.asarray(reg_seq))


CASES = [(w, stat, rec) for w in (5, 7) for stat in ('alwa1', 'alwa2')
         for rec in ('weighted', 'raw')]


@pytest.mark.parametrize('window,statistic,record', CASES)
def test_trajectory_matches_python_replay(window, statistic, record):
  cls_seq, reg_seq = synthetic_losses(350, window, seed=window)
  ref, info = replay(cls_seq, reg_seq, window, statistic, record)
  # The synthetic data must exercise both branches and have no near-ties (f32 vs f64).
  assert info['taken'] >= 3 and info['not_taken'] >= 3, info
  assert info['min_margin'] > 1e-4, info
  state, lam = run_scan(W.alwa_init(window), cls_seq, reg_seq, statistic, record)
  np.testing.assert_allclose(np.asarray(lam), ref, rtol=2e-5, atol=1e-6)
  # weights change only on the step after a full window, never before the first one
  assert np.all(np.asarray(lam)[:window] == 1.0)
  changes = np.nonzero(np.diff(np.asarray(lam)[:, 0]))[0] + 1
  assert np.all(changes % window == 0)
  assert np.all(np.asarray(lam)[:, 1] == 1.0)  # lambda_reg is never changed
  assert int(state.count) == 350 % window


def test_initial_weight_other_than_one_weighted_record():
  window = 7
  cls_seq, reg_seq = synthetic_losses(350, window, seed=3)
  ref, info = replay(cls_seq, reg_seq, window, 'alwa2', 'weighted', 0.75, 0.75)
  assert info['min_margin'] > 1e-4 and info['taken'] >= 1
  _, lam = run_scan(W.alwa_init(window, 0.75, 0.75), cls_seq, reg_seq, 'alwa2',
                    'weighted')
  np.testing.assert_allclose(np.asarray(lam), ref, rtol=2e-5, atol=1e-6)
  assert np.all(np.asarray(lam)[:, 1] == np.float32(0.75))


def test_hand_computed_single_window():
  # window of 3: cls = [1, 2, 3] (std 1), reg = [1, 1.5, 2] (std 0.5) -> lambda = 0.5
  s = W.alwa_init(3)
  for c, r in [(1., 1.), (2., 1.5), (3., 2.)]:
    assert float(W.alwa_weights(s)[0]) == 1.0
    s = W.alwa_update(s, c, r, statistic='alwa2')
  assert float(s.lambda_cls) == pytest.approx(0.5)
  assert int(s.count) == 0 and not np.any(np.asarray(s.cls_window))
  # ALWA_1 on the same numbers: cls = 2 + 1 = 3, reg = 1.5 + 0.5 = 2 -> 1 - 1/3
  s = W.alwa_init(3)
  for c, r in [(1., 1.), (2., 1.5), (3., 2.)]:
    s = W.alwa_update(s, c, r, statistic='alwa1')
  assert float(s.lambda_cls) == pytest.approx(2 / 3)
  # cls <= reg: weight stays
  s = W.alwa_init(3, 0.9, 0.9)
  for c, r in [(1., 1.), (1., 2.), (1., 3.)]:
    s = W.alwa_update(s, c, r, statistic='alwa2')
  assert float(s.lambda_cls) == pytest.approx(0.9)


@pytest.mark.parametrize('window,statistic,record', [(5, 'alwa2', 'weighted'),
                                                     (7, 'alwa1', 'weighted'),
                                                     (7, 'alwa2', 'raw')])
def test_resume_mid_window_matches_one_pass(window, statistic, record):
  cls_seq, reg_seq = synthetic_losses(350, window, seed=11)
  full_state, full_lam = run_scan(W.alwa_init(window), cls_seq, reg_seq, statistic,
                                  record)
  split = 173  # 173 % 5 == 3, 173 % 7 == 5: resumed in the middle of a window
  assert split % window != 0
  s1, lam1 = run_scan(W.alwa_init(window), cls_seq[:split], reg_seq[:split], statistic,
                      record)
  assert int(s1.count) == split % window
  # as a checkpoint would: to host numpy and back
  saved = jax.tree.map(np.asarray, s1)
  restored = W.AlwaState(*[jnp.asarray(x) for x in saved])
  s2, lam2 = run_scan(restored, cls_seq[split:], reg_seq[split:], statistic, record)
  np.testing.assert_array_equal(np.concatenate([lam1, lam2]), np.asarray(full_lam))
  for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(full_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_state_is_pytree_with_fixed_dtypes():
  s = W.alwa_init(4)
  leaves = jax.tree.leaves(s)
  assert len(leaves) == 5
  assert s.count.dtype == jnp.int32 and s.count.shape == ()
  assert s.cls_window.shape == (4,) and s.cls_window.dtype == jnp.float32
  s2 = jax.jit(lambda s: W.alwa_update(s, 1.0, 2.0))(s)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), s2) == jax.tree.map(
      lambda x: (x.shape, x.dtype), s)
  assert int(s2.count) == 1


def test_no_gradient_through_update():
  s = W.alwa_init(2)

  def f(x):
    s1 = W.alwa_update(s, x, 1.0)
    s2 = W.alwa_update(s1, 3 * x, 1.0)
    return s2.lambda_cls

  assert float(jax.grad(f)(1.0)) == 0.0


def test_bad_arguments():
  s = W.alwa_init(5)
  with pytest.raises(ValueError, match=r"alwa1.*alwa2"):
    W.alwa_update(s, 1.0, 1.0, statistic='std')
  with pytest.raises(ValueError, match=r"weighted.*raw"):
    W.alwa_update(s, 1.0, 1.0, record='unweighted')
  with pytest.raises(ValueError, match='window'):
    W.alwa_init(1)
  with pytest.raises(ValueError, match='lambda_cls'):
    W.alwa_init(5, lambda_cls=0.0)
  with pytest.raises(ValueError, match='scalars'):
    W.alwa_update(s, jnp.ones(3), 1.0)
