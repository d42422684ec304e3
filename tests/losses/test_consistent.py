"""Consistent optimization terms (Eq. 1 / Eq. 2) vs a loop-based numpy reference, the zero-offset
reduction to the ordinary RetinaNet terms, alpha scaling, stop-gradient, and inference refinement."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.experiments.defaults import detector_defaults
from jaxdet.losses import consistent as K
from jaxdet.losses import detection as det

C = 3
CLAMP = math.log(1000.0 / 16.0)


# ---------------------------------------------------------------- numpy reference (loops)
def np_decode(d, a, w):
  aw, ah = a[2] - a[0], a[3] - a[1]
  ax, ay = a[0] + 0.5 * aw, a[1] + 0.5 * ah
  cx, cy = d[0] / w[0] * aw + ax, d[1] / w[1] * ah + ay
  bw, bh = math.exp(min(d[2] / w[2], CLAMP)) * aw, math.exp(min(d[3] / w[3], CLAMP)) * ah
  return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def np_encode(g, a, w):
  aw, ah = a[2] - a[0], a[3] - a[1]
  gw, gh = g[2] - g[0], g[3] - g[1]
  return np.array([w[0] * ((g[0] + g[2]) / 2 - (a[0] + a[2]) / 2) / aw,
                   w[1] * ((g[1] + g[3]) / 2 - (a[1] + a[3]) / 2) / ah,
                   w[2] * math.log(gw / aw), w[3] * math.log(gh / ah)])


def np_iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union


def np_match(anchors, gtb, gtc, gtv, pos_thr, neg_thr, low_quality):
  """Per anchor: state (1/0/-1), class, matched box. Same rule as jaxdet.ops.matching, by loops."""
  n = len(anchors)
  valid = [g for g in range(len(gtb)) if gtv[g]]
  state, cls, box = np.zeros(n, int), -np.ones(n, int), np.zeros((n, 4))
  if not valid:
    return state, cls, box
  iou = {(i, g): np_iou(anchors[i], gtb[g]) for i in range(n) for g in valid}
  gt_best = {g: max(iou[i, g] for i in range(n)) for g in valid}
  for i in range(n):
    best_g = max(valid, key=lambda g: (iou[i, g], -g))
    best = iou[i, best_g]
    positive = best >= pos_thr or (low_quality and any(iou[i, g] == gt_best[g] and gt_best[g] > 0 for g in valid))
    if positive:
      state[i], cls[i], box[i] = 1, gtc[best_g], gtb[best_g]
    elif best < neg_thr:
      state[i] = 0
    else:
      state[i] = -1
  return state, cls, box


def np_focal(x, y, alpha, gamma):
  p = 1.0 / (1.0 + math.exp(-x))
  if y == 1:
    return -alpha * (1 - p) ** gamma * math.log(p)
  return -(1 - alpha) * p ** gamma * math.log(1 - p)


def np_smooth_l1(d, beta):
  d = abs(d)
  return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def np_terms(outputs, anchors, gtb, gtc, gtv, lcfg, kcfg):
  """Reference of consistent_terms for focal + smooth_l1, any stages, per-stage loops.

  Class terms / N0 (positives of the original anchors, config thresholds) with
  cls_normalizer='shared', / the stage's own positives with 'separate'."""
  w = tuple(lcfg.box_weights)
  thr = {2: (kcfg.positive_iou, kcfg.negative_iou), 3: (0.7, 0.6)}
  B, A = outputs["box_deltas"].shape[:2]
  cur = np.broadcast_to(anchors, (B, A, 4)).astype(np.float64)
  n0 = max(sum(int((np_match(cur[b], gtb[b], gtc[b], gtv[b], lcfg.positive_iou, lcfg.negative_iou,
                              lcfg.allow_low_quality)[0] == 1).sum()) for b in range(B)), 1)
  refined_lq = lcfg.allow_low_quality and kcfg.refined_low_quality_matches
  cls_total = reg_total = 0.0
  stages = {}
  for s in range(2, max(kcfg.cls_stages, kcfg.reg_stages) + 1):
    prev = outputs["box_deltas" if s == 2 else "box_deltas_refined"]
    cur = np.array([[np_decode(prev[b, i], cur[b, i], w) for i in range(A)] for b in range(B)])
    matches = [np_match(cur[b], gtb[b], gtc[b], gtv[b], *thr[s], refined_lq) for b in range(B)]
    npos = max(sum(int((m[0] == 1).sum()) for m in matches), 1)
    stages[s] = (cur.copy(), matches, npos)
    if s <= kcfg.cls_stages:
      logits = outputs["cls_logits"]  # consistent variant: shared classifier
      tot = 0.0
      for b in range(B):
        st, cl, _ = matches[b]
        for i in range(A):
          if st[i] < 0:
            continue
          for c in range(C):
            tot += np_focal(logits[b, i, c], int(st[i] == 1 and cl[i] == c), lcfg.focal_alpha, lcfg.focal_gamma)
      cls_total += kcfg.alpha * tot / (n0 if kcfg.cls_normalizer == "shared" else npos)
    if s <= kcfg.reg_stages:
      pred = outputs["box_deltas_refined" if s == 2 else "box_deltas_refined2"]
      tot = 0.0
      for b in range(B):
        st, _, mb = matches[b]
        for i in range(A):
          if st[i] == 1:
            t = np_encode(mb[i], cur[b, i], w)
            tot += sum(np_smooth_l1(pred[b, i, k] - t[k], lcfg.smooth_l1_beta) for k in range(4))
      reg_total += tot / npos
  return cls_total, reg_total, stages


# ---------------------------------------------------------------- fixtures
def make_problem(seed=0, B=3, A=48, G=3, deltas_scale=1.0):
  """GT boxes; anchors = jittered GT copies + random boxes (so every label occurs); image 0 has a
  padded GT slot, image 2 has no valid GT."""
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, 60, size=(B, G, 2))
  wh = rng.uniform(12, 30, size=(B, G, 2))
  gtb = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  gtc = rng.integers(0, C, size=(B, G)).astype(np.int32)
  gtv = np.ones((B, G), bool)
  gtv[0, -1] = False
  gtv[2] = False
  src = gtb[rng.integers(0, 2, size=A // 2), rng.integers(0, G - 1, size=A // 2)]
  jit = src + rng.normal(scale=4.0, size=src.shape)
  jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 4)
  rxy = rng.uniform(0, 70, size=(A - A // 2, 2))
  rnd = np.concatenate([rxy, rxy + rng.uniform(8, 30, size=rxy.shape)], -1)
  anchors = np.concatenate([jit, rnd]).astype(np.float32)
  out = {"cls_logits": rng.normal(scale=2.0, size=(B, A, C)).astype(np.float32)}
  for k in ("box_deltas", "box_deltas_refined", "box_deltas_refined2"):
    out[k] = (deltas_scale * rng.normal(size=(B, A, 4))).astype(np.float32)
  out["cls_logits_refined"] = out["cls_logits_refined2"] = out["cls_logits"]
  return out, anchors, gtb, gtc, gtv


def configs(**kw):
  c = detector_defaults()
  c.loss.box_weights = (10.0, 10.0, 5.0, 5.0)
  c.consistent.enabled = True
  for k, v in kw.items():
    group, key = k.split("__")
    setattr(c[group], key, v)
  return c.loss, c.consistent


def call(outputs, anchors, gtb, gtc, gtv, lcfg, kcfg, targets=None, **kw):
  if targets is None:
    targets = orig_targets(anchors, gtb, gtc, gtv, lcfg)
  return K.consistent_terms(outputs, anchors, gtb, gtc, gtv, targets, lcfg, kcfg, C, **kw)


def orig_targets(anchors, gtb, gtc, gtv, lcfg, pos=None, neg=None):
  return det.anchor_targets(anchors, gtb, gtc, gtv, num_classes=C,
                            positive_iou=lcfg.positive_iou if pos is None else pos,
                            negative_iou=lcfg.negative_iou if neg is None else neg,
                            allow_low_quality=lcfg.allow_low_quality, box_weights=tuple(lcfg.box_weights))


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("stages,low_quality,normalizer,refined_lq", [
    ((2, 2), True, "separate", True), ((2, 2), False, "separate", True), ((3, 2), True, "separate", True),
    ((2, 3), True, "separate", True), ((2, 2), True, "shared", True), ((3, 2), True, "shared", False)])
def test_labels_targets_and_terms_match_numpy(stages, low_quality, normalizer, refined_lq):
  out, anchors, gtb, gtc, gtv = make_problem()
  lcfg, kcfg = configs(consistent__cls_stages=stages[0], consistent__reg_stages=stages[1],
                       consistent__alpha=0.7, loss__allow_low_quality=low_quality,
                       consistent__cls_normalizer=normalizer, consistent__refined_low_quality_matches=refined_lq)
  want_cls, want_reg, stages_ref = np_terms(out, anchors, gtb, gtc, gtv, lcfg, kcfg)
  # labels and targets of the stage-2 refined anchors
  a1 = K.refined_anchors(anchors, out["box_deltas"], lcfg.box_weights)
  ref_a1, matches, npos = stages_ref[2]
  np.testing.assert_allclose(a1, ref_a1, rtol=1e-5, atol=1e-4)
  t = K.refined_targets(a1, gtb, gtc, gtv, lcfg, kcfg, C)
  np.testing.assert_array_equal(t.state, np.stack([m[0] for m in matches]))
  np.testing.assert_array_equal(t.classes, np.stack([m[1] for m in matches]))
  assert {0, 1, -1} <= set(np.unique(t.state).tolist())  # the problem exercises every label
  w = tuple(lcfg.box_weights)
  for b in range(len(gtb)):
    for i in np.flatnonzero(matches[b][0] == 1):
      np.testing.assert_allclose(t.box_targets[b, i], np_encode(matches[b][2][i], ref_a1[b, i], w),
                                 rtol=1e-4, atol=1e-3)
  got = jax.jit(lambda o: call(o, anchors, gtb, gtc, gtv, lcfg, kcfg))(out)
  np.testing.assert_allclose(got["num_pos_refined"], npos)
  np.testing.assert_allclose(got["cls_loss_refined"], want_cls, rtol=1e-4)
  np.testing.assert_allclose(got["reg_loss_refined"], want_reg, rtol=1e-4)
  if max(stages) == 3:
    np.testing.assert_allclose(got["num_pos_refined2"], stages_ref[3][2])
  else:
    assert "num_pos_refined2" not in got


def test_refined_anchor_labels_differ_from_original():
  """Sanity of the fixture: refinement really changes the labels (else the reference test is weak)."""
  out, anchors, gtb, gtc, gtv = make_problem()
  lcfg, kcfg = configs()
  a1 = K.refined_anchors(anchors, out["box_deltas"], lcfg.box_weights)
  t0 = orig_targets(anchors, gtb, gtc, gtv, lcfg, 0.6, 0.5)
  t1 = orig_targets(a1, gtb, gtc, gtv, lcfg, 0.6, 0.5)
  assert np.any(np.asarray(t0.state) != np.asarray(t1.state))


@pytest.mark.parametrize("cls,reg", [("focal", "smooth_l1"), ("ap", "ciou"), ("focal", "giou")])
def test_zero_offsets_reduce_to_original_terms(cls, reg):
  out, anchors, gtb, gtc, gtv = make_problem(seed=1)
  out["box_deltas"] = np.zeros_like(out["box_deltas"])
  lcfg, kcfg = configs(loss__cls=cls, loss__reg=reg, loss__box_weights=(1.0, 1.0, 1.0, 1.0))
  kcfg.positive_iou, kcfg.negative_iou = lcfg.positive_iou, lcfg.negative_iou
  scaled = configs(loss__cls=cls, loss__reg=reg, loss__box_weights=(1.0, 1.0, 1.0, 1.0))[1]
  scaled.positive_iou, scaled.negative_iou, scaled.alpha = lcfg.positive_iou, lcfg.negative_iou, 2.5

  @jax.jit
  def run(o):
    t = orig_targets(anchors, gtb, gtc, gtv, lcfg)
    n = det.num_positives(t)
    want = (det.classification_loss(lcfg, o["cls_logits"], t, n),
            det.box_regression_loss(lcfg, o["box_deltas_refined"], anchors, t, n), n)
    return (want, K.refined_anchors(anchors, o["box_deltas"], (1, 1, 1, 1)),
            call(o, anchors, gtb, gtc, gtv, lcfg, kcfg, targets=t),
            call(o, anchors, gtb, gtc, gtv, lcfg, scaled, targets=t))

  (want_cls, want_reg, n), a1, got, got_scaled = run(out)
  np.testing.assert_allclose(a1, np.broadcast_to(anchors, a1.shape), rtol=1e-6, atol=1e-5)
  assert float(want_cls) > 0 and float(want_reg) > 0
  np.testing.assert_allclose(got["num_pos_refined"], n)
  np.testing.assert_allclose(got["cls_loss_refined"], want_cls, rtol=1e-5)
  np.testing.assert_allclose(got["reg_loss_refined"], want_reg, rtol=1e-5)
  np.testing.assert_allclose(got_scaled["cls_loss_refined"], 2.5 * want_cls, rtol=1e-5)
  np.testing.assert_allclose(got_scaled["reg_loss_refined"], want_reg, rtol=1e-5)  # alpha is Eq. 1 only


def test_stage_counts_and_normalizer():
  out, anchors, gtb, gtc, gtv = make_problem(seed=2)
  lcfg, full_cfg = configs()
  separate_cfg = configs(consistent__cls_normalizer="separate")[1]
  cls_cfg = configs(consistent__reg_stages=1, consistent__cls_normalizer="separate")[1]
  none_cfg = configs(consistent__reg_stages=1, consistent__cls_stages=1)[1]

  @jax.jit
  def run(o):
    t0 = orig_targets(anchors, gtb, gtc, gtv, lcfg)
    terms = [call(o, anchors, gtb, gtc, gtv, lcfg, k, targets=t0) for k in (separate_cfg, cls_cfg, none_cfg)]
    return terms + [call(o, anchors, gtb, gtc, gtv, lcfg, full_cfg, targets=t0), det.num_positives(t0)]

  full, cls_only, none, orig, n0 = run(out)
  assert full_cfg.cls_normalizer == "shared"  # the default: Eq. 1 with one N_cls
  np.testing.assert_allclose(cls_only["cls_loss_refined"], full["cls_loss_refined"], rtol=1e-6)
  assert float(cls_only["reg_loss_refined"]) == 0.0 and float(full["reg_loss_refined"]) > 0
  assert float(none["cls_loss_refined"]) == 0.0 and float(none["reg_loss_refined"]) == 0.0
  assert float(n0) != float(full["num_pos_refined"])
  np.testing.assert_allclose(orig["cls_loss_refined"] * n0, full["cls_loss_refined"] * full["num_pos_refined"],
                             rtol=1e-5)


def test_no_gradient_through_refined_boxes():
  out, anchors, gtb, gtc, gtv = make_problem(seed=3)
  lcfg, kcfg = configs()
  out = {k: jnp.asarray(v) for k, v in out.items()}

  def term(o, name):  # the consistent variant's stage-2 logits are the same array as stage 1's
    return call(dict(o, cls_logits_refined=o["cls_logits"]), anchors, gtb, gtc, gtv, lcfg, kcfg)[name]

  g_cls, g_reg, g_anchor = jax.jit(lambda o: (
      jax.grad(lambda o: term(o, "cls_loss_refined"))(o), jax.grad(lambda o: term(o, "reg_loss_refined"))(o),
      jax.grad(lambda d: jnp.sum(K.refined_anchors(anchors, d, (1, 1, 1, 1))))(o["box_deltas"])))(out)
  np.testing.assert_array_equal(g_cls["box_deltas"], 0.0)
  assert np.any(np.asarray(g_cls["cls_logits"]) != 0)
  np.testing.assert_array_equal(g_reg["box_deltas"], 0.0)
  assert np.any(np.asarray(g_reg["box_deltas_refined"]) != 0)
  for g in (g_cls, g_reg):
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(g))
  np.testing.assert_array_equal(g_anchor, 0.0)


def test_refine_for_inference_stages():
  out, anchors, _, _, _ = make_problem(seed=4)
  w = (10.0, 10.0, 5.0, 5.0)
  B, A = out["box_deltas"].shape[:2]
  a1 = np.array([[np_decode(out["box_deltas"][b, i], anchors[i], w) for i in range(A)] for b in range(B)])
  a2 = np.array([[np_decode(out["box_deltas_refined"][b, i], a1[b, i], w) for i in range(A)] for b in range(B)])
  two = {k: out[k] for k in ("cls_logits", "box_deltas", "box_deltas_refined")}
  got_a, got_d = K.refine_for_inference(two, anchors, w)
  np.testing.assert_allclose(got_a, a1, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(got_d, out["box_deltas_refined"])
  got_a, got_d = K.refine_for_inference(out, anchors, w)             # three box stages
  np.testing.assert_allclose(got_a, a2, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(got_d, out["box_deltas_refined2"])
  got_a, got_d = K.refine_for_inference(two, anchors, w, reg_stages=1)  # Table 3 "2*"
  np.testing.assert_array_equal(got_a, np.broadcast_to(anchors, (B, A, 4)))
  np.testing.assert_array_equal(got_d, out["box_deltas"])
  with pytest.raises(ValueError, match="reg_stages"):
    K.refine_for_inference(two, anchors, w, reg_stages=3)
  assert K.inference_logits({"cls_logits": 1}) == 1
  assert K.inference_logits({"cls_logits": 1, "cls_logits_refined": 2}) == 2


def test_errors():
  out, anchors, gtb, gtc, gtv = make_problem(seed=5)
  lcfg, kcfg = configs()
  del out["box_deltas_refined"]
  with pytest.raises(ValueError, match="box_deltas_refined"):
    call(out, anchors, gtb, gtc, gtv, lcfg, kcfg)
  kcfg.variant = "refinedet"
  with pytest.raises(ValueError, match="variant"):
    call(out, anchors, gtb, gtc, gtv, lcfg, kcfg)
  kcfg.variant, kcfg.cls_stages, kcfg.reg_stages = "consistent", 3, 1
  with pytest.raises(ValueError, match="cls_stages"):
    call(out, anchors, gtb, gtc, gtv, lcfg, kcfg)
  kcfg.cls_stages, kcfg.cls_normalizer = 2, "mean"
  with pytest.raises(ValueError, match="cls_normalizer"):
    call(out, anchors, gtb, gtc, gtv, lcfg, kcfg)
  with pytest.raises(ValueError, match="cls_normalizer"):
    K.check_config(kcfg)
  kcfg.cls_normalizer = "shared"
  with pytest.raises(ValueError, match="needs targets"):
    K.consistent_terms(out, anchors, gtb, gtc, gtv, None, lcfg, kcfg, C)
  with pytest.raises(ValueError, match="anchors"):
    K.refined_anchors(anchors[:5], out["box_deltas"], (1, 1, 1, 1))


# ---------------------------------------------------------------- hand cases of the fidelity options
GT = np.array([[[0.0, 0.0, 10.0, 10.0]]], np.float32)   # one image, one GT of class 1
GT_C, GT_V = np.array([[1]], np.int32), np.array([[True]])


def test_eq1_shared_vs_separate_normalizer_hand_case():
  """Eq. 1: L_cls = (1/N_cls) sum_i [FL(c_i, c*_i) + alpha FL(c_i, c+_i)] with one N_cls = N0
  ('shared') vs the refined term over its own N1 ('separate'), on a case where N0 = 3 != N1 = 2.

  Original anchors (IoU with the GT; mu 0.5 / 0.4): a0 = GT (1.0, +), a1 [0,0,10,20] (0.5, +),
  a2 [20,20,30,30] (0, -), a3 [0,0,10,14] (0.71, +)  ->  c* = (+, +, -, +), N0 = 3.
  Deltas (box_weights 1): a2 moved by (-2, -2, 0, 0) onto the GT, a3 by dx = +3 (30 px away),
  others 0  ->  refined IoUs 1, 0.5, 1, 0 under mu 0.6 / 0.5  ->  c+ = (+, ignored, +, -), N1 = 2.
  The GT's best anchor is positive in both sets, so low-quality matching changes nothing here."""
  anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 20], [20, 20, 30, 30], [0, 0, 10, 14]], np.float32)
  deltas = np.zeros((1, 4, 4), np.float32)
  deltas[0, 2] = (-2, -2, 0, 0)
  deltas[0, 3] = (3, 0, 0, 0)
  logits = np.random.default_rng(7).normal(scale=2.0, size=(1, 4, C)).astype(np.float32)
  out = {"cls_logits": logits, "cls_logits_refined": logits, "box_deltas": deltas,
         "box_deltas_refined": np.zeros_like(deltas)}
  state_orig, state_ref = (1, 1, 0, 1), (1, -1, 1, 0)   # written by hand from the IoUs above

  def fl_sum(states):
    return sum(np_focal(logits[0, i, c], int(st == 1 and c == 1), 0.25, 2.0)
               for i, st in enumerate(states) if st >= 0 for c in range(C))

  alpha = 0.8
  want = {"shared": (fl_sum(state_orig) + alpha * fl_sum(state_ref)) / 3,   # Eq. 1, N_cls = N0 = 3
          "separate": fl_sum(state_orig) / 3 + alpha * fl_sum(state_ref) / 2}
  assert abs(want["shared"] - want["separate"]) > 1e-2 * want["shared"]
  for normalizer, value in want.items():
    lcfg, kcfg = configs(loss__box_weights=(1.0, 1.0, 1.0, 1.0), consistent__alpha=alpha,
                         consistent__cls_normalizer=normalizer)

    @jax.jit
    def run(o):
      t0 = orig_targets(anchors, GT, GT_C, GT_V, lcfg)
      got = call(o, anchors, GT, GT_C, GT_V, lcfg, kcfg, targets=t0)
      # the experiment's total class loss: original term (its own / N0) + the refined term
      return t0.state, got, det.classification_loss(lcfg, o["cls_logits"], t0, det.num_positives(t0))

    state0, got, orig_term = run(out)
    np.testing.assert_array_equal(state0[0], state_orig)
    np.testing.assert_allclose(got["num_pos_refined"], 2.0)
    total = orig_term + got["cls_loss_refined"]
    np.testing.assert_allclose(total, value, rtol=1e-5)


def test_refined_low_quality_switch_hand_case():
  """A GT whose best refined anchor has IoU 0.5 < mu_pos = 0.6: with low-quality matches it is a
  refined positive (class 1, t+ = encode(GT, a1)), without it is ignored (0.5 in [mu_neg, mu_pos)).

  Anchors: a0 [20,0,30,20] moved by dx = -2 (box_weights 1) to [0,0,10,20] (IoU 0.5),
  a1 [50,50,60,60] (IoU 0), a2 [0,0,10,40] (IoU 0.25); deltas of a1, a2 zero."""
  anchors = np.array([[20, 0, 30, 20], [50, 50, 60, 60], [0, 0, 10, 40]], np.float32)
  deltas = np.zeros((1, 3, 4), np.float32)
  deltas[0, 0, 0] = -2.0
  pred = np.array([[[0.1, -0.2, 0.3, 0.05], [1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]]], np.float32)
  out = {"cls_logits": np.zeros((1, 3, C), np.float32), "box_deltas": deltas, "box_deltas_refined": pred}
  out["cls_logits_refined"] = out["cls_logits"]
  a1 = K.refined_anchors(anchors, deltas, (1, 1, 1, 1))
  np.testing.assert_array_equal(a1[0, 0], [0, 0, 10, 20])
  t_plus = np.array([0.0, (5 - 10) / 20, 0.0, math.log(10 / 20)])   # encode(GT, [0,0,10,20]) by hand
  cfgs = {lq: configs(loss__box_weights=(1.0, 1.0, 1.0, 1.0), consistent__refined_low_quality_matches=lq)
          for lq in (True, False)}
  off = configs(loss__box_weights=(1.0, 1.0, 1.0, 1.0), loss__allow_low_quality=False)
  results, off_state = jax.jit(lambda o: (
      {lq: (K.refined_targets(a1, GT, GT_C, GT_V, *cfgs[lq], C), call(o, anchors, GT, GT_C, GT_V, *cfgs[lq]))
       for lq in cfgs}, K.refined_targets(a1, GT, GT_C, GT_V, *off, C).state))(out)
  for low_quality, want_state in ((True, (1, 0, 0)), (False, (-1, 0, 0))):
    lcfg, kcfg = cfgs[low_quality]
    assert kcfg.positive_iou == 0.6 and kcfg.negative_iou == 0.5 and lcfg.allow_low_quality
    t, got = results[low_quality]
    np.testing.assert_array_equal(t.state[0], want_state)
    np.testing.assert_array_equal(t.cls_targets[0, 0], [0, 1, 0] if low_quality else [-1, -1, -1])
    np.testing.assert_allclose(t.box_targets[0, 0], t_plus if low_quality else 0.0, atol=1e-6)
    np.testing.assert_array_equal(t.box_targets[0, 1:], 0.0)
    want_reg = (sum(np_smooth_l1(pred[0, 0, k] - t_plus[k], lcfg.smooth_l1_beta) for k in range(4))
                if low_quality else 0.0)
    np.testing.assert_allclose(got["reg_loss_refined"], want_reg, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["num_pos_refined"], 1.0)   # 1 positive, or 0 clamped to 1
  # loss.allow_low_quality=False switches it off for the refined anchors too (the key only narrows)
  np.testing.assert_array_equal(off_state[0], (-1, 0, 0))


def test_inference_stages_key():
  kcfg = configs()[1]
  assert kcfg.inference_stages == 0 and K.inference_stages(kcfg) == 2   # default: all trained
  kcfg.inference_stages = 1
  assert K.inference_stages(kcfg) == 1
  kcfg.reg_stages, kcfg.inference_stages = 3, 0
  assert K.inference_stages(kcfg) == 3
  for bad in (3, -1):
    kcfg.reg_stages, kcfg.inference_stages = 2, bad
    with pytest.raises(ValueError, match="inference_stages"):
      K.check_config(kcfg)
