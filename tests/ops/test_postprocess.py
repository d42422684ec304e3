"""jaxdet.ops.postprocess.generate_detections vs a plain numpy pipeline."""
import functools
import math

import jax
import numpy as np
import pytest

from jaxdet.ops import anchors as anchor_ops
from jaxdet.ops import postprocess as P

f32 = np.float32


def ref_iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def ref_decode(d, a, w):
  aw, ah = a[2] - a[0], a[3] - a[1]
  cx = d[0] / w[0] * aw + a[0] + aw / 2
  cy = d[1] / w[1] * ah + a[1] + ah / 2
  bw = math.exp(min(d[2] / w[2], math.log(1000 / 16))) * aw
  bh = math.exp(min(d[3] / w[3], math.log(1000 / 16))) * ah
  return [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]


def ref_detections(logits, deltas, anchors, slices, hw, weights, thr, topk, nms_iou, max_det):
  scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
  num_classes = logits.shape[1]
  cands = []  # (score, class, box)
  for start, stop in slices:
    pairs = [(scores[a, c], a, c) for a in range(start, stop) for c in range(num_classes)]
    pairs.sort(key=lambda p: -p[0])
    for s, a, c in pairs[:topk]:
      if s > thr:
        box = ref_decode(deltas[a], anchors[a], weights)
        box = [min(max(box[0], 0), hw[1]), min(max(box[1], 0), hw[0]),
               min(max(box[2], 0), hw[1]), min(max(box[3], 0), hw[0])]
        cands.append((s, c, box))
  cands.sort(key=lambda p: -p[0])
  kept = []
  for s, c, box in cands:
    if all(kc != c or ref_iou(box, kb) <= nms_iou for _, kc, kb in kept):
      kept.append((s, c, box))
  return kept[:max_det]


ANCHORS = anchor_ops.generate_anchors(64, 3, 4, anchor_size=4.0, scales=(1.0,))
SLICES = anchor_ops.level_slices(64, 3, 4, 3)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_matches_numpy_pipeline(weights):
  rng = np.random.default_rng(0)
  batch, num_classes = 2, 4
  logits = (rng.normal(size=(batch, len(ANCHORS), num_classes)) * 2 - 2).astype(f32)
  logits[1] = -20.0  # second image: nothing above threshold except one pair
  logits[1, 100, 2] = 3.0
  deltas = (rng.normal(size=(batch, len(ANCHORS), 4)) * 0.5 * np.array(weights)).astype(f32)
  hw = np.array([[64, 64], [40, 56]], f32)
  kw = dict(box_weights=weights, score_threshold=0.05, pre_nms_topk=50, nms_iou=0.5, max_detections=30)
  fn = jax.jit(functools.partial(P.generate_detections, anchors=ANCHORS, level_slices=SLICES, **kw))
  det = fn(logits, deltas, image_hw=hw)
  assert det.boxes.shape == (batch, 30, 4) and det.scores.shape == (batch, 30) and det.num_valid.shape == (batch,)
  assert det.classes.dtype == np.int32 and det.num_valid.dtype == np.int32
  for b in range(batch):
    want = ref_detections(logits[b], deltas[b], ANCHORS, SLICES, hw[b], weights, 0.05, 50, 0.5, 30)
    n = int(det.num_valid[b])
    assert n == len(want)
    np.testing.assert_allclose(det.scores[b, :n], [w[0] for w in want], rtol=1e-5)
    np.testing.assert_array_equal(det.classes[b, :n], [w[1] for w in want])
    np.testing.assert_allclose(det.boxes[b, :n], np.array([w[2] for w in want]).reshape(-1, 4), rtol=1e-4, atol=1e-3)
    assert np.all(np.diff(det.scores[b, :n]) <= 0)
    assert np.all(det.scores[b, n:] == 0) and np.all(det.boxes[b, n:] == 0) and np.all(det.classes[b, n:] == 0)
  assert int(det.num_valid[0]) == 30  # capped at max_detections
  assert int(det.num_valid[1]) == 1 and int(det.classes[1, 0]) == 2
  assert np.all(det.boxes[1, 0, [0, 2]] <= 56) and np.all(det.boxes[1, 0, [1, 3]] <= 40)


def test_nothing_above_threshold():
  logits = np.full((1, len(ANCHORS), 3), -10.0, f32)
  fn = jax.jit(functools.partial(P.generate_detections, anchors=ANCHORS, level_slices=SLICES, max_detections=5))
  det = fn(logits, np.zeros((1, len(ANCHORS), 4), f32), image_hw=np.array([[64, 64]], f32))
  assert int(det.num_valid[0]) == 0 and np.all(det.scores == 0) and np.all(det.boxes == 0)


def test_bad_arguments():
  logits = np.zeros((1, len(ANCHORS), 3), f32)
  deltas = np.zeros((1, len(ANCHORS), 4), f32)
  hw = np.array([[64, 64]], f32)
  with pytest.raises(ValueError, match="level_slices"):
    P.generate_detections(logits, deltas, ANCHORS, [(0, 10)], hw)
  with pytest.raises(ValueError, match="anchors"):
    P.generate_detections(logits, deltas, ANCHORS[:-1], SLICES, hw)
  with pytest.raises(ValueError, match="image_hw"):
    P.generate_detections(logits, deltas, ANCHORS, SLICES, hw[0])


def test_per_image_traced_anchors():
  """[B, A, 4] anchors passed as a traced argument (consistent optimization's refined anchors)."""
  rng = np.random.default_rng(2)
  logits = (rng.normal(size=(2, len(ANCHORS), 3)) * 2 - 2).astype(f32)
  deltas = (rng.normal(size=(2, len(ANCHORS), 4)) * 0.3).astype(f32)
  per_image = np.stack([ANCHORS, ANCHORS + np.array([3, -2, 5, 1], f32)])
  hw = np.array([[64, 64], [64, 64]], f32)
  kw = dict(level_slices=SLICES, pre_nms_topk=40, max_detections=20)
  det = jax.jit(lambda x, d, a, s: P.generate_detections(x, d, a, image_hw=s, **kw))(logits, deltas, per_image, hw)
  for b in range(2):
    want = ref_detections(logits[b], deltas[b], per_image[b], SLICES, hw[b], (1, 1, 1, 1), 0.05, 40, 0.5, 20)
    n = int(det.num_valid[b])
    assert n == len(want)
    np.testing.assert_allclose(det.boxes[b, :n], np.array([w[2] for w in want]).reshape(-1, 4), rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- exact bounded selection
def full_top_k(logits, k):
  """The oracle: lax.top_k over every (anchor, class) pair, as generate_detections did before."""
  return jax.lax.top_k(logits.reshape(logits.shape[0], -1), k)


def assert_same_top_k(logits, k):
  got_v, got_i = jax.jit(P.top_k_pairs, static_argnums=1)(logits, k)
  want_v, want_i = jax.jit(full_top_k, static_argnums=1)(logits, k)
  np.testing.assert_array_equal(np.asarray(got_i), np.asarray(want_i))
  np.testing.assert_array_equal(np.asarray(got_v, np.float32), np.asarray(want_v, np.float32))


@pytest.mark.parametrize("n,c,k", [(300, 7, 50), (300, 7, 299), (300, 7, 300), (300, 7, 2100),
                                   (50, 1, 20), (1000, 80, 1000), (5, 3, 1)])
def test_top_k_pairs_equals_full_top_k_random(n, c, k):
  rng = np.random.default_rng(n + c + k)
  assert_same_top_k((rng.normal(size=(3, n, c)) * 2 - 3).astype(f32), k)


@pytest.mark.parametrize("levels", [3, 20])
def test_top_k_pairs_ties_follow_lower_index(levels):
  """Few distinct values: almost every selected pair is tied with others, across anchors and
  within an anchor; the order among equals must be the flat index order of lax.top_k."""
  rng = np.random.default_rng(levels)
  logits = rng.integers(0, levels, size=(2, 400, 9)).astype(f32)
  logits[1] = 1.0                                  # one image entirely tied
  logits[0, 17] = levels + 1.0                     # an anchor maximal in every class
  for k in (1, 9, 10, 100, 399, 400, 401, 3600):
    assert_same_top_k(logits, k)
  assert_same_top_k(np.full((1, 30, 4), -np.inf, f32), 12)   # nothing finite at all


def test_top_k_pairs_bfloat16_real_head():
  """A freshly initialised RetinaNet head in bfloat16: logits near the prior bias, many exact ties
  after rounding -- the case a trained head's background anchors look like."""
  import jax.numpy as jnp
  from jaxdet.models.retinanet import RetinaNetHead
  head = RetinaNetHead(num_classes=20, num_anchors=9, filters=32, dtype=jnp.bfloat16)
  feats = {lvl: jax.random.normal(jax.random.key(lvl), (2, 16 // 2 ** (lvl - 3), 16 // 2 ** (lvl - 3), 32))
           for lvl in (3, 4, 5)}
  params = head.init(jax.random.key(0), feats)
  out = head.apply(params, feats)
  logits = out["cls_logits"].astype(jnp.bfloat16)   # what a bf16 model computed (f32 output)
  n_distinct = len(np.unique(np.asarray(logits, f32)))
  assert n_distinct < logits.size / 4              # ties are the rule, not the exception
  for k in (10, 100, 1000, 3000):
    assert_same_top_k(logits, k)


def test_generate_detections_same_as_full_top_k(monkeypatch):
  """The whole generator with the bounded selection and with the plain top-k: identical output."""
  rng = np.random.default_rng(7)
  logits = np.round(rng.normal(size=(2, len(ANCHORS), 6)) * 2, 1).astype(f32)   # rounded: ties
  deltas = (rng.normal(size=(2, len(ANCHORS), 4)) * 0.3).astype(f32)
  hw = np.array([[64, 64], [48, 64]], f32)
  kw = dict(anchors=ANCHORS, level_slices=SLICES, pre_nms_topk=25, max_detections=40)
  got = jax.jit(functools.partial(P.generate_detections, **kw))(logits, deltas, image_hw=hw)
  monkeypatch.setattr(P, "top_k_pairs", full_top_k)
  want = jax.jit(functools.partial(P.generate_detections, **kw))(logits, deltas, image_hw=hw)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
