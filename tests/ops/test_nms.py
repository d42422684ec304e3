"""jaxdet.ops.nms vs a straightforward greedy numpy NMS."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import nms as N

f32 = np.float32


def ref_iou32(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), f32(0))
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), f32(0))
  inter = iw * ih
  union = max(a[2] - a[0], f32(0)) * max(a[3] - a[1], f32(0)) + max(b[2] - b[0], f32(0)) * max(b[3] - b[1], f32(0)) - inter
  return inter / union if union > 1e-9 else f32(0)


def ref_nms(boxes, scores, thr, classes=None):
  """Textbook greedy NMS: descending score, ties by lower index; -inf never kept."""
  order = np.argsort(-scores, kind="stable")
  keep = []
  for i in order:
    if scores[i] == -np.inf:
      continue
    if all(ref_iou32(boxes[i], boxes[k]) <= thr or (classes is not None and classes[i] != classes[k]) for k in keep):
      keep.append(int(i))
  return keep


def random_case(rng, n, ties=True):
  xy = rng.uniform(0, 30, (n, 2))
  wh = rng.uniform(8, 30, (n, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(f32)
  boxes[5] = boxes[3]                       # duplicate box
  boxes[7] = [0, 0, 0, 0]                   # padding
  scores = (rng.integers(0, 6, n) / 6.0 if ties else rng.uniform(0, 1, n)).astype(f32)
  scores[rng.choice(n, 4, replace=False)] = -np.inf
  return boxes, scores


def as_list(idx, valid):
  idx, valid = np.asarray(idx), np.asarray(valid)
  assert np.all(valid[:valid.sum()]) and not np.any(valid[valid.sum():]), "valid entries must come first"
  assert np.all(idx[~valid] == 0)
  return idx[valid].tolist()


nms_jit = jax.jit(N.nms, static_argnames=("iou_threshold", "max_output"))
bnms_jit = jax.jit(N.batched_nms, static_argnames=("iou_threshold", "max_output"))


@pytest.mark.parametrize("seed,thr,ties", [(0, 0.5, True), (1, 0.3, True), (2, 0.7, False)])
def test_nms_equals_greedy_reference(seed, thr, ties):
  rng = np.random.default_rng(seed)
  boxes, scores = random_case(rng, 64, ties)
  want = ref_nms(boxes, scores, thr)
  idx, valid = nms_jit(boxes, scores, iou_threshold=thr, max_output=64)
  assert as_list(idx, valid) == want
  assert idx.dtype == jnp.int32 and valid.dtype == jnp.bool_
  # truncation keeps the first (highest-score) kept boxes
  idx, valid = nms_jit(boxes, scores, iou_threshold=thr, max_output=5)
  assert as_list(idx, valid) == want[:5]


def test_threshold_is_strict_and_ties_by_index():
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 10], [50, 50, 60, 60]], f32)  # IoU(0,1) = 0.5
  scores = np.array([0.9, 0.8, 0.9, -np.inf], f32)
  assert as_list(*nms_jit(boxes, scores, iou_threshold=0.5, max_output=4)) == [0, 1]
  assert as_list(*nms_jit(boxes, scores, iou_threshold=0.49, max_output=4)) == [0]
  all_inf = np.full(4, -np.inf, f32)
  assert as_list(*nms_jit(boxes, all_inf, iou_threshold=0.5, max_output=3)) == []
  assert as_list(*N.nms(np.zeros((0, 4), f32), np.zeros((0,), f32), iou_threshold=0.5, max_output=2)) == []


def test_batched_nms_is_class_aware_and_vmaps():
  rng = np.random.default_rng(3)
  cases = [random_case(rng, 48) for _ in range(3)]
  boxes = np.stack([c[0] for c in cases])
  scores = np.stack([c[1] for c in cases])
  classes = rng.integers(0, 3, scores.shape).astype(np.int32)
  fn = jax.jit(jax.vmap(functools.partial(N.batched_nms, iou_threshold=0.4, max_output=48)))
  idx, valid = fn(boxes, scores, classes)
  for b in range(3):
    assert as_list(idx[b], valid[b]) == ref_nms(boxes[b], scores[b], 0.4, classes[b])
  # same box, different classes: both kept; same class: one kept
  same = np.array([[0, 0, 10, 10]] * 2, f32)
  assert as_list(*bnms_jit(same, np.array([0.5, 0.6], f32), np.array([0, 1]), iou_threshold=0.5, max_output=2)) == [1, 0]
  assert as_list(*bnms_jit(same, np.array([0.5, 0.6], f32), np.array([1, 1]), iou_threshold=0.5, max_output=2)) == [1]


def test_bad_arguments():
  with pytest.raises(ValueError, match="max_output"):
    N.nms(np.zeros((3, 4)), np.zeros(3), iou_threshold=0.5, max_output=0)
  with pytest.raises(ValueError, match="vmap"):
    N.nms(np.zeros((2, 3, 4)), np.zeros((2, 3)), iou_threshold=0.5, max_output=2)
  with pytest.raises(ValueError, match="classes"):
    N.batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(2, np.int32), iou_threshold=0.5, max_output=2)
