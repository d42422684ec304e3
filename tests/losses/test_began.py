"""Tests for jaxdet.losses.began (k_t of Eq. 8, BEGAN) against a numpy replay of the update."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import began as B


def replay(l_real, l_fake, k0, lambda_k, gamma):
  """numpy Eq. 8 with the [0, 1] bound: the k_t used at each step and the final k."""
  k, used = np.float64(k0), []
  for r, f in zip(l_real, l_fake):
    used.append(k)
    k = min(max(k + lambda_k * (gamma * r - f), 0.0), 1.0)
  return np.array(used), k


def run_scan(state, l_real, l_fake, lambda_k, gamma):
  @jax.jit
  def run(state, l_real, l_fake):
    def step(s, losses):
      return B.began_update(s, losses[0], losses[1], lambda_k=lambda_k, gamma=gamma), s.k
    return jax.lax.scan(step, state, (l_real, l_fake))
  return run(state, jnp.asarray(l_real), jnp.asarray(l_fake))


def test_trajectory_matches_numpy_including_both_bounds():
  rng = np.random.default_rng(0)
  n = 300
  # phases: D ahead (l_fake > gamma l_real: k pinned at 0), G ahead (k rises to 1), mixed
  l_real = rng.uniform(0.5, 1.5, n).astype(np.float32)
  l_fake = np.concatenate([rng.uniform(1.0, 2.0, 60), rng.uniform(0.0, 0.1, 120),
                           rng.uniform(0.2, 1.0, 120)]).astype(np.float32)
  lambda_k, gamma = 0.05, 0.5
  ref_used, ref_final = replay(l_real, l_fake, 0.0, lambda_k, gamma)
  assert np.sum(ref_used == 0.0) > 30 and np.sum(ref_used == 1.0) > 30   # both clips happen
  assert np.any((ref_used > 0.05) & (ref_used < 0.95))
  state, used = run_scan(B.began_init(), l_real, l_fake, lambda_k, gamma)
  np.testing.assert_allclose(np.asarray(used), ref_used, atol=2e-5)
  assert float(state.k) == pytest.approx(ref_final, abs=2e-5)


def test_hand_computed_steps_and_defaults():
  s = B.began_init(0.5)
  s = B.began_update(s, 2.0, 0.2, lambda_k=0.1, gamma=0.5)        # 0.5 + 0.1 (1 - 0.2)
  assert float(s.k) == pytest.approx(0.58)
  s = B.began_update(s, 1.0, 10.0, lambda_k=0.1, gamma=0.5)       # 0.58 - 0.95 -> 0
  assert float(s.k) == 0.0
  s = B.began_update(B.began_init(0.99), 1.0, 0.0, lambda_k=0.1, gamma=0.5)   # -> 1
  assert float(s.k) == 1.0
  # BEGAN's defaults: lambda_k = 0.001, gamma = 0.5, k_0 = 0
  s = B.began_update(B.began_init(), 4.0, 1.0)
  assert float(s.k) == pytest.approx(0.001 * (0.5 * 4.0 - 1.0))
  assert (B.LAMBDA_K, B.GAMMA, B.K0) == (0.001, 0.5, 0.0)


def test_convergence_measure():
  assert float(B.convergence_measure(2.0, 0.5, 0.5)) == pytest.approx(2.5)
  assert float(B.convergence_measure(2.0, 1.5, 0.5)) == pytest.approx(2.5)
  assert float(B.convergence_measure(2.0, 1.0, 0.5)) == pytest.approx(2.0)
  assert float(jax.grad(lambda r: B.convergence_measure(r, 1.0))(3.0)) == 0.0


def test_state_pytree_no_gradient_and_checkpoint_roundtrip():
  s = B.began_init(0.25)
  assert s.k.shape == () and s.k.dtype == jnp.float32 and len(jax.tree.leaves(s)) == 1

  def f(x):
    return B.began_update(B.began_update(s, x, 0.1), 3 * x, 0.2).k
  assert float(jax.grad(f)(1.0)) == 0.0
  restored = B.BeganState(*[jnp.asarray(np.asarray(x)) for x in jax.tree.leaves(s)])
  assert float(B.began_update(restored, 1.0, 0.2).k) == float(B.began_update(s, 1.0, 0.2).k)
  # traced hyper-parameters are accepted
  k = jax.jit(lambda lk, g: B.began_update(s, 1.0, 0.2, lambda_k=lk, gamma=g).k)(0.1, 0.5)
  assert float(k) == pytest.approx(0.25 + 0.1 * (0.5 - 0.2))


def test_bad_arguments():
  with pytest.raises(ValueError, match="k0"):
    B.began_init(1.5)
  s = B.began_init()
  with pytest.raises(ValueError, match="gamma"):
    B.began_update(s, 1.0, 1.0, gamma=1.5)
  with pytest.raises(ValueError, match="lambda_k"):
    B.began_update(s, 1.0, 1.0, lambda_k=-0.1)
  with pytest.raises(ValueError, match="scalar"):
    B.began_update(s, jnp.ones(3), 1.0)
