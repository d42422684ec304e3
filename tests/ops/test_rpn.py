"""jaxdet.ops.rpn vs slow numpy references of the Faster R-CNN / detectron2 RPN rules."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import rpn as R

f32 = np.float32


def ref_iou32(a, b):
  """float32 IoU (integer test coordinates make it bit-identical to the op, so exact ties agree)."""
  a, b = np.asarray(a, f32), np.asarray(b, f32)
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), f32(0))
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), f32(0))
  inter = iw * ih
  union = max(a[2] - a[0], f32(0)) * max(a[3] - a[1], f32(0)) + max(b[2] - b[0], f32(0)) * max(b[3] - b[1], f32(0)) - inter
  return f32(inter / union) if union > 1e-9 else f32(0)


def ref_rpn_labels(anchors, gt, valid, pos=0.7, neg=0.3, low_quality=True):
  """Candidate labels (1 fg / 0 bg / -1 ignore) and matched gt (argmax, first on ties; 0 if not fg)."""
  n = len(anchors)
  good = [g for g in range(len(gt)) if valid[g]]
  if not good:
    return np.zeros(n, int), np.zeros(n, int)
  iou = np.array([[ref_iou32(anchors[a], gt[g]) for g in good] for a in range(n)], f32)
  labels = np.full(n, -1)
  matched = np.zeros(n, int)
  for a in range(n):
    best = iou[a].max()
    if best >= pos:
      labels[a] = 1
    elif best < neg:
      labels[a] = 0
    matched[a] = good[next(j for j in range(len(good)) if iou[a, j] == best)]
  if low_quality:
    for j in range(len(good)):
      top = iou[:, j].max()
      if top > 0:
        for a in range(n):
          if iou[a, j] == top:
            labels[a] = 1
  return labels, np.where(labels == 1, matched, 0)


def grid_anchors(size=64, stride=8):
  """Integer-coordinate anchors: 5 shapes per location on a stride-8 grid."""
  shapes = [(16, 16), (32, 32), (32, 16), (16, 32), (48, 48)]
  out = []
  for cy in range(stride // 2, size, stride):
    for cx in range(stride // 2, size, stride):
      for w, h in shapes:
        out.append([cx - w // 2, cy - h // 2, cx + w // 2, cy + h // 2])
  return np.array(out, f32)


def random_gt(rng, g=6, size=64):
  xy = rng.integers(0, size - 12, (g, 2))
  wh = rng.integers(8, 40, (g, 2))
  gt = np.concatenate([xy, xy + wh], -1).astype(f32)
  cx, cy = 4 + 8 * rng.integers(2, 6, 2)
  gt[0] = [cx - 15, cy - 15, cx + 17, cy + 17]     # a 32x32 grid anchor shifted by 1 px: IoU 0.88
  valid = np.ones(g, bool)
  valid[-2:] = False
  return gt, valid


def tie_case():
  anchors = np.array([
      [0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 10, 10],      # gt0 [5,0,15,10]: IoU 1/3 each (3-way tie)
      [190, 190, 205, 205], [205, 205, 220, 220],           # gt1 [200,200,210,210]: 25/300 each (tie < 0.3)
      [0, 0, 40, 40], [100, 100, 110, 110],                 # bg
      [300, 300, 310, 310],                                 # equals the *padded* gt2: must stay bg
      [500, 500, 520, 520], [501, 500, 521, 520],           # gt3: IoU 1 and 0.905, fg by threshold
  ], f32)
  gt = np.array([[5, 0, 15, 10], [200, 200, 210, 210], [300, 300, 310, 310], [500, 500, 520, 520]], f32)
  valid = np.array([True, True, False, True])
  return anchors, gt, valid


rpn_jit = jax.jit(R.rpn_targets, static_argnames=("positive_iou", "negative_iou", "batch_size_per_image",
                                                  "positive_fraction", "allow_low_quality"))


box_targets_jit = jax.jit(R.rpn_box_targets)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("low_quality", [True, False])
def test_candidate_sets_match_reference(seed, low_quality):
  rng = np.random.default_rng(seed)
  anchors = grid_anchors()
  gt, valid = random_gt(rng)
  got = rpn_jit(anchors, gt, valid, None, batch_size_per_image=None, allow_low_quality=low_quality)
  want_labels, want_matched = ref_rpn_labels(anchors, gt, valid, low_quality=low_quality)
  np.testing.assert_array_equal(np.asarray(got.labels), want_labels)
  np.testing.assert_array_equal(np.asarray(got.matched_gt_index), want_matched)
  assert (want_labels == 1).any() and (want_labels == 0).any()


def test_low_quality_ties():
  anchors, gt, valid = tie_case()
  got = rpn_jit(anchors, gt, valid, None, batch_size_per_image=None)
  want, matched = ref_rpn_labels(anchors, gt, valid)
  np.testing.assert_array_equal(np.asarray(got.labels), want)
  np.testing.assert_array_equal(np.asarray(got.labels), [1, 1, 1, 1, 1, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(np.asarray(got.matched_gt_index), [0, 0, 0, 1, 1, 0, 0, 0, 3, 3])
  np.testing.assert_array_equal(np.asarray(got.matched_gt_index), matched)
  strict = rpn_jit(anchors, gt, valid, None, batch_size_per_image=None, allow_low_quality=False)
  np.testing.assert_array_equal(np.asarray(strict.labels), [-1, -1, -1, 0, 0, 0, 0, 0, 1, 1])


@pytest.mark.parametrize("g", [0, 3])
def test_no_valid_gt_is_all_background(g):
  anchors = grid_anchors()
  gt = np.tile(anchors[:1], (g, 1))
  got = rpn_jit(anchors, gt, np.zeros(g, bool), None, batch_size_per_image=None)
  np.testing.assert_array_equal(np.asarray(got.labels), 0)
  sampled = rpn_jit(anchors, gt, np.zeros(g, bool), jax.random.key(0))
  labels = np.asarray(sampled.labels)
  assert (labels == 0).sum() == 256 and (labels == 1).sum() == 0


def crowd_case(rng, n_fg=300, n_bg=600):
  """n_fg anchors with IoU >= 0.73 to one gt, n_bg far away (IoU 0)."""
  shift = rng.integers(-8, 9, (n_fg, 2))
  near = np.concatenate([100 + shift, 200 + shift], -1)
  xy = rng.integers(400, 900, (n_bg, 2))
  far = np.concatenate([xy, xy + 20], -1)
  anchors = np.concatenate([near, far]).astype(f32)
  perm = rng.permutation(len(anchors))
  return anchors[perm], np.array([[100, 100, 200, 200]], f32), np.array([True])


def check_subsample(labels, cand, num=256, frac=0.5):
  labels = np.asarray(labels)
  n_fg, n_bg = (labels == 1).sum(), (labels == 0).sum()
  assert np.all(cand[labels == 1] == 1) and np.all(cand[labels == 0] == 0)
  want_fg = min((cand == 1).sum(), int(num * frac))
  assert n_fg == want_fg
  assert n_bg == min((cand == 0).sum(), num - want_fg)
  assert n_fg + n_bg <= num and n_fg <= int(num * frac)


@pytest.mark.parametrize("seed", [0, 1])
def test_subsampling_counts_and_membership(seed):
  rng = np.random.default_rng(seed)
  for anchors, gt, valid in [crowd_case(rng), crowd_case(rng, 40, 100), (grid_anchors(),) + random_gt(rng),
                             tie_case()]:
    cand, _ = ref_rpn_labels(anchors, gt, valid)
    got = rpn_jit(anchors, gt, valid, jax.random.key(seed))
    check_subsample(got.labels, cand)
    labels = np.asarray(got.labels)
    if (cand == 1).sum() <= 128:                      # all fg kept
      np.testing.assert_array_equal(labels == 1, cand == 1)
    if (cand != -1).sum() <= 256:                     # everything kept
      np.testing.assert_array_equal(labels, cand)
    _, matched = ref_rpn_labels(anchors, gt, valid)
    np.testing.assert_array_equal(np.asarray(got.matched_gt_index), np.where(labels == 1, matched, 0))


def test_subsampling_reproducible_and_random():
  anchors, gt, valid = crowd_case(np.random.default_rng(5))
  a = rpn_jit(anchors, gt, valid, jax.random.key(1))
  b = rpn_jit(anchors, gt, valid, jax.random.key(1))
  c = rpn_jit(anchors, gt, valid, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  assert not np.array_equal(np.asarray(a.labels == 1), np.asarray(c.labels == 1))
  assert not np.array_equal(np.asarray(a.labels == 0), np.asarray(c.labels == 0))


def test_subsampling_is_uniform():
  """Every fg candidate is drawn with probability 128/300 (no index bias)."""
  anchors, gt, valid = crowd_case(np.random.default_rng(7))
  cand, _ = ref_rpn_labels(anchors, gt, valid)
  keys = jax.random.split(jax.random.key(0), 300)
  labels = np.asarray(jax.jit(jax.vmap(rpn_jit, in_axes=(None, None, None, 0)))(anchors, gt, valid, keys).labels)
  freq_fg = (labels == 1).mean(0)[cand == 1]
  freq_bg = (labels == 0).mean(0)[cand == 0]
  assert abs(freq_fg.mean() - 128 / 300) < 1e-6
  assert freq_fg.min() > 0.3 and freq_fg.max() < 0.56          # binomial(300, 0.427): sd 0.029
  assert freq_bg.min() > 0.1 and freq_bg.max() < 0.33          # p = 128/600, sd 0.024
  # Low vs high anchor index halves are drawn alike.
  fg_idx = np.flatnonzero(cand == 1)
  half = len(fg_idx) // 2
  assert abs(freq_fg[:half].mean() - freq_fg[half:].mean()) < 0.03


def test_batched_vmap_and_box_targets():
  rng = np.random.default_rng(3)
  anchors = grid_anchors()
  gts, valids = zip(*[random_gt(rng) for _ in range(2)])
  gts, valids = np.stack(gts), np.stack(valids)
  keys = jax.random.split(jax.random.key(0), 2)
  batch = jax.jit(jax.vmap(rpn_jit, in_axes=(None, 0, 0, 0)))(anchors, gts, valids, keys)
  for i in range(2):
    one = rpn_jit(anchors, gts[i], valids[i], keys[i])
    np.testing.assert_array_equal(np.asarray(batch.labels[i]), np.asarray(one.labels))
    deltas = np.asarray(box_targets_jit(anchors, gts[i], one))
    labels, matched = np.asarray(one.labels), np.asarray(one.matched_gt_index)
    for a in range(len(anchors)):
      if labels[a] != 1:
        assert np.all(deltas[a] == 0)
        continue
      g, an = gts[i][matched[a]].astype(np.float64), anchors[a].astype(np.float64)
      aw, ah, gw, gh = an[2] - an[0], an[3] - an[1], g[2] - g[0], g[3] - g[1]
      want = [(g[0] + gw / 2 - an[0] - aw / 2) / aw, (g[1] + gh / 2 - an[1] - ah / 2) / ah,
              math.log(gw / aw), math.log(gh / ah)]
      np.testing.assert_allclose(deltas[a], want, rtol=1e-5, atol=1e-5)
  batched_deltas = jax.jit(jax.vmap(R.rpn_box_targets, in_axes=(None, 0, 0)))(anchors, gts, batch)
  np.testing.assert_array_equal(np.asarray(batched_deltas[1]), np.asarray(box_targets_jit(anchors, gts[1], one)))


# ----------------------------------------------------------------------------------- proposals


gp_jit = jax.jit(R.generate_proposals, static_argnames=(
    "level_slices", "pre_nms_topk", "post_nms_topk", "nms_iou", "min_size", "bbox_reg_weights", "scale_clamp"))


def ref_decode(d, a, w=(1, 1, 1, 1), clamp=math.log(1000 / 16)):
  a = a.astype(np.float64)
  aw, ah = a[2] - a[0], a[3] - a[1]
  cx = d[0] / w[0] * aw + a[0] + aw / 2
  cy = d[1] / w[1] * ah + a[1] + ah / 2
  bw = math.exp(min(d[2] / w[2], clamp)) * aw
  bh = math.exp(min(d[3] / w[3], clamp)) * ah
  return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def ref_iou64(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def ref_proposals(logits, deltas, anchors, slices, hw, pre, post, thr, min_size, weights):
  """detectron2 find_top_rpn_proposals for one image, in plain numpy / Python."""
  h, w = hw
  cands = []  # (logit, level, box)
  for level, (start, stop) in enumerate(slices):
    order = start + np.argsort(-logits[start:stop], kind="stable")[:min(pre, stop - start)]
    for a in order:
      box = ref_decode(deltas[a], anchors[a], weights)
      box = np.array([min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w),
                      min(max(box[3], 0), h)])
      if box[2] - box[0] > min_size and box[3] - box[1] > min_size:
        cands.append((logits[a], level, box))
  cands.sort(key=lambda c: -c[0])
  kept = []
  for s, level, box in cands:
    if all(kl != level or ref_iou64(box, kb) <= thr for _, kl, kb in kept):
      kept.append((s, level, box))
  return kept[:post], len(cands)


def proposal_case(seed, batch=2, sizes=(200, 80, 20)):
  rng = np.random.default_rng(seed)
  anchors, slices, start = [], [], 0
  for n, base in zip(sizes, (16, 32, 64)):
    centres = rng.uniform(-10, 110, (n // 4, 1, 2)) + rng.uniform(-2, 2, (n // 4, 4, 2))   # clusters of 4
    half = base * rng.uniform(0.35, 0.7, (n // 4, 4, 2))
    anchors.append(np.concatenate([centres - half, centres + half], -1).reshape(n, 4))
    slices.append((start, start + n))
    start += n
  slices = tuple(slices)
  anchors = np.concatenate(anchors).astype(f32)
  a = len(anchors)
  logits = rng.normal(0, 2, (batch, a)).astype(f32)
  deltas = rng.normal(0, 0.3, (batch, a, 4)).astype(f32)
  far = rng.random((batch, a)) < 0.1
  deltas[..., 0] = np.where(far, rng.choice([-12.0, 12.0], (batch, a)), deltas[..., 0])   # off the image
  hw = np.array([[100, 120], [90, 80]], f32)[:batch]
  return logits, deltas, anchors, slices, hw


@pytest.mark.parametrize("seed,pre,post,min_size,weights", [
    (0, 50, 30, 0.0, (1, 1, 1, 1)),
    (1, 50, 200, 0.0, (1, 1, 1, 1)),
    (2, 1000, 500, 6.0, (10, 10, 5, 5)),
])
def test_generate_proposals_matches_reference(seed, pre, post, min_size, weights):
  logits, deltas, anchors, slices, hw = proposal_case(seed)
  got = gp_jit(logits, deltas, anchors, slices, hw, pre_nms_topk=pre, post_nms_topk=post, min_size=min_size,
               bbox_reg_weights=weights)
  assert got.boxes.shape == (2, post, 4) and got.scores.shape == (2, post)
  suppressed = 0
  for b in range(2):
    want, n_cands = ref_proposals(logits[b], deltas[b], anchors, slices, hw[b], pre, post, 0.7, min_size, weights)
    n = int(got.num_valid[b])
    assert n == len(want)
    suppressed += n_cands - len(want)
    np.testing.assert_array_equal(np.asarray(got.scores[b, :n]), np.array([s for s, _, _ in want], f32))
    np.testing.assert_allclose(np.asarray(got.boxes[b, :n]), np.stack([bx for _, _, bx in want]), atol=2e-4, rtol=0)
    assert np.all(np.asarray(got.boxes[b, n:]) == 0) and np.all(np.asarray(got.scores[b, n:]) == 0)
  assert suppressed > 0


def test_nms_is_per_level():
  box = np.array([[10, 10, 40, 40]], f32)
  anchors = np.concatenate([box, box, box])
  logits = np.array([[3.0, 2.0, 1.0]], f32)
  deltas = np.zeros((1, 3, 4), f32)
  hw = np.array([[100, 100]], f32)
  # Levels {0, 1} and {2}: the duplicate in level 0 is suppressed, the one in level 1 survives.
  got = gp_jit(logits, deltas, anchors, ((0, 2), (2, 3)), hw, post_nms_topk=5)
  assert int(got.num_valid[0]) == 2
  np.testing.assert_array_equal(np.asarray(got.scores[0, :2]), [3.0, 1.0])
  got = gp_jit(logits, deltas, anchors, ((0, 1), (1, 2), (2, 3)), hw, post_nms_topk=5)
  assert int(got.num_valid[0]) == 3


def test_scale_clamp():
  """dw above log(1000/16) is clamped before exp; visible when the clipped box keeps its far edge."""
  anchors = np.array([[42, 42, 58, 58]], f32)
  deltas = np.array([[[-31.0, 0.0, 6.0, 0.0]]], f32)
  hw = np.array([[100, 120]], f32)
  want = ref_decode(deltas[0, 0], anchors[0])
  want = np.clip(want, 0, [120, 100, 120, 100])
  got = gp_jit(np.zeros((1, 1), f32), deltas, anchors, ((0, 1),), hw, post_nms_topk=2)
  assert int(got.num_valid[0]) == 1
  np.testing.assert_allclose(np.asarray(got.boxes[0, 0]), want, atol=1e-3)
  unclamped = gp_jit(np.zeros((1, 1), f32), deltas, anchors, ((0, 1),), hw, post_nms_topk=2, scale_clamp=None)
  assert float(unclamped.boxes[0, 0, 2]) == 120.0 and want[2] < 100


def test_non_finite_and_no_gradient():
  logits, deltas, anchors, slices, hw = proposal_case(4)
  nan_anchor = np.arange(len(anchors)) % 7 == 0
  logits[0, :10] = np.nan
  logits[0, 10:20] = np.inf
  deltas[1, nan_anchor, 0] = np.nan
  # pre_nms_topk >= every level size, so dropping a candidate frees no top-k slot for another.
  gp = functools.partial(gp_jit, level_slices=slices, image_hw=hw, pre_nms_topk=1000, post_nms_topk=100)
  got = gp(logits, deltas, anchors)
  assert np.all(np.isfinite(np.asarray(got.boxes))) and np.all(np.isfinite(np.asarray(got.scores)))
  clean_logits = logits.copy()
  clean_logits[0, :20] = -np.inf
  clean_logits[1, nan_anchor] = -np.inf
  clean = gp(clean_logits, np.nan_to_num(deltas), anchors)
  for field in ("boxes", "scores", "num_valid"):
    np.testing.assert_array_equal(np.asarray(getattr(got, field)), np.asarray(getattr(clean, field)))
  assert int(got.num_valid[1]) > 0

  def total(o, d):
    p = gp_jit(o, d, anchors, slices, hw, pre_nms_topk=20, post_nms_topk=10)
    return p.boxes.sum() + p.scores.sum()

  grads = jax.grad(total, argnums=(0, 1))(jnp.asarray(np.nan_to_num(logits)), jnp.asarray(np.nan_to_num(deltas)))
  assert all(np.all(np.asarray(g) == 0) for g in grads)


def test_rejects_bad_level_slices():
  logits, deltas, anchors, slices, hw = proposal_case(0)
  with pytest.raises(ValueError, match="level_slices"):
    R.generate_proposals(logits, deltas, anchors, [(0, 10)], hw)
