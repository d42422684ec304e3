"""jaxdet.ops.matching vs a loop reference of the AP-loss authors' labelling rule."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import anchors as anchor_ops
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import matching as M

f32 = np.float32


def ref_iou32(a, b):
  """float32 IoU with the same operation order as the op (so exact ties agree)."""
  a, b = a.astype(f32), b.astype(f32)
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), f32(0))
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), f32(0))
  inter = iw * ih
  area_a = max(a[2] - a[0], f32(0)) * max(a[3] - a[1], f32(0))
  area_b = max(b[2] - b[0], f32(0)) * max(b[3] - b[1], f32(0))
  union = area_a + area_b - inter
  return inter / union if union > 1e-9 else f32(0)


def ref_match(anchors, gt, cls, valid, pos=0.5, neg=0.4, low_quality=True, rematch=False):
  n = len(anchors)
  state, matched, classes = np.full(n, -1), np.zeros(n, int), np.full(n, -1)
  max_iou, boxes = np.zeros(n, f32), np.zeros((n, 4), f32)
  good = [g for g in range(len(gt)) if valid[g]]
  if not good:
    return np.zeros(n, int), matched, classes, max_iou, boxes
  ious = {(a, g): ref_iou32(anchors[a], gt[g]) for a in range(n) for g in good}
  gt_best = {g: max(ious[a, g] for a in range(n)) for g in good}
  for a in range(n):
    best = max(ious[a, g] for g in good)
    arg = next(g for g in good if ious[a, g] == best)   # first index on ties
    max_iou[a] = best
    tied = [g for g in good if ious[a, g] == gt_best[g] and gt_best[g] > 0]
    is_pos = best >= pos or (low_quality and bool(tied))
    if is_pos:
      if rematch and tied:
        top = max(ious[a, g] for g in tied)
        arg = next(g for g in tied if ious[a, g] == top)
      state[a], matched[a], classes[a], boxes[a] = 1, arg, cls[arg], gt[arg]
    elif best < neg:
      state[a] = 0
  return state, matched, classes, max_iou, boxes


def check(match, ref):
  state, matched, classes, max_iou, boxes = ref
  np.testing.assert_array_equal(match.state, state)
  np.testing.assert_array_equal(match.matched_gt, matched)
  np.testing.assert_array_equal(match.classes, classes)
  np.testing.assert_allclose(match.max_iou, max_iou, atol=1e-6)
  np.testing.assert_array_equal(match.matched_boxes, boxes)
  assert match.state.dtype == jnp.int32 and match.classes.dtype == jnp.int32


ANCHORS = anchor_ops.generate_anchors(48, 3, 4, anchor_size=2.0, scales=(1.0, 1.5))


def random_gt(rng, g, n_valid, size=48):
  xy = rng.uniform(-4, size - 8, (g, 2))
  wh = rng.uniform(6, 36, (g, 2))
  gt = np.concatenate([xy, xy + wh], -1).astype(f32)
  valid = np.arange(g) < n_valid
  gt[~valid] = 0.0  # padding rows are zeros
  return gt, rng.integers(0, 5, g).astype(np.int32), valid


match_jit = jax.jit(M.match_anchors, static_argnames=("positive_iou", "negative_iou", "allow_low_quality",
                                                      "low_quality_rematch"))


@pytest.mark.parametrize("low_quality,rematch", [(True, False), (False, False), (True, True)])
def test_vmapped_batch_matches_reference(low_quality, rematch):
  rng = np.random.default_rng(0)
  batch = [random_gt(rng, 6, n) for n in (6, 3, 0, 1)]
  # duplicated GT (ties across GTs) in image 1
  batch[1][0][1] = batch[1][0][0]
  gts, cls, valid = (np.stack(x) for x in zip(*batch))
  fn = jax.jit(jax.vmap(functools.partial(M.match_anchors, allow_low_quality=low_quality,
                                          low_quality_rematch=rematch), in_axes=(None, 0, 0, 0)))
  out = fn(ANCHORS, gts, cls, valid)
  for i in range(len(batch)):
    check(jax.tree_util.tree_map(lambda x: x[i], out),
          ref_match(ANCHORS, gts[i], cls[i], valid[i], low_quality=low_quality, rematch=rematch))
  assert np.all(out.state[2] == 0)  # all-padding image: all negative
  assert int(jnp.sum(out.state[0] == 1)) > 0


def test_hand_cases_ties_and_low_quality():
  anchors = np.array([
      [0, 0, 10, 10],      # a0: tied-best for GT0 and GT1 (IoU 0.25 each)
      [0, 0, 10, 10],      # a1: identical to a0 -> also tied-best
      [100, 100, 110, 110],  # a2: overlaps nothing
      [50, 50, 60, 60],    # a3: overlaps only the padded GT
      [200, 0, 210, 10],   # a4: IoU 0.45 with GT2 -> would be ignored, but is GT2's best
  ], f32)
  gt = np.array([[0, 0, 10, 40], [0, 0, 40, 10], [200, 0, 210, 4.5], [50, 50, 60, 60], [300, 300, 301, 301]], f32)
  cls = np.array([3, 1, 2, 4, 0], np.int32)
  valid = np.array([True, True, True, False, True])  # GT3 padded; GT4 overlaps no anchor (best IoU 0)
  m = match_jit(anchors, gt, cls, valid)
  np.testing.assert_array_equal(m.state, [1, 1, 0, 0, 1])
  np.testing.assert_array_equal(m.matched_gt, [0, 0, 0, 0, 2])
  np.testing.assert_array_equal(m.classes, [3, 3, -1, -1, 2])
  np.testing.assert_allclose(m.max_iou, [0.25, 0.25, 0, 0, 0.45], atol=1e-6)
  check(m, ref_match(anchors, gt, cls, valid))
  m2 = match_jit(anchors, gt, cls, valid, allow_low_quality=False)
  np.testing.assert_array_equal(m2.state, [0, 0, 0, 0, -1])


def test_rematch_moves_anchor_to_the_gt_it_is_best_for():
  # a0: IoU 0.83 with GT0 (whose best anchor is a2, IoU 1) and 1/3 with GT1 (a0 is GT1's best anchor)
  anchors = np.array([[0, 0, 10, 10], [300, 300, 310, 310], [0, 0, 10, 12]], f32)
  gt = np.array([[0, 0, 10, 12], [0, -20, 10, 10]], f32)
  cls = np.array([7, 9], np.int32)
  valid = np.array([True, True])
  default = match_jit(anchors, gt, cls, valid)
  assert int(default.matched_gt[0]) == 0 and int(default.classes[0]) == 7  # authors: argmax GT
  forced = match_jit(anchors, gt, cls, valid, low_quality_rematch=True)
  assert int(forced.matched_gt[0]) == 1 and int(forced.classes[0]) == 9
  np.testing.assert_array_equal(forced.matched_boxes[0], gt[1])
  check(forced, ref_match(anchors, gt, cls, valid, rematch=True))


def test_empty_gt_and_targets():
  m = match_jit(ANCHORS, np.zeros((0, 4), f32), np.zeros((0,), np.int32), np.zeros((0,), bool))
  assert np.all(m.state == 0) and np.all(m.classes == -1) and np.all(m.matched_boxes == 0)
  assert np.all(M.class_targets(m, 4) == 0)
  assert np.all(M.box_targets(m, ANCHORS) == 0)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_class_and_box_targets(weights):
  rng = np.random.default_rng(1)
  gt, cls, valid = random_gt(rng, 5, 4)
  m = match_jit(ANCHORS, gt, cls, valid)
  ct = np.asarray(jax.jit(M.class_targets, static_argnums=1)(m, 5))
  state, _, classes, _, boxes = ref_match(ANCHORS, gt, cls, valid)
  assert ct.dtype == np.int32 and ct.shape == (len(ANCHORS), 5)
  for a in range(len(ANCHORS)):
    want = {1: np.eye(5, dtype=int)[max(classes[a], 0)], 0: np.zeros(5), -1: -np.ones(5)}[state[a]]
    np.testing.assert_array_equal(ct[a], want)
  assert {-1, 0, 1} <= set(np.unique(state))
  bt = np.asarray(jax.jit(M.box_targets, static_argnums=2)(m, ANCHORS, weights))
  pos = state == 1
  np.testing.assert_array_equal(bt[~pos], 0.0)
  np.testing.assert_allclose(bt[pos], box_ops.encode(boxes[pos], ANCHORS[pos], weights), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(box_ops.decode(bt[pos], ANCHORS[pos], weights), boxes[pos], atol=1e-3)


def test_bad_arguments():
  with pytest.raises(ValueError, match="negative_iou"):
    M.match_anchors(ANCHORS, np.zeros((1, 4)), np.zeros(1, np.int32), np.ones(1, bool), positive_iou=0.3)
  with pytest.raises(ValueError, match="vmap"):
    M.match_anchors(ANCHORS, np.zeros((2, 1, 4)), np.zeros((2, 1), np.int32), np.ones((2, 1), bool))
  with pytest.raises(ValueError, match="num_classes"):
    M.class_targets(M.match_anchors(ANCHORS, np.zeros((1, 4)), np.zeros(1, np.int32), np.ones(1, bool)), 0)
