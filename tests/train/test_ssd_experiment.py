"""SSD as an experiment: every one-stage method switch trains, the demo config runs end to end."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory):
  from jaxdet.data import benchmark
  root = str(tmp_path_factory.mktemp("bench") / "b")
  return benchmark.ensure_benchmark(root, num_train=24, num_val=8, image_size=64, verbose=False)


def tiny_ssd_config(paths, **overrides):
  """A 64x64 SSD (VGG-16 at 1/32 width, 4 source maps) on the small benchmark build."""
  from jaxdet.experiments.ssd import ssd_defaults
  c = ssd_defaults()
  c.data.source = "coco_json"
  c.data.train_json, c.data.train_images = paths["train_json"], paths["train_images"]
  c.data.val_json, c.data.val_images = paths["val_json"], paths["val_images"]
  c.data.image_size, c.data.max_boxes, c.data.num_workers = (64, 64), 8, 1
  c.ssd.vgg_width, c.ssd.group_norm = 1 / 32, True
  c.ssd.extras = ((8, 16, 3, 2, 1), (8, 16, 3, 2, 1))
  c.ssd.steps = (8, 16, 32, 64)
  c.ssd.min_sizes, c.ssd.max_sizes = (8.0, 20.0, 36.0, 52.0), (20.0, 36.0, 52.0, 64.0)
  c.ssd.aspect_ratios = ((2.0,), (2.0, 3.0), (2.0,), (2.0,))
  c.optim.base_lr, c.optim.base_batch, c.optim.warmup_steps = 0.005, 8, 0
  c.optim.decay_steps = ()
  c.train.batch_size, c.train.num_steps = 8, 6
  c.train.progress_bar = False
  c.eval.batch_size = 8
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


# Every classification loss once; consistent optimization and ALWA ride on two of them (each
# combination is one more compile of the train step, the cost of this file).
SWITCHES = {
    "focal": {"loss.cls": "focal"},
    "auc": {"loss.cls": "auc"},
    "ap+consistent": {"loss.cls": "ap", "consistent.enabled": True},
    "ce_ohem+alwa": {"loss.cls": "ce_ohem", "alwa.enabled": True},
}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_method_switch_trains_ssd(data_paths, switch):
  """Ten steps on one batch: finite, the method's own terms present, the loss goes down."""
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.loop import init_or_restore, make_step

  cfg = tiny_ssd_config(data_paths, **SWITCHES[switch])
  mesh = shard_lib.make_mesh()
  exp = registry.build(cfg, mesh)
  state, shardings = init_or_restore(exp, None)
  step = jax.jit(make_step(exp), donate_argnums=0,
                 out_shardings=(shardings, shard_lib.replicated(mesh)))
  batch = shard_lib.to_global(next(exp.train_batches(0)), mesh)
  assert batch["images"].shape == (8, 64, 64, 3)
  losses = []
  for _ in range(10):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0], losses
  if "consistent" in switch:
    assert float(metrics["num_pos_refined"]) > 0 and float(metrics["reg_loss_refined"]) > 0
  if "alwa" in switch:
    assert "lambda_cls" in metrics and "alwa" in state.experiment
  net = state.experiment["net"]
  head = net.params["cls_logits_0"]["kernel"]
  classes = exp.num_classes + ("ce_ohem" in switch)   # C + 1 softmax for CE + OHEM
  assert head.shape[-1] == 4 * classes
  if switch in ("ce_ohem+alwa", "ap+consistent"):
    # Inference: the best detection of each image scores the best (box, class) of the head:
    # the softmax foreground probability for CE + OHEM, the sigmoid otherwise.
    dets = shard_lib.to_host(exp._predict(net, batch["images"], batch["image_hw"]))
    logits = np.asarray(exp.model.apply({"params": net.params, **net.model_state},
                                        exp.normalize(batch["images"]))["cls_logits"], np.float64)
    if "ce_ohem" in switch:
      e = np.exp(logits - logits.max(-1, keepdims=True))
      probs = (e / e.sum(-1, keepdims=True))[..., 1:]
    else:
      probs = 1.0 / (1.0 + np.exp(-logits))
    best = probs.reshape(len(probs), -1).max(1)
    shown = best > cfg.eval.score_threshold
    np.testing.assert_allclose(dets.scores[shown, 0], best[shown], rtol=1e-4)
    assert np.all(np.isfinite(dets.boxes)) and shown.any()


def test_detections_map_back_from_the_warp_per_axis(data_paths):
  """``detect`` on non-square images warped to 64x64: detections equal to the warped ground
  truth (a stub network) come back as the original boxes (x / sx, y / sy) in COCO xywh."""
  from jaxdet.data.records import DetectionExample
  from jaxdet.experiments import registry
  from jaxdet.ops.postprocess import Detections
  from jaxdet.train import sharding as shard_lib
  exp = registry.build(tiny_ssd_config(data_paths), shard_lib.make_mesh())
  rng = np.random.default_rng(0)
  examples = []
  for i, (h, w) in enumerate(((40, 96), (90, 30), (50, 50))):
    xy = rng.uniform(0, [w * 0.6, h * 0.6], (3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, [w * 0.4, h * 0.4], (3, 2))], 1)
    examples.append(DetectionExample(image=np.zeros((h, w, 3), np.uint8), boxes=boxes,
                                     classes=np.array([0, 1, 2]), image_id=7 + i))
  batches = iter(list(exp.eval_batches(source=examples)))

  def stub_predict(net, images, image_hw):
    b = next(batches)
    return Detections(boxes=b["boxes"], scores=np.where(b["box_valid"], 0.9, 0.0),
                      classes=np.maximum(b["classes"], 0), num_valid=b["box_valid"].sum(1))

  exp._predict = stub_predict
  results = exp.detect({"net": None}, exp.eval_batches(source=examples))
  assert len(results) == 9
  for r in results:
    ex = examples[r["image_id"] - 7]
    k = exp.categories.ids.index(r["category_id"])
    x1, y1, x2, y2 = ex.boxes[k]
    np.testing.assert_allclose(r["bbox"], [x1, y1, x2 - x1, y2 - y1], rtol=1e-4, atol=1e-3)


def test_ssd_matching_is_the_shared_matcher_with_ssd_rule(data_paths):
  """SSD §2.2: each GT's best default box is its positive even below IoU 0.5 and even when
  another GT overlaps that box more (``low_quality_rematch``); everything else is positive at
  IoU >= 0.5 or negative (no ignored band)."""
  from jaxdet.experiments import registry
  from jaxdet.ops import boxes as box_ops
  from jaxdet.ops import matching
  from jaxdet.train import sharding as shard_lib
  exp = registry.build(tiny_ssd_config(data_paths), shard_lib.make_mesh())
  a = np.asarray(exp.anchors)
  gt0 = np.array([0.0, 0.0, 2.4, 8.0], np.float32)      # a sliver in the top-left 8x8 box
  own = int(np.argmax(box_ops.pairwise_iou(a, gt0[None])[:, 0]))
  near = np.array(box_ops.pairwise_iou(a, a[own][None]))[:, 0]
  near[own] = -1
  gt1 = a[int(np.argmax(near))]                         # the default box overlapping `own` most
  gt = np.stack([gt0, gt1])
  ious = np.asarray(box_ops.pairwise_iou(a, gt))
  assert ious[own, 0] < 0.5 and ious[own, 1] > ious[own, 0]     # GT 1 would win `own`
  batch = {"boxes": gt[None], "classes": np.array([[0, 1]], np.int32),
           "box_valid": np.array([[True, True]])}
  t = exp._targets(batch, exp.anchors)
  assert int(t.state[0, own]) == 1 and int(t.classes[0, own]) == 0
  plain = matching.match_anchors(a, gt, np.array([0, 1]), np.array([True, True]),
                                 positive_iou=0.5, negative_iou=0.5, allow_low_quality=True)
  assert int(plain.classes[own]) == 1                   # without the rematch GT 1 takes it
  state = np.asarray(t.state[0])
  np.testing.assert_array_equal(state[ious.max(1) >= 0.5], 1)
  assert set(np.unique(state)) <= {0, 1}


def test_ssd_demo_trains_and_evaluates_end_to_end(tmp_path):
  """`python -m jaxdet.main --config=configs/ssd512_voc.py:demo` (a few steps), as a user runs it."""
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "jaxdet.main", "--config=configs/ssd512_voc.py:demo,focal",
         f"--workdir={workdir}", "--config.train.num_steps=4", "--config.train.log_every=2",
         "--config.train.checkpoint_every=4", "--config.eval.max_images=16",
         "--config.eval.log_images=2"]
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("XLA_FLAGS", None)
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
    final = json.loads(f.read().splitlines()[-1])
  assert final["step"] == 4 and 0.0 <= final["AP"] <= 1.0
  with open(os.path.join(workdir, "detections_step4.json")) as f:
    dets = json.load(f)
  assert dets and all(0 <= d["bbox"][0] <= 128 and d["bbox"][2] > 0 for d in dets)
  assert "train_step compiled 1 time(s)" in out.stdout + out.stderr
