"""Benchmark: AP-loss forward+backward vs the per-positive numpy loop of Alg. 1 vs focal loss.

    python benchmarks/bench_ap_loss.py [--classes 20 80] [--positives 1000] [--loop-positives 40]

Data: 8 images x 49,104 anchors x C classes, logits ~ N(0, 1), about ``--positives`` random
positives shifted by +1.5, 1% ignored, delta = 1. The numpy loop is Alg. 1 (trivial negatives
pruned, vectorised over negatives, one iteration per positive in ascending score); it is
timed on the lowest ``--loop-positives`` positives and extrapolated linearly to all of them.
Accuracy: jaxdet's loss and update vs an independent float64 numpy computation
(sort + searchsorted + prefix sums in float64), itself checked against the loop's rows.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxdet.losses.ranking import ap_loss

try:
  from jaxdet.losses.focal import sigmoid_focal_loss
except ImportError:  # tiny inline stand-in
  def sigmoid_focal_loss(logits, targets, *, alpha=0.25, gamma=2.0):
    p = jax.nn.sigmoid(logits)
    ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    pt = targets * p + (1 - targets) * (1 - p)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * (1 - pt) ** gamma * ce


def make_data(num_classes, num_pos, seed=0):
  rng = np.random.default_rng(seed)
  shape = (8, 49104, num_classes)
  m = int(np.prod(shape))
  s = rng.standard_normal(m, dtype=np.float32)
  lab = np.zeros(m, np.int32)
  lab[rng.choice(m, m // 100, replace=False)] = -1
  pos = rng.choice(m, num_pos, replace=False)
  lab[pos] = 1
  s[pos] += 1.5
  return s.reshape(shape), lab.reshape(shape)


def numpy_loop(s, lab, delta, n_iter):
  """Alg. 1 with pruning, first ``n_iter`` positives in ascending order. Returns
  (setup seconds, seconds per positive, {index: update}, precisions)."""
  t0 = time.perf_counter()
  s = s.ravel()
  lab = lab.ravel()
  pos = np.flatnonzero(lab == 1)
  neg = np.flatnonzero(lab == 0)
  sp = s[pos]
  neg = neg[s[neg] > sp.min() - delta]
  sn = s[neg]
  order = np.argsort(sp, kind="stable")
  g = np.zeros(s.shape, np.float32)
  max_prec = 0.0
  precs = []
  t1 = time.perf_counter()
  for ii in order[:n_iter]:
    hn = np.clip((sn - sp[ii]) / (2 * delta) + 0.5, 0, 1)
    rp = 1.0 + np.clip((sp - sp[ii]) / (2 * delta) + 0.5, 0, 1).sum() - 0.5
    lrow = hn / (rp + hn.sum())
    prec = 1.0 - lrow.sum()
    if prec >= max_prec:
      max_prec = prec
    else:
      lrow *= (1 - max_prec) / (1 - prec)
      prec = max_prec
    precs.append(prec)
    g[pos[ii]] = -lrow.sum()
    g[neg] += lrow
  t2 = time.perf_counter()
  rows = {int(pos[ii]): g[pos[ii]] / len(pos) for ii in order[:n_iter]}
  return t1 - t0, (t2 - t1) / n_iter, rows, np.array(precs)


def exact_float64(s, lab, delta):
  """Independent float64 computation of the AP-loss value and update (interpolated)."""
  z = s.ravel().astype(np.float64) / (2 * delta)
  lab = lab.ravel()
  pos = np.flatnonzero(lab == 1)
  a = np.sort(z[pos])
  order = np.argsort(z[pos], kind="stable")
  zn = np.sort(z[lab == 0])

  def ramp_sum(points, at):  # Σ_p H(p - at) for sorted points
    cum = np.concatenate([[0.0], np.cumsum(points)])
    lo = np.searchsorted(points, at - 0.5, side="right")
    hi = np.searchsorted(points, at + 0.5, side="left")
    above = len(points) - hi
    return above + (cum[hi] - cum[lo]) - (hi - lo) * (at - 0.5)

  n = ramp_sum(zn, a)
  r = 0.5 + ramp_sum(a, a)
  prec = r / (r + n)
  best = np.maximum.accumulate(prec)
  w = np.where(prec < best, (1 - best) / np.maximum(1 - prec, 1e-300), 1.0) / (r + n)
  g = np.zeros(z.shape)
  g[pos[order]] = -(1 - best) / len(pos)
  negi = np.flatnonzero(lab == 0)
  x = z[negi]
  cw = np.concatenate([[0.0], np.cumsum(w)])
  cwa = np.concatenate([[0.0], np.cumsum(w * a)])
  lo = np.searchsorted(a, x - 0.5, side="left")   # a_i < x - 1/2: H = 1
  hi = np.searchsorted(a, x + 0.5, side="right")  # a_i <= x + 1/2: linear part
  gn = cw[lo] + (x + 0.5) * (cw[hi] - cw[lo]) - (cwa[hi] - cwa[lo])
  g[negi] = gn / len(pos)
  return 1 - best.mean(), g


def timeit(fn, *args, repeats):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return first, min(times)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--classes", type=int, nargs="+", default=[20, 80])
  ap.add_argument("--positives", type=int, default=1000)
  ap.add_argument("--loop-positives", type=int, default=40)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--delta", type=float, default=1.0)
  args = ap.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
  ap_vg = jax.jit(jax.value_and_grad(lambda x, y: ap_loss(x, y, delta=args.delta)))

  def focal(x, y):
    per = sigmoid_focal_loss(x, (y == 1).astype(x.dtype))
    return jnp.sum(jnp.where(y >= 0, per, 0.0)) / jnp.maximum(jnp.sum(y == 1), 1)

  focal_vg = jax.jit(jax.value_and_grad(focal))
  for c in args.classes:
    s, lab = make_data(c, args.positives)
    npos = int((lab == 1).sum())
    xs, ys = jnp.asarray(s), jnp.asarray(lab)
    ap_first, ap_t = timeit(ap_vg, xs, ys, repeats=args.repeats)
    _, fo_t = timeit(focal_vg, xs, ys, repeats=args.repeats)
    n_iter = min(args.loop_positives, npos)
    setup, per_pos, rows, _ = numpy_loop(s, lab, args.delta, n_iter)
    loop_t = setup + per_pos * npos
    print(f"\n8 x 49104 x {c} = {s.size:,} entries, {npos} positives")
    print(f"  ap_loss fwd+bwd (jit)    {ap_t * 1e3:9.1f} ms   (first call incl. compile {ap_first:.1f} s)")
    print(f"  focal loss fwd+bwd (jit) {fo_t * 1e3:9.1f} ms   -> ap/focal = {ap_t / fo_t:.1f}x")
    print(f"  numpy loop of Alg. 1     {loop_t * 1e3:9.0f} ms   EXTRAPOLATED from {n_iter} of {npos} "
          f"positives ({per_pos * 1e3:.1f} ms each + {setup * 1e3:.0f} ms setup)"
          f" -> speed-up {loop_t / ap_t:.0f}x")
    loss, g = ap_vg(xs, ys)
    ref_loss, ref_g = exact_float64(s, lab, args.delta)
    g = np.asarray(g, np.float64).ravel()
    loop_err = max(abs(ref_g[k] - v) for k, v in rows.items()) / np.abs(ref_g).max()
    print(f"  accuracy vs float64: |loss err| {abs(float(loss) - ref_loss):.2e}, "
          f"max |update err| / max |update| {np.abs(g - ref_g).max() / np.abs(ref_g).max():.2e}, "
          f"negatives {np.abs(g - ref_g)[lab.ravel() == 0].max() / np.abs(ref_g).max():.2e} "
          f"(float64 ref vs loop rows: {loop_err:.1e})")
    del xs, ys, g, ref_g


if __name__ == "__main__":
  main()
