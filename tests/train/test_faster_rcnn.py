"""Faster R-CNN: inference selection against numpy, the box-head losses by hand, the network's
shapes against the anchor grid, C4 ImageNet loading, and tiny FPN / C4 runs end to end."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tiny  # noqa: E402


def _tiny_config(data_root, design="fpn", **overrides):
  from jaxdet.experiments.faster_rcnn import faster_rcnn_defaults
  c = faster_rcnn_defaults()
  t = tiny.tiny_config(data_root)
  for g in ("data", "train", "optim"):
    c[g].update(t[g].to_dict())
  c.eval.batch_size = 8
  c.model.depth, c.model.width, c.model.norm, c.model.frozen_stages = 18, 8, "group_norm", -1
  c.model.fpn_filters, c.model.fc_dim = 16, 32
  c.rpn.batch_size_per_image, c.rpn.pre_nms_topk_train, c.rpn.post_nms_topk_train = 64, 200, 100
  c.rpn.pre_nms_topk_test, c.rpn.post_nms_topk_test = 200, 50
  c.roi_head.num_samples = 32
  if design == "c4":
    c.model.design, c.model.pooler_resolution = "c4", 14
    c.model.anchor_size, c.model.anchor_scales = 1.0, (1.0, 2.0, 4.0)
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


# ------------------------------------------------------------------------- inference selection
def _decode_np(d, roi, w):
  wx, wy, ww, wh = w
  aw, ah = roi[2] - roi[0], roi[3] - roi[1]
  ax, ay = roi[0] + 0.5 * aw, roi[1] + 0.5 * ah
  cx, cy = d[0] / wx * aw + ax, d[1] / wy * ah + ay
  pw = np.exp(min(d[2] / ww, np.log(1000 / 16))) * aw
  ph = np.exp(min(d[3] / wh, np.log(1000 / 16))) * ah
  return np.array([cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2])


def _iou_np(a, b):
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _class_detections_np(rois, num_valid, logits, deltas, hw, *, thr, iou, max_det, topk=0):
  out = []
  k = deltas.shape[1]
  e = np.exp(logits - logits.max(-1, keepdims=True))
  probs = e / e.sum(-1, keepdims=True)
  cands = []
  for r in range(num_valid):
    for c in range(k):
      if probs[r, c] > thr:
        box = _decode_np(deltas[r, c], rois[r], (10, 10, 5, 5))
        box = np.clip(box, 0, [hw[1], hw[0], hw[1], hw[0]])
        cands.append((probs[r, c], c, box))
  if topk:   # the best topk pairs; ties to the lower (RoI, class) index (stable sort)
    cands = sorted(cands, key=lambda x: -x[0])[:topk]
  for c in range(k):
    mine = sorted([x for x in cands if x[1] == c], key=lambda x: -x[0])
    kept = []
    for s, _, box in mine:
      if all(_iou_np(box, kb) <= iou for _, _, kb in kept):
        kept.append((s, c, box))
    out += kept
  return sorted(out, key=lambda x: -x[0])[:max_det]


def test_class_detections_match_numpy():
  from jaxdet.experiments.faster_rcnn import class_detections
  rng = np.random.default_rng(0)
  b, r, k = 2, 7, 3
  xy = rng.uniform(0, 40, (b, r, 2))
  wh = rng.uniform(5, 30, (b, r, 2))
  rois = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  rois[0, 1] = rois[0, 0] + 0.5        # near-duplicate RoIs: NMS must act
  logits = rng.normal(0, 2, (b, r, k + 1)).astype(np.float32)
  deltas = rng.normal(0, 0.5, (b, r, k, 4)).astype(np.float32)
  deltas[0, 1] = deltas[0, 0]
  num_valid = np.array([7, 5], np.int32)
  hw = np.array([[50, 60], [45, 45]], np.int32)
  for topk in (0, 5):   # 0: every pair enters NMS; 5: the best 5 of R x K = 21
    got = class_detections(jnp.asarray(rois), jnp.asarray(num_valid), jnp.asarray(logits),
                           jnp.asarray(deltas), jnp.asarray(hw), box_weights=(10, 10, 5, 5),
                           score_threshold=0.1, nms_iou=0.5, max_detections=6, num_classes=k,
                           pre_nms_topk=topk)
    for i in range(b):
      ref = _class_detections_np(rois[i], num_valid[i], logits[i], deltas[i], hw[i], thr=0.1,
                                 iou=0.5, max_det=6, topk=topk)
      n = int(got.num_valid[i])
      assert n == len(ref) and n > 0
      np.testing.assert_allclose(np.asarray(got.scores[i, :n]), [x[0] for x in ref], rtol=1e-5)
      np.testing.assert_array_equal(np.asarray(got.classes[i, :n]), [x[1] for x in ref])
      np.testing.assert_allclose(np.asarray(got.boxes[i, :n]), np.stack([x[2] for x in ref]),
                                 rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------ box-head losses
def test_roi_losses_by_hand(tmp_path):
  from jaxdet.experiments import registry
  from jaxdet.ops.roi_sampling import SampledRois
  from jaxdet.train import sharding as shard_lib
  exp = registry.build(_tiny_config(str(tmp_path / "bench")), shard_lib.make_mesh())
  k = exp.num_classes
  boxes = jnp.array([[[0, 0, 10, 10], [5, 5, 25, 15], [0, 0, 4, 4], [0, 0, 1, 1]]], jnp.float32)
  gt = jnp.array([[[1, 0, 11, 10], [5, 4, 25, 16], [0, 0, 0, 0], [0, 0, 0, 0]]], jnp.float32)
  sampled = SampledRois(boxes=boxes, classes=jnp.array([[1, 0, k, k]]), matched_gt_boxes=gt,
                        is_fg=jnp.array([[True, True, False, False]]),
                        valid=jnp.array([[True, True, True, False]]),
                        indices=jnp.zeros((1, 4), jnp.int32),
                        matched_gt_index=jnp.zeros((1, 4), jnp.int32))
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(1, 4, k + 1)).astype(np.float32)
  deltas = rng.normal(size=(1, 4, k, 4)).astype(np.float32)
  cls, reg, fg = exp.roi_losses(jnp.asarray(logits), jnp.asarray(deltas), sampled)
  lse = np.log(np.exp(logits[0]).sum(-1))
  ce = [lse[0] - logits[0, 0, 1], lse[1] - logits[0, 1, 0], lse[2] - logits[0, 2, k]]
  np.testing.assert_allclose(float(cls), sum(ce) / 3, rtol=1e-5)   # 3 valid RoIs

  def target(g, a):
    aw, ah = a[2] - a[0], a[3] - a[1]
    gw, gh = g[2] - g[0], g[3] - g[1]
    return np.array([10 * ((g[0] + gw / 2) - (a[0] + aw / 2)) / aw,
                     10 * ((g[1] + gh / 2) - (a[1] + ah / 2)) / ah,
                     5 * np.log(gw / aw), 5 * np.log(gh / ah)])
  l1 = (np.abs(deltas[0, 0, 1] - target(np.asarray(gt[0, 0]), np.asarray(boxes[0, 0]))).sum()
        + np.abs(deltas[0, 1, 0] - target(np.asarray(gt[0, 1]), np.asarray(boxes[0, 1]))).sum())
  np.testing.assert_allclose(float(reg), l1 / 3, rtol=1e-5)      # L1 (beta 0), / sampled RoIs
  assert float(fg) == 2.0


# ---------------------------------------------------------------------------------- the network
@pytest.mark.parametrize("design", ["fpn", "c4"])
def test_rpn_outputs_follow_the_anchor_grid(tmp_path, design):
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  exp = registry.build(_tiny_config(str(tmp_path / "bench"), design), shard_lib.make_mesh())
  variables = exp._init_variables(jax.random.PRNGKey(0))
  rois = jnp.zeros((2, 5, 4)) + jnp.array([0, 0, 20, 20.0])
  out = exp.model.apply(variables, jnp.zeros((2, 64, 64, 3)), rois)
  assert out["objectness"].shape == (2, len(exp.anchors))
  assert out["rpn_deltas"].shape == (2, len(exp.anchors), 4)
  assert out["cls_logits"].shape == (2, 5, exp.num_classes + 1)
  assert out["box_deltas"].shape == (2, 5, exp.num_classes, 4)
  # FPN: 3 anchors per location on P2-P6 of a 64 px image; C4: 9 on the 4 x 4 res4 map.
  per_level = [16 * 16, 8 * 8, 4 * 4, 2 * 2, 1] if design == "fpn" else [4 * 4]
  assert len(exp.anchors) == exp.num_per_loc * sum(per_level)


def test_c4_loads_imagenet_res5_into_the_roi_head(tmp_path):
  from jaxdet.experiments import registry
  from jaxdet.models import weights
  from jaxdet.models.resnet import ResNet
  from jaxdet.train import sharding as shard_lib
  net = ResNet(18, 8, "group_norm")
  v = net.init(jax.random.PRNGKey(5), jnp.zeros((1, 32, 32, 3)))
  path = str(tmp_path / "r18.npz")
  weights.save_params_npz({"params": {"backbone": v["params"]}}, path)
  c = _tiny_config(str(tmp_path / "bench"), "c4", **{"model.pretrained": path})
  exp = registry.build(c, shard_lib.make_mesh())
  state = exp.load_pretrained(exp.init(jax.random.PRNGKey(0)))
  p = state["net"].params
  np.testing.assert_array_equal(p["res5"]["block0"]["conv1"]["kernel"],
                                v["params"]["stage4"]["block0"]["conv1"]["kernel"])
  np.testing.assert_array_equal(p["backbone"]["stage3"]["block1"]["conv2"]["kernel"],
                                v["params"]["stage3"]["block1"]["conv2"]["kernel"])


# ------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("design,alwa", [("fpn", False), ("c4", True)])
def test_trains_and_evaluates_end_to_end(tmp_path, design, alwa):
  from jaxdet.run import run
  from jaxdet.train import checkpoint as ckpt_lib
  overrides = {"alwa.enabled": alwa, "alwa.roi_head": alwa, "alwa.window": 2,
               "train.eval_every": 6}
  workdir = str(tmp_path / "run")
  metrics = run(_tiny_config(str(tmp_path / "bench"), design, **overrides), workdir)
  assert {"AP", "AP50", "APs"} <= set(metrics)
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  assert ckpt.latest_step() == 6
  ckpt.close()
  if alwa:   # both ALWA states (RPN, box head) are part of the checkpointed state
    from jaxdet.experiments.trained import load_trained
    state = load_trained(workdir).state
    assert {"net", "alwa", "alwa_roi"} <= set(state)
