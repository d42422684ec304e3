"""AP-loss and AUC-loss with the error-driven update (Chen et al., "AP-loss for Accurate
One-Stage Object Detection", TPAMI).

Every entry of ``logits`` is one ranking sample (an (anchor, class) pair); labels are -1
ignored, 0 negative, 1 positive, and the ranking is over the whole array (the mini-batch,
§3.4.1). With H(x) = clip(x / 2δ + 1/2, 0, 1) (Eq. 21) and x_ij = s_j - s_i, for a positive i

  N_i = Σ_{j∈N} H(s_j - s_i),  r⁺_i = 1 + Σ_{k∈P, k≠i} H(s_k - s_i),
  prec_i = r⁺_i / (r⁺_i + N_i),  L_ij = H(x_ij) / (r⁺_i + N_i)          (Eq. 3)

and AP-loss = (1/|P|) Σ_i Σ_j L_ij = 1 - mean_i prec_i (Eq. 5). Interpolated AP (§3.4.3,
Alg. 1): positives are visited in ascending score with a running MaxPrec; a row with
prec_i < MaxPrec is scaled by (1 - MaxPrec)/(1 - prec_i) and counts MaxPrec as its precision.
The returned value is 1 - mean of the (interpolated) precisions, 0 without positives.
Positives with exactly equal scores have identical N_i, r⁺_i and prec_i, so the order in
which ties are visited cannot change anything (we visit them by flat index, like a stable
argsort).

Backward (``jax.custom_vjp``) is the error-driven update of Alg. 1 / Eq. 14, *not* the
derivative of the value, times the upstream cotangent: positive i gets -(1 - prec_i)/|P|,
negative j gets Σ_i L_ij/|P| (after interpolation); ignored entries and negatives with
s_j <= min_P s - δ (the trivial negatives of §3.4.4) get exactly 0; labels get no cotangent.
AUC-loss (Eq. 7) uses L'_ij = H(x_ij)/|N|: loss = (1/|P|) Σ_ij L'_ij, negative j gets
Σ_i L'_ij/|P|, positive i gets -Σ_j L'_ij/|P| (0 without positives or without negatives).

Exact algorithm in O(M) memory, no |P|×|N| matrix, no loop over positives, no full sort.
In units z = s/2δ each positive i is a ramp between the thresholds a_i - 1/2 and
a_i + 1/2. The positives come out of one ``top_k`` (K = ``max_positives``) already sorted;
their 2K thresholds are sorted; every entry finds c_j = #{thresholds <= z_j} through a
uniform bucket table plus (usually) two binary-search steps; then
- N_i, r⁺_i: one scatter-add of the entries into their c_j bins and prefix sums over the
  2K+1 bins. Σ_window (z_j - z_i) is formed from scores split into int32 digits
  (z = Σ_l d_l 2^-k_l, last digit 2^-24 or finer): window sums of digits are exact in
  wrapping int32 arithmetic, so there is no float cancellation over millions of entries;
- negative updates: G(z) = Σ_i w_i H(z - a_i) is piecewise linear with breakpoints at the
  thresholds; two prefix sums over the 2K thresholds and one gather per entry.
With more than K positives the same steps run on chunks of K positives in ascending
(score, index) order inside a loop that carries MaxPrec (exact, ceil(|P|/K) passes).
Labels other than 0/1 count as ignored. Scores are clipped to |s| <= 2^23 δ; they must be
finite (NaN gives garbage).

Global vs per-device ranking: under ``jax.jit`` with logits sharded over a 'data' mesh axis
``ap_loss`` ranks over the global batch (XLA gathers what it needs). ``ap_loss_per_shard``
ranks within each shard of the leading axis (``jax.shard_map``) and averages the shard
losses, like the authors' per-GPU code where each GPU's update is averaged over GPUs.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

DEFAULT_MAX_POSITIVES = 16384
_UNROLLED_STEPS = 2
_ZMAX = 2.0 ** 22  # |z| clip: the first int32 digit round(z * 2^8) must fit.


class _Cfg(NamedTuple):  # static part; delta and interpolate travel as (traceable) operands
  kind: str            # 'ap' or 'auc'
  max_positives: int | None


def _digit_exponents(m: int) -> tuple[int, ...]:
  """Exponents k_l of the int32 digits: a window holds at most m entries, and m times a
  digit difference (< 2^beta) must stay below 2^31 so window sums are exact mod 2^32."""
  beta = int(math.floor(math.log2((2 ** 31 - 1) / max(m, 1))))
  if beta < 2:
    raise ValueError(f"ranking losses support at most 2^29 entries per ranking; got {m}. "
                     "Use ap_loss_per_shard to rank smaller groups.")
  ks = [min(beta, 8)]
  while ks[-1] < 24:
    ks.append(ks[-1] + beta)
  return tuple(ks)


def _digits(x, ks):
  """int32 digits d_l with x = Σ_l d_l 2^-k_l + r, |r| <= 2^-(k_L+1); every step is exact."""
  out, r = [], x
  for k in ks:
    f = jnp.round(r * 2.0 ** k)
    out.append(f.astype(jnp.int32))
    r = r - f * 2.0 ** -k
  return out


def _locate(x, t, num_valid, num_grid: int):
  """c = #{m : t[m] <= x} for every x; t sorted, its first ``num_valid`` entries finite.

  A uniform grid of ``num_grid`` buckets over [t_0, t_last] maps values monotonically to
  buckets (the same float formula for thresholds and queries), so the answer lies in the
  bracket of thresholds sharing x's bucket; a binary search with as many steps as the most
  crowded bucket needs finishes it exactly (two unrolled steps in the common case, a loop
  when ties or clusters crowd a bucket).
  """
  has = num_valid > 0
  t_lo = jnp.where(has, t[0], 0.0)
  t_hi = jnp.where(has, t[jnp.maximum(num_valid - 1, 0)], 1.0)
  scale = num_grid / jnp.maximum(t_hi - t_lo, 1e-30)

  def bucket(v):
    return (jnp.clip(jnp.floor((v - t_lo) * scale), -1.0, num_grid) + 1.0).astype(jnp.int32)

  tb = jnp.where(jnp.arange(t.shape[0]) < num_valid, bucket(jnp.where(jnp.isfinite(t), t, 0.0)),
                 num_grid + 2)
  counts = jnp.zeros(num_grid + 3, jnp.int32).at[tb].add(1)
  table = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(counts[:-1])])  # #{tb < b}
  max_occupancy = jnp.max(counts[:-1])
  num_steps = 32 - lax.clz(max_occupancy)  # bit length: binary search steps for the bracket

  def step(_, carry):
    lo, hi = carry
    mid = (lo + hi) // 2
    le = jnp.take(t, mid, mode="clip") <= x
    active = lo < hi
    return jnp.where(active & le, mid + 1, lo), jnp.where(active & ~le, mid, hi)

  def search(unrolled):
    b = bucket(x)
    carry = (table[b], table[b + 1])
    if unrolled:  # straight-line code fuses with the bucket lookup into one pass
      for _ in range(_UNROLLED_STEPS):
        carry = step(0, carry)
      return carry[0]
    return lax.fori_loop(0, num_steps, step, carry)[0]

  # A loop over M-sized arrays costs extra passes even when it runs 0 times, hence the cond.
  return lax.cond(num_steps <= _UNROLLED_STEPS, lambda: search(True), lambda: search(False))


def _ramp_sums(bins, digit_cols, total, pos_minus, pos_plus, digits_a, ks):
  """For every positive i: Σ over the points of H(z_p - a_i) (z units, window width 1).

  ``bins`` are the points' c values (2K+1 marks points not taking part), ``digit_cols``
  their digits, ``total`` their number; a point is in i's window iff
  pos_minus[i] < c <= pos_plus[i], and above it (H = 1) iff c > pos_plus[i].
  """
  nbins = pos_minus.shape[0] * 2 + 2
  # Points below every threshold (c = 0: the trivial negatives, usually most entries) and the
  # points not taking part (the last bin) are in no window and above no positive: they are
  # left out of the scatter (out-of-range index, dropped) instead of all being added into one
  # bin -- on a GPU millions of atomic adds to one address. ``below`` corrects the count above.
  below = jnp.sum(bins == 0, dtype=jnp.int32)
  scatter_to = jnp.where((bins > 0) & (bins < nbins - 1), bins, nbins)
  cols = jnp.stack([jnp.ones_like(bins)] + list(digit_cols), axis=-1)
  hist = jnp.zeros((nbins, cols.shape[1]), jnp.int32).at[scatter_to].add(cols, mode="drop")
  incl = jnp.cumsum(hist[:-1], axis=0)  # int32, wraps: only window differences are used
  hp, hm = incl[pos_plus], incl[pos_minus]
  diff = hp - hm
  count = diff[:, 0]
  linear = sum((diff[:, l + 1] - count * digits_a[l]).astype(jnp.float32) * 2.0 ** -k
               for l, k in enumerate(ks))
  above = (total - below - hp[:, 0]).astype(jnp.float32)
  return above + linear + 0.5 * count.astype(jnp.float32)


class _Chunk(NamedTuple):
  a: jax.Array      # [K] ascending positive scores of the chunk, +inf padding
  idx: jax.Array    # [K] their flat indices
  valid: jax.Array  # [K] bool
  n_neg: jax.Array  # [K] N_i
  r_pos: jax.Array  # [K] r+_i (AP only)
  c: jax.Array      # [M] #{chunk thresholds <= z_j}
  t: jax.Array      # [2K] sorted thresholds a -/+ 1/2
  perm: jax.Array   # [2K] their order in concat(a - 1/2, a + 1/2)


def _chunk(z, dz, is_pos, is_neg, npos, nneg, a, idx, num_valid, *, kind, ks, all_positives):
  """N_i (and r+_i) for a chunk of positives a (ascending), against all entries."""
  k = a.shape[0]
  valid = jnp.arange(k) < num_valid
  t, perm = lax.sort((jnp.concatenate([a - 0.5, a + 0.5]), jnp.arange(2 * k, dtype=jnp.int32)),
                     num_keys=1)
  where_sorted = jnp.zeros(2 * k, jnp.int32).at[perm].set(jnp.arange(2 * k, dtype=jnp.int32))
  pm, pp = where_sorted[:k], where_sorted[k:]
  c = _locate(z, t, 2 * num_valid, int(min(2 ** 20, max(2 ** 10, 8 * k))))
  digits_a = _digits(jnp.where(valid, a, 0.0), ks)
  dummy = 2 * k + 1
  n_neg = jnp.maximum(_ramp_sums(jnp.where(is_neg, c, dummy), dz, nneg, pm, pp, digits_a, ks), 0.0)
  r_pos = n_neg
  if kind == "ap":  # Σ_{k∈P} H(a_k - a_i) includes the self term H(0) = 1/2: r+ = 1/2 + that
    if all_positives:
      r_pos = 0.5 + _ramp_sums(jnp.where(is_pos, c, dummy), dz, npos, pm, pp, digits_a, ks)
    else:
      r_pos = 0.5 + _ramp_sums(jnp.where(valid, c[idx], dummy), digits_a, npos, pm, pp, digits_a, ks)
  return _Chunk(a, idx, valid, n_neg, r_pos, c, t, perm)


def _chunk_update(ch: _Chunk, z, interp, prev_best, nneg, *, kind, need_grad):
  """(Σ_i (1 - prec_i) or Σ_i L'_i, last MaxPrec, negatives' Σ_i L_ij [M], positives' rows [K])."""
  if kind == "ap":
    prec = ch.r_pos / (ch.r_pos + ch.n_neg)
    run_max = jnp.maximum(prev_best, lax.cummax(jnp.where(ch.valid, prec, 0.0)))
    best = jnp.where(interp, run_max, prec)
    err = jnp.where(ch.valid, 1.0 - best, 0.0)
    scale = jnp.where(prec < best, (1.0 - best) / jnp.maximum(1.0 - prec, 1e-30), 1.0)
    w = jnp.where(ch.valid, scale / (ch.r_pos + ch.n_neg), 0.0)
    last_best = jnp.max(jnp.where(ch.valid, run_max, 0.0))
  else:
    inv_n = jnp.where(nneg > 0, 1.0 / jnp.maximum(nneg, 1).astype(jnp.float32), 0.0)
    err = jnp.where(ch.valid, ch.n_neg * inv_n, 0.0)
    w = jnp.where(ch.valid, inv_n, 0.0)
    last_best = prev_best
  if not need_grad:
    return jnp.sum(err), last_best, None, err
  # G(z) = Σ_i w_i H(z - a_i) = Σ_i w_i [R(z - a_i + 1/2) - R(z - a_i - 1/2)], R = max(., 0).
  ref = jnp.where(jnp.any(ch.valid), ch.a[0], 0.0)
  coef = jnp.concatenate([w, -w])[ch.perm]
  t_ref = jnp.where(jnp.isfinite(ch.t), ch.t - ref, 0.0)
  zero = jnp.zeros((1,), jnp.float32)
  cw = jnp.concatenate([zero, jnp.cumsum(coef)])
  cwt = jnp.concatenate([zero, jnp.cumsum(coef * t_ref)])
  g_neg = jnp.maximum((z - ref) * cw[ch.c] - cwt[ch.c], 0.0)
  return jnp.sum(err), last_best, g_neg, err


def _core(z, lab, interp, *, k: int, cfg: _Cfg, need_grad: bool, chunked: bool):
  """(loss, update) for flat float32 scores z (already divided by 2δ) and labels.

  Positives are taken k at a time in ascending (score, index) order: one chunk when
  |P| <= k, else a loop over chunks (carrying MaxPrec) whose memory stays that of one chunk.
  """
  m = z.shape[0]
  ks = _digit_exponents(m)
  is_pos, is_neg = lab == 1, lab == 0
  npos = jnp.sum(is_pos, dtype=jnp.int32)
  nneg = jnp.sum(is_neg, dtype=jnp.int32)
  inv_p = 1.0 / jnp.maximum(npos, 1).astype(jnp.float32)
  kw = dict(kind=cfg.kind, ks=ks, all_positives=chunked)
  iota = jnp.arange(m, dtype=jnp.int32)

  def one_chunk(after_z, after_i, done, prev_best, g):
    later = is_pos if not chunked else is_pos & ((z > after_z) | ((z == after_z) & (iota > after_i)))
    vals, idx = lax.top_k(jnp.where(later, -z, -jnp.inf), k)  # ties: lower index first
    num_valid = jnp.minimum(npos - done, k)
    a = jnp.where(jnp.arange(k) < num_valid, -vals, jnp.inf)
    ch = _chunk(z, _digits(z, ks), is_pos, is_neg, npos, nneg, a, idx, num_valid, **kw)
    part, last_best, g_neg, err = _chunk_update(ch, z, interp, prev_best, nneg, kind=cfg.kind,
                                                need_grad=need_grad)
    if need_grad:
      g = g + jnp.where(is_neg, g_neg * inv_p, 0.0)
      g = g.at[jnp.where(ch.valid, idx, m)].set(-err * inv_p, mode="drop")
    last = jnp.maximum(num_valid - 1, 0)
    return -vals[last], idx[last], done + num_valid, last_best, part, g

  g0 = jnp.zeros((m,), jnp.float32) if need_grad else None
  if not chunked:
    *_, part, g = one_chunk(-jnp.inf, -1, 0, 0.0, g0)
    return part * inv_p, g

  def body(_, carry):
    after_z, after_i, done, best, total, g = carry
    after_z, after_i, done, best, part, g = one_chunk(after_z, after_i, done, best, g)
    return after_z, after_i, done, best, total + part, g

  init = (jnp.float32(-jnp.inf), jnp.int32(-1), jnp.int32(0), jnp.float32(0), jnp.float32(0), g0)
  *_, total, g = lax.fori_loop(0, (npos + k - 1) // k, body, init)
  return total * inv_p, g


def _forward(logits, labels, delta, interp, cfg: _Cfg, need_grad: bool):
  scale = 0.5 / jnp.asarray(delta, jnp.float32)
  z = jnp.clip(jnp.ravel(logits).astype(jnp.float32) * scale, -_ZMAX, _ZMAX)
  z = jnp.where(z == 0, 0.0, z)  # -0 -> +0: top_k orders -0 < +0, comparisons do not
  lab = jnp.ravel(labels).astype(jnp.int32)
  m = z.shape[0]
  if m == 0:
    return jnp.zeros((), jnp.float32), jnp.zeros_like(z)
  k = m if cfg.max_positives is None else min(cfg.max_positives, m)
  run = functools.partial(_core, k=k, cfg=cfg, need_grad=need_grad)
  if k >= m:
    return run(z, lab, interp, chunked=False)
  return lax.cond(jnp.sum(lab == 1) <= k, functools.partial(run, chunked=False),
                  functools.partial(run, chunked=True), z, lab, interp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _ranking_loss(logits, labels, delta, interp, cfg: _Cfg):
  return _forward(logits, labels, delta, interp, cfg, need_grad=False)[0]


def _ranking_fwd(logits, labels, delta, interp, cfg):
  loss, g = _forward(logits, labels, delta, interp, cfg, need_grad=True)
  return loss, (g.reshape(jnp.shape(logits)), jnp.zeros((0,), jnp.result_type(logits)))


def _ranking_bwd(cfg, res, ct):
  g, dtype_tag = res
  return (g * ct).astype(dtype_tag.dtype), None, None, None


_ranking_loss.defvjp(_ranking_fwd, _ranking_bwd)


def _check(logits, labels, delta, max_positives):
  if jnp.shape(logits) != jnp.shape(labels):
    raise ValueError(f"labels must have the shape of logits {jnp.shape(logits)}; got {jnp.shape(labels)}")
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise ValueError(f"logits must be a float array (float32 or bfloat16); got {jnp.result_type(logits)}")
  if jnp.ndim(delta) != 0:
    raise ValueError(f"delta must be a scalar; got shape {jnp.shape(delta)}")
  if not isinstance(delta, jax.core.Tracer) and not (math.isfinite(float(delta)) and float(delta) > 0):
    raise ValueError(f"delta must be a positive finite number (Eq. 21; the paper uses 1.0); got {delta!r}")
  if max_positives is not None and (int(max_positives) != max_positives or max_positives < 1):
    raise ValueError(f"max_positives must be a positive integer or None; got {max_positives!r}")
  return None if max_positives is None else int(max_positives)


def ap_loss(logits, labels, *, delta=1.0, interpolate=True,
            max_positives: int | None = DEFAULT_MAX_POSITIVES):
  """AP-loss (Eq. 5, interpolated per Alg. 1 unless ``interpolate`` is False); float32 scalar.

  ``delta`` and ``interpolate`` may be traced scalars. ``max_positives`` (K) is a static
  size, not an approximation: more positives are handled exactly, K at a time, in
  ceil(|P|/K) passes over the entries (None: K = number of entries, one pass, more memory).
  """
  cfg = _Cfg("ap", _check(logits, labels, delta, max_positives))
  return _ranking_loss(logits, labels, delta, jnp.asarray(interpolate, bool), cfg)


def auc_loss(logits, labels, *, delta=1.0, max_positives: int | None = DEFAULT_MAX_POSITIVES):
  """AUC-loss (Eq. 7): (1/(|P||N|)) Σ_{i∈P, j∈N} H(s_j - s_i); error-driven update."""
  cfg = _Cfg("auc", _check(logits, labels, delta, max_positives))
  return _ranking_loss(logits, labels, delta, jnp.asarray(False), cfg)


def _per_shard(logits, labels, delta, interp, cfg: _Cfg, mesh, axis_name: str):
  if axis_name not in mesh.shape:
    raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}")
  n = mesh.shape[axis_name]
  if jnp.ndim(logits) < 1 or jnp.shape(logits)[0] % n:
    raise ValueError(f"the leading (batch) axis of logits {jnp.shape(logits)} must divide evenly "
                     f"over mesh axis {axis_name!r} of size {n}")
  spec = PartitionSpec(axis_name)

  def local(x, y, d, i):
    return lax.pmean(_ranking_loss(x, y, d, i, cfg), axis_name)

  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, PartitionSpec(), PartitionSpec()),
                       out_specs=PartitionSpec())(logits, labels, jnp.asarray(delta, jnp.float32),
                                                  jnp.asarray(interp, bool))


def ap_loss_per_shard(logits, labels, *, mesh, axis_name: str = "data", delta=1.0,
                      interpolate=True, max_positives: int | None = DEFAULT_MAX_POSITIVES):
  """AP-loss ranked within each shard of the leading axis over ``mesh[axis_name]``,
  averaged over shards (each shard's update is divided by the number of shards)."""
  cfg = _Cfg("ap", _check(logits, labels, delta, max_positives))
  return _per_shard(logits, labels, delta, interpolate, cfg, mesh, axis_name)


def auc_loss_per_shard(logits, labels, *, mesh, axis_name: str = "data", delta=1.0,
                       max_positives: int | None = DEFAULT_MAX_POSITIVES):
  """AUC-loss ranked within each shard of the leading axis, averaged over shards."""
  cfg = _Cfg("auc", _check(logits, labels, delta, max_positives))
  return _per_shard(logits, labels, delta, False, cfg, mesh, axis_name)
