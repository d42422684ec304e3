"""AP-loss Table 3 robustness columns: metric choice, Gaussian-noise readings, Advs-Patch, DeepFool.

References are independent: numpy noise draws, ``corruptions.black_patch`` pixels, the closed-form
DeepFool step of affine classifiers (exact for them), ``voc.evaluate_voc_from_coco`` on the
written detections, and the detector's own ``predict_fn``.
"""
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.data import corruptions
from jaxdet.evaluation import adversarial
from jaxdet.experiments import detection_modes

TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train")
sys.path.insert(0, TRAIN)
import tiny  # noqa: E402


# ---- tiny RetinaNet (untrained: prior 0.01 scores, but input-dependent) -------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("bench") / "b")
  tiny.tiny_config(root)
  return root


def _build(data_root, **overrides):
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.loop import init_or_restore

  exp = registry.build(tiny.tiny_config(data_root, **overrides), shard_lib.make_mesh())
  state, _ = init_or_restore(exp, None)
  return exp, state


@pytest.fixture(scope="module")
def tiny_det(data_root):
  exp, state = _build(data_root, **{"eval.score_threshold": 0.005})
  return exp, state, next(iter(exp.eval_batches()))


# ---- metric selection ---------------------------------------------------------------------------
def _cfg(**eval_and_data):
  from jaxdet.experiments.defaults import detector_defaults
  c = detector_defaults()
  for key, value in eval_and_data.items():
    group, name = key.split("__")
    c[group][name] = value
  return c


def test_metric_is_voc07_map50_on_voc_data_and_coco_ap50_otherwise():
  assert detection_modes.robustness_metric(_cfg()) == "coco_ap50"
  assert detection_modes.robustness_metric(_cfg(eval__voc_metrics=True)) == "voc07_map50"
  assert detection_modes.robustness_metric(
      _cfg(data__source="tfds", data__tfds_name="voc/2007")) == "voc07_map50"
  assert detection_modes.robustness_metric(
      _cfg(data__source="tfds", data__tfds_name="coco/2017")) == "coco_ap50"
  assert detection_modes.robustness_metric(
      _cfg(eval__voc_metrics=True, eval__robustness_metric="voc_area_map50")) == "voc_area_map50"
  assert detection_modes.robustness_metric(
      _cfg(eval__voc_metrics=True, eval__robustness_metric="coco_ap50")) == "coco_ap50"
  with pytest.raises(ValueError, match="config.eval.robustness_metric"):
    detection_modes.robustness_metric(_cfg(eval__robustness_metric="map"))


def test_robustness_json_reports_the_voc07_metric_of_the_detections(tiny_det, tmp_path, monkeypatch):
  from jaxdet.evaluation import coco as coco_eval
  from jaxdet.evaluation import voc
  exp, state, _ = tiny_det
  cfg = exp.config
  old = (cfg.eval.voc_metrics, cfg.eval.robustness)
  cfg.eval.voc_metrics, cfg.eval.robustness = True, ("clean", "black_patch")
  monkeypatch.setattr(detection_modes.loop, "restore_latest", lambda *a: state)
  try:
    scores = detection_modes.evaluate_robustness(exp, str(tmp_path))
  finally:
    cfg.eval.voc_metrics, cfg.eval.robustness = old
  with open(tmp_path / "robustness.json") as f:
    result = json.load(f)
  assert result["metric"] == "voc07_map50" and result["scores"] == scores
  gt = coco_eval.coco_from_source(exp.val_source)
  for name in ("clean", "black_patch"):
    with open(tmp_path / f"detections_{name}_step0.json") as f:
      dets = json.load(f)
    want = voc.evaluate_voc_from_coco(gt, dets, use_07_metric=True,
                                      image_ids=list(exp.val_source.image_ids))["mAP"]
    assert scores[name] == pytest.approx(want, abs=1e-12)
  assert set(result["AP50"]) == {"clean", "black_patch"}


def test_check_robustness_names_the_config_keys(tiny_det):
  exp = tiny_det[0]
  bad = {"robustness": ("clean", "blak_patch"), "noise_space": "normalized",
         "adv_patch_objective": "iou", "deepfool_max_iter": 0}
  keys = {"robustness": "config.eval.robustness", "noise_space": "config.eval.noise_space",
          "adv_patch_objective": "config.eval.adv_patch_objective",
          "deepfool_max_iter": "config.eval.deepfool_max_iter"}
  for key, value in bad.items():
    cfg = exp.config.copy_and_resolve_references()
    cfg.eval[key] = value
    if key != "robustness":
      cfg.eval.robustness = ("clean", "adv_patch", "deepfool")
    fake = types.SimpleNamespace(**{k: getattr(exp, k) for k in (
        "model", "anchors_of", "normalize", "losses", "num_classes", "image_size",
        "eval_image_size", "mesh")}, config=cfg)
    with pytest.raises(ValueError, match=keys[key]):
      detection_modes.check_robustness(fake)
  two_stage = types.SimpleNamespace(config=exp.config, name="faster_rcnn")
  with pytest.raises(ValueError, match="config.eval.robustness.*faster_rcnn"):
    adversarial.check_supported(two_stage)


# ---- Gaussian noise, both readings ----------------------------------------------------------------
def test_pixels01_noise_is_todays_function_and_has_variance_001_on_01():
  image = np.full((64, 80, 3), 128, np.uint8)
  out = corruptions.get_corruption("gaussian_noise")(image, np.zeros((0, 4)),
                                                      np.random.default_rng(7))
  noise = np.random.default_rng(7).normal(0.0, 0.1, size=image.shape)
  want = np.round(np.clip(image / 255.0 + noise, 0, 1) * 255).astype(np.uint8)
  np.testing.assert_array_equal(out, want)
  np.testing.assert_array_equal(out, corruptions.gaussian_noise(image, np.random.default_rng(7)))
  d = out / 255.0 - image / 255.0
  assert abs(d.mean()) < 0.005 and d.var() == pytest.approx(0.01 + 1 / 12 / 255 ** 2, rel=0.05)


def test_network_input_noise_is_n001_after_normalisation_inside_the_image(tiny_det):
  exp = tiny_det[0]
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  hw = np.array([[64, 64], [40, 50], [10, 64]])
  out = corruptions.network_input_noise(
      images, hw, exp.config.data.pixel_std,
      [np.random.default_rng(s) for s in (1, 2, None)][:2] + [None], 0.01)
  d = np.asarray(exp.normalize(out)) - np.asarray(exp.normalize(images))
  for i, seed in enumerate((1, 2)):
    h, w = hw[i]
    want = np.random.default_rng(seed).normal(0.0, 0.1, (h, w, 3))
    np.testing.assert_allclose(d[i, :h, :w], want, atol=2e-5)
    assert np.all(d[i, h:] == 0) and np.all(d[i, :, w:] == 0)
  assert np.all(d[2] == 0)    # no rng: left clean (padding example)
  whole = d[0].ravel()
  assert abs(whole.mean()) < 0.005 and whole.var() == pytest.approx(0.01, rel=0.05)
  # In [0, 1] pixels the same noise has std 0.1 * pixel_std per channel (not clipped).
  pix = (out[0] - images[0]) / 255.0
  np.testing.assert_allclose(pix.reshape(-1, 3).std(0), 0.1 * np.array(exp.config.data.pixel_std),
                             rtol=0.05)


def test_noise_space_selects_the_plumbing(tiny_det):
  exp, state, batch = tiny_det
  assert detection_modes.column_inputs(exp, state.experiment, "gaussian_noise", []) == {
      "transform": corruptions.get_corruption("gaussian_noise")}
  exp.config.eval.noise_space = "network_input"
  try:
    inputs = detection_modes.column_inputs(exp, state.experiment, "gaussian_noise", [])
    noisy = next(iter(inputs["batches"]))
  finally:
    exp.config.eval.noise_space = "pixels01"
  assert noisy["images"].dtype == np.float32 and noisy["image_id"].tolist() == batch["image_id"].tolist()
  i = 0
  d = (np.asarray(exp.normalize(noisy["images"][i])) - np.asarray(exp.normalize(batch["images"][i])))
  want = np.random.default_rng((exp.config.seed, detection_modes._NOISE_TAG,
                                int(batch["image_id"][i]))).normal(0, 0.1, d.shape)
  np.testing.assert_allclose(d, want, atol=2e-5)


# ---- Advs-Patch -----------------------------------------------------------------------------------
def test_patch_mask_is_the_black_patch_geometry():
  rng = np.random.default_rng(3)
  image = rng.integers(1, 256, (50, 70, 3), dtype=np.uint8)   # no zero pixel
  boxes = np.array([[3.2, 4.0, 30.7, 22.1], [40, 10, 69.5, 49.9], [-10, -5, 12, 9], [5, 5, 5, 9]])
  black = np.all(corruptions.black_patch(image, boxes) == 0, axis=-1)
  np.testing.assert_array_equal(corruptions.patch_mask(boxes, 50, 70), black)
  framed = corruptions.patch_mask(boxes, 50, 70, shape=(64, 96))
  np.testing.assert_array_equal(framed[:50, :70], black)
  assert not framed[50:].any() and not framed[:, 70:].any()


def test_adv_patch_geometry_and_objective_on_a_tiny_retinanet(tiny_det):
  exp, state, batch = tiny_det
  net = state.experiment["net"]
  assert np.all(batch["scale"] == 1.0)     # 64 px images in a 64 px frame
  attack = adversarial.PatchAttack(exp, steps=6, step_size=0.03)
  patched = attack(net, batch)
  # Geometry: the pixels that may change are exactly the black patch's.
  valid = np.flatnonzero(batch["example_valid"])
  for i in valid:
    k = int(np.flatnonzero(np.asarray(exp.val_source.image_ids) == batch["image_id"][i])[0])
    ex = exp.val_source[k]
    black = np.all(corruptions.black_patch(np.maximum(ex.image, 1), ex.boxes) == 0, axis=-1)
    mask = adversarial.batch_patch_masks(batch["boxes"][i:i + 1], batch["box_valid"][i:i + 1],
                                         batch["image_hw"][i:i + 1], (64, 64))[0]
    np.testing.assert_array_equal(mask, black)
    changed = np.any(patched[i] != batch["images"][i], axis=-1)
    assert not changed[~mask].any() and changed[mask].mean() > 0.9
  # Objective: lower than with the random (uniform) initial patch and than the clean centres.
  adv, rand, clean = (_objective(attack, net, batch, px) for px in
                      (patched, _random_patch_images(attack, batch), batch["images"]))
  assert np.all(adv[valid] < rand[valid]) and np.all(adv[valid] < clean[valid]), (adv, rand, clean)


def _random_patch_images(attack, batch):
  mask = adversarial.batch_patch_masks(batch["boxes"], batch["box_valid"], batch["image_hw"],
                                       batch["images"].shape[1:3])[..., None]
  start = attack.paste(jnp.asarray(batch["images"]), jnp.asarray(mask, jnp.float32),
                       attack.initial_patch(jnp.asarray(batch["image_id"]), batch["images"].shape))
  return np.round(np.asarray(start))


def _objective(attack, net, batch, pixels):
  fn = jax.jit(attack.attacked)
  return np.asarray(fn(net, jnp.asarray(pixels, jnp.float32), jnp.asarray(batch["boxes"]),
                       jnp.asarray(batch["classes"]), jnp.asarray(batch["box_valid"])))


def test_adv_patch_with_the_loss_objective_raises_the_detector_loss(tiny_det):
  exp, state, batch = tiny_det
  net = state.experiment["net"]
  attack = adversarial.PatchAttack(exp, steps=3, step_size=0.03, objective="loss")
  patched = attack(net, batch)
  adv, rand = (_objective(attack, net, batch, px)[0]
               for px in (patched, _random_patch_images(attack, batch)))
  assert adv < rand     # the attacked value is minus the loss


# ---- DeepFool -----------------------------------------------------------------------------------
def test_deepfool_on_a_linear_binary_classifier_is_the_closed_form():
  rng = np.random.default_rng(0)
  d, overshoot = 12, 0.02
  w, b = rng.normal(size=d).astype(np.float32), np.float32(0.3)
  x = rng.normal(size=(6, d)).astype(np.float32)
  label_fn = lambda p, z: jnp.stack([z @ p["w"] + p["b"], jnp.zeros(z.shape[0])], axis=1)
  f = x @ w + b
  assert (f > 0).any() and (f < 0).any()
  for eps in (0.0, 1e-4):
    res = adversarial.DeepFool(label_fn, overshoot=overshoot, eps=eps)(
        {"w": jnp.asarray(w), "b": jnp.asarray(b)}, x, 1.0)
    nw = np.linalg.norm(w)
    want = -(1 + overshoot) * (f / nw + np.sign(f) * eps)[:, None] * w / nw
    np.testing.assert_allclose(np.asarray(res.r), want, rtol=2e-5, atol=1e-7)
    assert res.fooled.all() and (res.iterations == 1).all()
    np.testing.assert_array_equal(res.label0, np.where(f > 0, 0, 1))


def test_deepfool_on_an_affine_multiclass_classifier_finds_the_nearest_boundary():
  rng = np.random.default_rng(1)
  n, d, labels, overshoot = 8, 10, 5, 0.02
  W, c = rng.normal(size=(labels, d)).astype(np.float32), rng.normal(size=labels).astype(np.float32)
  x = rng.normal(size=(n, d)).astype(np.float32)
  valid = np.ones(d, np.float32)
  valid[-2:] = 0                                  # two frozen coordinates
  res = adversarial.DeepFool(lambda p, z: z @ p.T + c, overshoot=overshoot, eps=0.0)(
      jnp.asarray(W), x, valid)
  r = np.asarray(res.r)
  for i in range(n):
    g = W @ x[i] + c
    y = int(np.argmax(g))
    dist = [(abs(g[k] - g[y]) / np.linalg.norm((W[k] - W[y]) * valid), k)
            for k in range(labels) if k != y]
    best, k = min(dist)
    wk = (W[k] - W[y]) * valid
    np.testing.assert_allclose(r[i], (1 + overshoot) * best * wk / np.linalg.norm(wk), rtol=1e-4,
                               atol=1e-6)
    assert res.label[i] == k and r[i, -2:].tolist() == [0, 0]


def test_deepfool_compacted_steps_give_the_full_batch_result():
  """A nonlinear toy (tanh MLP): rows need different numbers of iterations, so the compacted
  loop runs smaller buckets; it must reproduce the full-batch loop and really change labels."""
  rng = np.random.default_rng(2)
  p = {"a": jnp.asarray(rng.normal(size=(6, 16)), jnp.float32),
       "b": jnp.asarray(rng.normal(size=(16, 4)) * 2, jnp.float32)}
  label_fn = lambda p, z: jnp.tanh(z @ p["a"]) @ p["b"]
  x = rng.normal(size=(16, 6)).astype(np.float32) * 2
  full = adversarial.DeepFool(label_fn, compact=False)(p, x, 1.0)
  compact = adversarial.DeepFool(label_fn, compact=True)(p, x, 1.0)
  assert len(set(full.iterations.tolist())) > 1 and full.fooled.all()
  np.testing.assert_array_equal(compact.iterations, full.iterations)
  np.testing.assert_allclose(np.asarray(compact.r), np.asarray(full.r), rtol=1e-5, atol=1e-6)
  after = np.argmax(np.asarray(label_fn(p, x + np.asarray(full.r))), axis=1)
  np.testing.assert_array_equal(after, full.label)
  assert (after != np.argmax(np.asarray(label_fn(p, x)), axis=1)).all()
  assert [adversarial._bucket(c, 32) for c in (32, 17, 16, 9, 5, 4, 1)] == [32, 32, 16, 16, 8, 4, 4]


def test_detector_labels_match_predict_fn_and_deepfool_changes_the_top_detection(tiny_det):
  exp, state, batch = tiny_det
  net = state.experiment["net"]
  attack = adversarial.DeepFoolAttack(exp, max_iter=10, overshoot=0.02, num_classes=10,
                                      compact=False)   # one compiled step shape: faster test
  dets = exp._predict(net, jnp.asarray(batch["images"]), jnp.asarray(batch["image_hw"]))
  # image_label_scores, jitted as the attack uses it (compiled once for both)
  g = np.asarray(attack.deepfool._labels(net, exp.normalize(jnp.asarray(batch["images"]))))
  label = np.asarray(jnp.argmax(g, axis=1))
  top = np.where(np.asarray(dets.num_valid) > 0, np.asarray(dets.classes[:, 0]), exp.num_classes)
  np.testing.assert_array_equal(label, top)
  np.testing.assert_allclose(jax.nn.sigmoid(np.max(g[:, :-1], axis=1)), dets.scores[:, 0], rtol=1e-5)

  pixels, stats = attack(net, batch)
  valid = batch["example_valid"]
  assert stats["fooled"][valid].mean() >= 0.5
  after = exp._predict(net, jnp.asarray(pixels), jnp.asarray(batch["image_hw"]))
  top_after = np.where(np.asarray(after.num_valid) > 0, np.asarray(after.classes[:, 0]),
                       exp.num_classes)
  np.testing.assert_array_equal(top_after != top, stats["fooled"])   # the documented criterion
  # rho = ||r|| / ||x|| on the network input, from the returned pixels.
  r = (np.asarray(exp.normalize(pixels)) - np.asarray(exp.normalize(batch["images"])))
  x = np.asarray(exp.normalize(batch["images"]))
  i = int(np.flatnonzero(stats["fooled"] & valid)[0])
  np.testing.assert_allclose(stats["rho"][i], np.linalg.norm(r[i]) / np.linalg.norm(x[i]), rtol=1e-3)
  summary = adversarial.summarize_deepfool([stats], exp.num_classes + 1)
  assert summary["num_fooled"] == int((stats["fooled"] & valid).sum())
  assert summary["rho_adv"] == pytest.approx(stats["rho"][stats["fooled"] & valid].mean())
