"""AP-loss / AUC-loss (jaxdet.losses.ranking) against a plain-numpy float64 loop of Alg. 1."""
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import ranking

SHAPE = (2, 40, 3)


def H(x, delta):
  return np.clip(x / (2 * delta) + 0.5, 0.0, 1.0)


def ref_ap(s, t, delta=1.0, interpolate=True):
  """Alg. 1, one positive at a time in ascending score (ties: stable, by flat index)."""
  s = np.asarray(s, np.float64).ravel()
  t = np.asarray(t).ravel()
  pos, neg = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
  g = np.zeros_like(s)
  if len(pos) == 0:
    return 0.0, g
  max_prec, precs = 0.0, []
  for i in pos[np.argsort(s[pos], kind="stable")]:
    h = H(s[neg] - s[i], delta)
    rank_pos = 1.0 + H(s[pos[pos != i]] - s[i], delta).sum()
    row = h / (rank_pos + h.sum())
    prec = 1.0 - row.sum()
    if interpolate:
      if prec >= max_prec:
        max_prec = prec
      else:
        row = row * (1.0 - max_prec) / (1.0 - prec)
        prec = max_prec
    precs.append(prec)
    g[i] -= row.sum()
    g[neg] += row
  return 1.0 - np.mean(precs), g / len(pos)


def ref_auc(s, t, delta=1.0):
  s = np.asarray(s, np.float64).ravel()
  t = np.asarray(t).ravel()
  pos, neg = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
  g = np.zeros_like(s)
  if len(pos) == 0 or len(neg) == 0:
    return 0.0, g
  loss = 0.0
  for i in pos:
    row = H(s[neg] - s[i], delta) / len(neg)
    loss += row.sum()
    g[i] -= row.sum()
    g[neg] += row
  return loss / len(pos), g / len(pos)


@functools.lru_cache(maxsize=None)
def _vjp(kind, max_positives=ranking.DEFAULT_MAX_POSITIVES):
  """jit(x, y, cotangent, delta, interpolate) -> (loss, cotangent * update); one compile per shape."""
  def f(x, y, ct, delta, interp):
    if kind == "ap":
      fn = lambda x: ranking.ap_loss(x, y, delta=delta, interpolate=interp, max_positives=max_positives)
    else:
      fn = lambda x: ranking.auc_loss(x, y, delta=delta, max_positives=max_positives)
    loss, pull = jax.vjp(fn, x)
    return loss, pull(ct)[0]
  return jax.jit(f)


def run(kind, s, t, delta=1.0, interpolate=True, ct=1.0, **kw):
  loss, g = _vjp(kind, **kw)(jnp.asarray(s), jnp.asarray(t), jnp.float32(ct), jnp.float32(delta),
                             jnp.asarray(interpolate))
  return float(loss), np.asarray(g)


def make(seed, kind="normal", shape=SHAPE, p=(0.1, 0.75, 0.15)):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=shape).astype(np.float32)
  if kind == "ties":  # few distinct values: ties everywhere, many exactly at x = ±delta
    s = (np.round(s * 2) / 2).astype(np.float32)
  elif kind == "wide":
    s = (3 * s).astype(np.float32)
  t = rng.choice([-1, 0, 1], p=p, size=shape).astype(np.int32)
  return s, t


def assert_matches(got, want, ct=1.0):
  loss, g = got
  ref_loss, ref_g = want
  np.testing.assert_allclose(loss, ref_loss, atol=2e-6)
  np.testing.assert_allclose(g, ct * ref_g.reshape(g.shape), atol=2e-6 * max(1.0, abs(ct)), rtol=1e-4)


@pytest.mark.parametrize("delta,interpolate", [(1.0, True), (1.0, False), (0.5, True), (2.5, False)])
@pytest.mark.parametrize("kind", ["normal", "ties", "wide"])
def test_ap_matches_numpy_loop(kind, delta, interpolate):
  s, t = make(hash((kind, delta)) % 1000, kind)
  ct = 0.7
  assert_matches(run("ap", s, t, delta, interpolate, ct=ct), ref_ap(s, t, delta, interpolate), ct)


@pytest.mark.parametrize("delta", [1.0, 0.5])
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_auc_matches_numpy_loop(kind, delta):
  s, t = make(7, kind)
  assert_matches(run("auc", s, t, delta, ct=-1.3), ref_auc(s, t, delta), -1.3)


def test_ties_among_positives_are_order_free():
  s, t = make(3, "ties", p=(0.0, 0.5, 0.5))  # half positives, on a grid of half-integers
  loss, g = run("ap", s, t, 1.0, True)
  assert_matches((loss, g), ref_ap(s, t, 1.0, True))
  flat_s, flat_g, flat_t = s.ravel(), g.ravel(), t.ravel()
  for v in np.unique(flat_s[flat_t == 1]):  # tied positives get the same update
    same = flat_g[(flat_t == 1) & (flat_s == v)]
    np.testing.assert_array_equal(same, same[0])


def test_no_positives_gives_zero():
  s, t = make(1, p=(0.3, 0.7, 0.0))
  for kind in ("ap", "auc"):
    loss, g = run(kind, s, t)
    assert loss == 0.0
    assert not np.any(g)


def test_no_negatives():
  s, t = make(2, p=(0.5, 0.0, 0.5))
  assert_matches(run("ap", s, t), ref_ap(s, t))
  loss, g = run("auc", s, t)
  assert loss == 0.0 and not np.any(g)


def test_separated_positives_give_exactly_zero():
  s, t = make(4)
  s = np.where(t == 1, s + 12.0, s).astype(np.float32)  # every positive above all negatives + δ
  assert (t == 1).any() and s[t == 1].min() - 1.0 > s[t != 1].max()
  for interpolate in (True, False):
    loss, g = run("ap", s, t, 1.0, interpolate)
    assert loss == 0.0
    assert not np.any(g)
  loss, g = run("auc", s, t)
  assert loss == 0.0 and not np.any(g)


def test_trivial_and_ignored_entries_get_exactly_zero():
  s, t = make(5, "ties")  # half-integer scores, δ = 0.5: some negatives sit exactly at min_pos - δ
  delta = 0.5
  _, g = run("ap", s, t, delta)
  smin = s[t == 1].min()
  trivial = (t == 0) & (s <= smin - delta)
  assert trivial.any() and ((t == 0) & (s == smin - delta)).any()
  assert not np.any(g[trivial]) and not np.any(g[t == -1])
  assert np.all(g[(t == 0) & ~trivial] > 0) and np.all(g[t == 1] <= 0)


def test_batch_size_one():
  s, t = make(6, shape=(1, 64, 4))
  assert_matches(run("ap", s, t, 1.0, True), ref_ap(s, t, 1.0, True))


def test_permutation_invariance():
  s, t = make(8)
  loss, g = run("ap", s, t)
  perm = np.random.default_rng(0).permutation(s.size)
  loss_p, g_p = run("ap", s.ravel()[perm].reshape(SHAPE), t.ravel()[perm].reshape(SHAPE))
  np.testing.assert_allclose(loss_p, loss, atol=1e-6)
  np.testing.assert_allclose(g_p.ravel(), g.ravel()[perm], atol=1e-7)


def test_many_entries_far_from_zero():
  """2^18 entries around s = 45..50: float32 prefix sums over the sorted scores would get
  N_i wrong by up to ~35 here (N_i in 21..1345); the int32 digit sums are exact."""
  rng = np.random.default_rng(13)
  shape = (4, 16384, 4)
  s = (45.0 + 0.3 * rng.normal(size=shape)).astype(np.float32)
  t = np.zeros(shape, np.int32)
  flat_s, flat_t = s.reshape(-1), t.reshape(-1)
  near = rng.choice(s.size, 400, replace=False)
  flat_s[near] = 50.0 + rng.normal(size=400).astype(np.float32)
  flat_t[near[:25]] = 1
  flat_t[near[-30:]] = -1
  flat_s[rng.choice(s.size, 1000, replace=False)] += 4.5  # some bulk negatives inside windows
  assert_matches(run("ap", s, t), ref_ap(s, t))


def test_more_positives_than_max_positives():
  """Chunks of 5 positives (ties straddle chunk borders) vs one chunk: same exact result."""
  for seed, kind, p in [(9, "normal", (0.1, 0.7, 0.2)), (10, "normal", (0.1, 0.88, 0.02)),
                        (14, "ties", (0.1, 0.6, 0.3))]:
    s, t = make(seed, kind, p=p)
    for kind, ref in (("ap", ref_ap(s, t)), ("auc", ref_auc(s, t))):
      assert_matches(run(kind, s, t, max_positives=5), ref)


def test_bfloat16_logits():
  s, t = make(11)
  sb = jnp.asarray(s, jnp.bfloat16)
  loss, g = run("ap", sb, t)
  assert g.dtype == jnp.bfloat16
  g = np.asarray(g, np.float32)
  assert np.isfinite(loss) and np.all(np.isfinite(g))
  ref_loss, ref_g = ref_ap(np.asarray(sb, np.float32), t)  # same ranking problem, bf16 scores
  np.testing.assert_allclose(loss, ref_loss, atol=2e-6)
  np.testing.assert_allclose(g, ref_g.reshape(g.shape), atol=1e-4, rtol=1e-2)
  ref32 = ref_ap(s, t)[0]
  assert abs(loss - ref32) < 0.02


def test_value_only_path_and_label_cotangent():
  s, t = make(12)
  value = jax.jit(lambda x, y: ranking.ap_loss(x, y))(s, t)
  np.testing.assert_allclose(float(value), ref_ap(s, t)[0], atol=2e-6)
  # Float labels as a differentiable input: their cotangent is zero.
  gy = jax.jit(jax.grad(lambda x, y: ranking.ap_loss(x, y), argnums=1))(s, t.astype(np.float32))
  assert not np.any(np.asarray(gy))


@pytest.mark.parametrize("case", ["spread", "pairs", "clusters", "empty"])
def test_locate_matches_searchsorted(case):
  """The bucket + binary search used for every entry: c = #{thresholds <= x}."""
  rng = np.random.default_rng(0)
  n = 64
  if case == "spread":
    t = rng.normal(size=n)
  elif case == "pairs":  # distinct values sharing buckets (occupancy 2-3): the unrolled path
    t = np.repeat(rng.uniform(-2, 2, size=n // 4), 4)[:n] + np.tile([0, 1e-6, 2e-6, 5.0], n // 4)
  elif case == "clusters":  # 40 equal values: the looped path
    t = np.concatenate([np.full(40, 0.25), rng.normal(size=n - 40)])
  else:
    t = rng.normal(size=n)
  t = np.sort(t.astype(np.float32))
  num_valid = {"empty": 0, "spread": n - 9}.get(case, n)
  t[num_valid:] = np.inf
  x = np.concatenate([t[:num_valid], np.nextafter(t[:num_valid], -np.inf), rng.normal(size=200) * 3,
                      [-1e9, 1e9, 0.25]]).astype(np.float32)
  for grid in (8, 1024):
    got = jax.jit(ranking._locate, static_argnums=3)(jnp.asarray(x), jnp.asarray(t), num_valid, grid)
    np.testing.assert_array_equal(np.asarray(got), np.searchsorted(t[:num_valid], x, side="right"))


def test_bad_arguments():
  s, t = make(0)
  with pytest.raises(ValueError, match="delta"):
    ranking.ap_loss(s, t, delta=0.0)
  with pytest.raises(ValueError, match="labels"):
    ranking.ap_loss(s, t[:1])
  with pytest.raises(ValueError, match="max_positives"):
    ranking.auc_loss(s, t, max_positives=0)
  with pytest.raises(ValueError, match="float"):
    ranking.ap_loss(t, t)


_MULTI_DEVICE = textwrap.dedent(r"""
  import sys
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from jaxdet.losses import ranking
  sys.path.insert(0, {test_dir!r})
  from test_ranking import make, ref_ap, ref_auc
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("data",))
  s, t = make(21, shape=(8, 24, 3))
  sh = NamedSharding(mesh, P("data"))
  xs, ys = jax.device_put(s, sh), jax.device_put(t, sh)
  vg = jax.jit(jax.value_and_grad(lambda x, y: ranking.ap_loss(x, y)))
  v8, g8 = vg(xs, ys)
  v1, g1 = vg(jax.device_put(s, jax.devices()[0]), jax.device_put(t, jax.devices()[0]))
  assert g8.sharding.spec == P("data"), g8.sharding
  np.testing.assert_allclose(float(v8), float(v1), atol=1e-6)
  np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), atol=1e-7)
  rv, rg = ref_ap(s, t)
  np.testing.assert_allclose(np.asarray(g8).ravel(), rg, atol=2e-6)
  for name, fn, ref in (("ap", ranking.ap_loss_per_shard, ref_ap), ("auc", ranking.auc_loss_per_shard, ref_auc)):
    v, g = jax.jit(jax.value_and_grad(lambda x, y: fn(x, y, mesh=mesh)))(xs, ys)
    refs = [ref(s[d], t[d]) for d in range(8)]
    np.testing.assert_allclose(float(v), np.mean([r[0] for r in refs]), atol=2e-6)
    want = np.stack([r[1].reshape(s.shape[1:]) for r in refs]) / 8
    np.testing.assert_allclose(np.asarray(g), want, atol=2e-7)
  print("OK")
""")


def test_global_and_per_shard_ranking_on_8_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  code = _MULTI_DEVICE.format(test_dir=os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
