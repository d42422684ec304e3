"""jaxdet.ops.roi_sampling vs a slow numpy reference of Fast R-CNN / detectron2 RoI sampling."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxdet.ops import roi_sampling as S

f32 = np.float32
NUM_CLASSES = 7


def ref_iou32(a, b):
  """float32 IoU; integer test coordinates make it bit-identical to the op."""
  a, b = np.asarray(a, f32), np.asarray(b, f32)
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), f32(0))
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), f32(0))
  inter = iw * ih
  union = max(a[2] - a[0], f32(0)) * max(a[3] - a[1], f32(0)) + max(b[2] - b[0], f32(0)) * max(b[3] - b[1], f32(0)) - inter
  return f32(inter / union) if union > 1e-9 else f32(0)


def ref_sets(props, pvalid, gt, gvalid, append_gt=True, fg_iou=0.5, bg_iou_high=0.5, bg_iou_low=0.0):
  """Candidate boxes, the fg / bg index sets and each candidate's matched gt (first argmax)."""
  cands = np.concatenate([props, gt]) if append_gt else props
  cvalid = np.concatenate([pvalid, gvalid]) if append_gt else pvalid
  good = [g for g in range(len(gt)) if gvalid[g]]
  fg, bg, match = set(), set(), {}
  for i in range(len(cands)):
    if not cvalid[i]:
      continue
    ious = [ref_iou32(cands[i], gt[g]) for g in good]
    best = max(ious) if ious else 0.0
    if ious:
      match[i] = good[ious.index(best)]
    if good and best >= fg_iou:
      fg.add(i)
    elif bg_iou_low <= best < bg_iou_high:
      bg.add(i)
  return cands, fg, bg, match


def make_case(rng, n_props=1000, n_gt=5, n_invalid_props=50):
  xy = rng.integers(0, 300, (n_gt, 2))
  wh = rng.integers(20, 120, (n_gt, 2))
  gt = np.concatenate([xy, xy + wh], -1).astype(f32)
  gvalid = np.ones(n_gt, bool)
  gvalid[-1] = False
  gt_classes = rng.integers(0, NUM_CLASSES, n_gt).astype(np.int32)
  # Half jittered copies of gts (fg and near-threshold), half random boxes (mostly bg).
  base = gt[rng.integers(0, n_gt, n_props // 2)]
  jitter = rng.integers(-25, 26, (n_props // 2, 4))
  near = base + jitter
  near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 2)
  xy = rng.integers(0, 400, (n_props - n_props // 2, 2))
  wh = rng.integers(4, 150, (n_props - n_props // 2, 2))
  props = np.concatenate([near, np.concatenate([xy, xy + wh], -1)]).astype(f32)
  props = props[rng.permutation(n_props)]
  pvalid = np.arange(n_props) < n_props - n_invalid_props      # padded tail, like generate_proposals
  return props, pvalid, gt, gt_classes, gvalid


sample_jit = jax.jit(S.sample_rois, static_argnames=("num_classes", "num_samples", "positive_fraction", "fg_iou",
                                                     "bg_iou_high", "bg_iou_low", "append_gt"))


def check(out, props, pvalid, gt, gt_classes, gvalid, num_samples=512, frac=0.25, append_gt=True, **iou_kw):
  cands, fg, bg, match = ref_sets(props, pvalid, gt, gvalid, append_gt, **iou_kw)
  o = {k: np.asarray(v) for k, v in out._asdict().items()}
  n_fg_want = min(len(fg), int(num_samples * frac))
  n_bg_want = min(len(bg), num_samples - n_fg_want)
  n_fg, n_valid = int(o["is_fg"].sum()), int(o["valid"].sum())
  assert n_fg == n_fg_want and n_valid - n_fg == n_bg_want
  np.testing.assert_array_equal(o["is_fg"], np.arange(num_samples) < n_fg)       # fg first
  np.testing.assert_array_equal(o["valid"], np.arange(num_samples) < n_valid)    # then bg, then padding
  idx = o["indices"]
  assert len(set(idx[:n_valid].tolist())) == n_valid                            # without replacement
  assert set(idx[:n_fg].tolist()) <= fg and set(idx[n_fg:n_valid].tolist()) <= bg
  np.testing.assert_array_equal(o["boxes"][:n_valid], cands[idx[:n_valid]])
  for s in range(n_fg):
    g = match[idx[s]]
    assert o["matched_gt_index"][s] == g and o["classes"][s] == gt_classes[g]
    np.testing.assert_array_equal(o["matched_gt_boxes"][s], gt[g])
  assert np.all(o["classes"][n_fg:] == NUM_CLASSES)
  assert np.all(o["matched_gt_boxes"][n_fg:] == 0) and np.all(o["matched_gt_index"][n_fg:] == 0)
  assert np.all(o["boxes"][n_valid:] == 0) and np.all(idx[n_valid:] == 0)
  return fg, bg


@pytest.mark.parametrize("seed", [0, 1])
def test_membership_and_fraction_limits(seed):
  case = make_case(np.random.default_rng(seed))
  out = sample_jit(*case, jax.random.key(seed), num_classes=NUM_CLASSES)
  fg, bg = check(out, *case)
  assert len(fg) > 128 and len(bg) > 384          # both limits bind: 128 fg + 384 bg
  assert int(out.is_fg.sum()) == 128 and bool(out.valid.all())


def test_few_fg_all_kept_and_background_iou_window():
  rng = np.random.default_rng(2)
  case = make_case(rng, n_props=150)
  kw = dict(fg_iou=0.6, bg_iou_high=0.4, bg_iou_low=0.1)
  out = sample_jit(*case, jax.random.key(0), num_classes=NUM_CLASSES, num_samples=32, positive_fraction=0.5, **kw)
  fg, bg = check(out, *case, num_samples=32, frac=0.5, **kw)
  assert len(fg) < 16 and len(fg) + len(bg) > 32            # all fg kept, bg fill the rest
  assert set(np.asarray(out.indices[:len(fg)]).tolist()) == fg and bool(out.valid.all())
  # Candidates with IoU in (0, 0.1) are neither fg nor bg: never sampled.
  cands, _, _, _ = ref_sets(*case[:3], case[4], **kw)
  assert any(0 < max(ref_iou32(c, g) for g in case[2][case[4]]) < 0.1 for c in cands[case[1].nonzero()[0]])


def test_padding_when_few_candidates():
  case = make_case(np.random.default_rng(3), n_props=40, n_invalid_props=10)
  out = sample_jit(*case, jax.random.key(0), num_classes=NUM_CLASSES)
  fg, bg = check(out, *case)
  assert int(out.valid.sum()) == len(fg) + len(bg) < 512


def test_gt_appended_when_no_valid_proposal():
  props, _, gt, gt_classes, gvalid = make_case(np.random.default_rng(4), n_props=60)
  pvalid = np.zeros(len(props), bool)
  out = sample_jit(props, pvalid, gt, gt_classes, gvalid, jax.random.key(0), num_classes=NUM_CLASSES)
  check(out, props, pvalid, gt, gt_classes, gvalid)
  n = int(gvalid.sum())
  assert int(out.valid.sum()) == n and int(out.is_fg.sum()) == n            # every valid gt, as fg
  assert sorted(np.asarray(out.indices[:n]).tolist()) == [len(props) + g for g in range(n)]
  np.testing.assert_array_equal(np.asarray(out.matched_gt_boxes[:n]), np.asarray(out.boxes[:n]))
  # Without appending there is nothing to sample.
  none = sample_jit(props, pvalid, gt, gt_classes, gvalid, jax.random.key(0), num_classes=NUM_CLASSES,
                    append_gt=False)
  assert not bool(none.valid.any())
  empty = sample_jit(np.zeros((0, 4), f32), np.zeros(0, bool), gt, gt_classes, gvalid, jax.random.key(0),
                     num_classes=NUM_CLASSES, num_samples=16)
  assert int(empty.is_fg.sum()) == n and int(empty.valid.sum()) == n


@pytest.mark.parametrize("g", [0, 3])
def test_image_without_gt_is_all_background(g):
  props, pvalid, _, _, _ = make_case(np.random.default_rng(5), n_props=300)
  gt, gt_classes, gvalid = np.ones((g, 4), f32) * np.arange(4, dtype=f32), np.zeros(g, np.int32), np.zeros(g, bool)
  out = sample_jit(props, pvalid, gt, gt_classes, gvalid, jax.random.key(0), num_classes=NUM_CLASSES)
  assert int(out.is_fg.sum()) == 0 and int(out.valid.sum()) == int(pvalid.sum())
  assert np.all(np.asarray(out.classes) == NUM_CLASSES)
  assert set(np.asarray(out.indices[:int(pvalid.sum())]).tolist()) == set(np.flatnonzero(pvalid).tolist())


def test_append_gt_false_matches_reference():
  case = make_case(np.random.default_rng(6), n_props=300)
  out = sample_jit(*case, jax.random.key(1), num_classes=NUM_CLASSES, append_gt=False)
  check(out, *case, append_gt=False)
  # Without appended ground truth every sampled RoI is a valid proposal.
  picked = np.asarray(out.indices)[np.asarray(out.valid)]
  assert len(picked) > 0 and np.all(picked < len(case[0])) and np.all(np.asarray(case[1])[picked])


def test_reproducible_random_and_vmappable():
  cases = [make_case(np.random.default_rng(s)) for s in (7, 8)]
  a = sample_jit(*cases[0], jax.random.key(1), num_classes=NUM_CLASSES)
  b = sample_jit(*cases[0], jax.random.key(1), num_classes=NUM_CLASSES)
  c = sample_jit(*cases[0], jax.random.key(2), num_classes=NUM_CLASSES)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert set(np.asarray(a.indices[:128]).tolist()) != set(np.asarray(c.indices[:128]).tolist())
  assert set(np.asarray(a.indices[128:]).tolist()) != set(np.asarray(c.indices[128:]).tolist())
  stacked = [np.stack(parts) for parts in zip(*cases)]
  keys = jax.random.split(jax.random.key(0), 2)
  batch = jax.jit(jax.vmap(lambda p, pv, g, gc, gv, k: S.sample_rois(p, pv, g, gc, gv, k, num_classes=NUM_CLASSES)))(
      *stacked, keys)
  for i in range(2):
    one = sample_jit(*cases[i], keys[i], num_classes=NUM_CLASSES)
    for x, y in zip(batch, one):
      np.testing.assert_array_equal(np.asarray(x[i]), np.asarray(y))
