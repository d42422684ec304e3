"""MTGAN as an experiment: mining from a trained baseline, the alternating step, evaluation."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

# The costly fixture is session-scoped; pytest-xdist runs each file on one worker
# (--dist loadfile, pyproject.toml), so it is built once.

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tiny  # noqa: E402


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
  """A finished 8-step tiny RetinaNet run (the MTGAN baseline)."""
  root = tmp_path_factory.mktemp("mtgan")
  data_root = str(root / "bench")
  workdir = str(root / "baseline")
  out = subprocess.run([sys.executable, "-m", "jaxdet.main",
                        f"--config={HERE}/tiny_cli_config.py:{data_root}", f"--workdir={workdir}"],
                       env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def _config(baseline, **overrides):
  from jaxdet.experiments.mtgan import mtgan_defaults
  c = mtgan_defaults()
  c.mtgan.baseline_workdir = baseline
  c.mtgan.mine_rois_per_image, c.mtgan.rois_per_image, c.mtgan.test_rois = 8, 6, 8
  c.mtgan.positive_fraction, c.mtgan.pretrain_steps, c.mtgan.num_workers = 0.5, 2, 0
  c.generator.features, c.generator.up_features, c.generator.num_blocks = 8, 8, 1
  c.discriminator.depth, c.discriminator.width, c.discriminator.norm = 18, 8, "group_norm"
  c.train.batch_size, c.train.num_steps, c.train.progress_bar = 8, 6, False
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 2, 3, 6
  c.eval.crop_batch, c.eval.log_images = 16, 2
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _fresh_run(config, workdir):
  """(experiment, fresh loop state, jitted loop step, train batches) after mining into workdir."""
  from jaxdet.experiments import registry
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib
  exp = registry.build(config, shard_lib.make_mesh())
  exp.workdir = workdir
  exp.mine(workdir)

  state, _ = loop.init_or_restore(exp, None)
  return exp, state, jax.jit(loop.make_step(exp)), exp.train_batches(0)


def test_missing_baseline_says_what_to_train(tmp_path):
  from jaxdet.run import run
  from jaxdet.train.config_check import ConfigError
  c = _config(str(tmp_path / "no_such_run"))
  with pytest.raises(ConfigError, match=r"no_such_run.*python -m jaxdet.main"):
    run(c, str(tmp_path / "w"))


def test_mine_train_evaluate_end_to_end(baseline, tmp_path):
  from jaxdet.data.crop_shards import CropShardSource
  from jaxdet.run import run
  workdir = str(tmp_path / "mtgan")
  metrics = run(_config(baseline), workdir)
  crops = CropShardSource(os.path.join(workdir, "crops"))
  labels = np.asarray(crops.labels())
  assert len(crops) > 0 and (labels >= 1).any() and (labels == 0).any()
  assert crops[0]["hr"].shape == (64, 64, 3) and crops[0]["lr"].shape == (16, 16, 3)
  # MTGAN and the baseline on the same RoIs, in one evaluation line.
  for key in ("AP", "APs", "baseline_AP", "baseline_APs"):
    assert key in metrics
  with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
    assert [json.loads(l)["step"] for l in f] == [6]
  assert os.path.exists(os.path.join(workdir, "images", "lr_sr_hr_step6.png"))

  # Table 9 on the same run, with itself as a compared run (loaded from its workdir).
  c = _config(baseline, **{"mtgan.compare_runs": (workdir,)})
  table = run(c, workdir, mode="accuracy")
  for k in ("pos", "neg", "all"):
    np.testing.assert_equal(table[f"MTGAN/{k}"], table[f"MTGAN (mtgan)/{k}"])
  with open(os.path.join(workdir, "accuracy.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 6
  # The baseline row from the baseline's detections of the same RoIs (written by the eval) and
  # the val ground truth, in plain numpy.
  with open(os.path.join(workdir, "detections_baseline_step6.json")) as f:
    dets = json.load(f)
  ref = _baseline_accuracy_numpy(dets, _val_ground_truth(baseline), threshold=0.5)
  row = saved["table"]["Baseline"]
  assert (row["num_pos"], row["num_neg"]) == (ref["num_pos"], ref["num_neg"])
  assert row["num_pos"] + row["num_neg"] > 0
  for k in ("pos", "neg", "all"):
    np.testing.assert_allclose(row[k], ref[k], equal_nan=True)


def _val_ground_truth(baseline):
  from jaxdet.experiments.trained import load_trained
  source = load_trained(baseline).experiment.val_source
  gt = {}
  for i in range(len(source)):
    ex = source.annotation(i)
    gt[ex.image_id] = (ex.boxes[~ex.is_crowd], np.asarray(source.category_ids)[ex.classes[~ex.is_crowd]])
  return gt


def _baseline_accuracy_numpy(dets, gt, threshold):
  """Table 9's baseline row, independently: positive IoU >= 0.5, negative < 0.35."""
  right = {"pos": 0, "neg": 0}
  total = {"pos": 0, "neg": 0}
  for d in dets:
    x, y, w, h = d["bbox"]
    boxes, cats = gt[d["image_id"]]
    best, cat = 0.0, None
    for (x1, y1, x2, y2), c in zip(boxes, cats):
      iw = max(0.0, min(x + w, x2) - max(x, x1))
      ih = max(0.0, min(y + h, y2) - max(y, y1))
      inter = iw * ih
      iou = inter / (w * h + (x2 - x1) * (y2 - y1) - inter)
      if iou > best:
        best, cat = iou, c
    said = d["category_id"] if d["score"] >= threshold else 0
    if best >= 0.5:
      total["pos"] += 1
      right["pos"] += int(said == cat)
    elif best < 0.35:
      total["neg"] += 1
      right["neg"] += int(said == 0)
  frac = lambda r, t: r / t if t else float("nan")
  return {"pos": frac(right["pos"], total["pos"]), "neg": frac(right["neg"], total["neg"]),
          "all": frac(sum(right.values()), sum(total.values())),
          "num_pos": total["pos"], "num_neg": total["neg"]}


def test_eval_crops_share_batches_across_images(baseline):
  """refine() packs the crops of consecutive images into full eval.crop_batch batches and gives
  each image exactly what running its crops alone gives."""
  from jaxdet.data.factory import Subset
  from jaxdet.experiments import mtgan_inference as inference
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  exp = registry.build(_config(baseline), shard_lib.make_mesh())
  state = exp.init(jax.random.key(3))
  items = list(inference.baseline_rois(exp, Subset(exp.val_source, 6)))
  total = sum(len(i.rois) for i in items)
  b = exp.config.eval.crop_batch
  assert total > 2 * b and any(len(i.rois) % b for i in items)
  calls = []
  original = exp.refine_crops
  exp.refine_crops = lambda st, lr, hr: calls.append(len(lr)) or original(st, lr, hr)
  out = list(inference.refine(exp, state, items, keep_sr=True))
  assert calls == [b] * -(-total // b)          # ceil(total / b) full-size batches, no more
  assert [o.example.image_id for o in out] == [i.example.image_id for i in items]
  for item, got in zip(items, out):
    n = len(item.rois)
    pad = lambda x: np.concatenate([x, np.zeros((b - n % b, *x.shape[1:]), x.dtype)])
    probs, deltas, sr = (np.asarray(o)[:n] for o in original(state, pad(item.lr), pad(item.hr)))
    np.testing.assert_allclose(got.probs, probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.deltas, deltas, rtol=1e-5, atol=1e-6)
    assert np.abs(got.sr.astype(int) - sr.astype(int)).max() <= 1


def test_plain_rcnn_trains_d_on_the_resized_proposals(baseline, tmp_path):
  """Table 3's plain R-CNN (mtgan.sr='none'): D sees the HR crop itself; there is no G update."""
  from jaxdet.experiments import registry
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.config_check import ConfigError
  with pytest.raises(ConfigError, match="adv_branch=False"):
    registry.build(_config(baseline, **{"mtgan.sr": "none"}), shard_lib.make_mesh())
  c = _config(baseline, **{"mtgan.sr": "none", "mtgan.hr_size": 32,
                           "discriminator.adv_branch": False, "mtgan.pretrain_steps": 0})
  exp, state, step, batches = _fresh_run(c, str(tmp_path / "rcnn"))
  batch = next(batches)
  assert batch["hr"].shape[1:] == (32, 32, 3)
  before = jax.device_get(state.experiment)
  state, metrics = step(state, shard_lib.to_global(batch, exp.mesh))
  after = jax.device_get(state.experiment)
  assert _same(after["G"], before["G"]) and not _same(after["D"].params, before["D"].params)
  assert float(metrics["D_adv"]) == 0.0 and np.isfinite(float(metrics["loss_D"]))
  _, _, d_input = exp.refine_crops(state.experiment, batch["lr"], batch["hr"])
  np.testing.assert_array_equal(np.asarray(d_input), batch["hr"])


def test_pretraining_leaves_d_bit_identical_then_both_train(baseline, tmp_path):
  from jaxdet.experiments import registry
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib
  exp, state, step, batches = _fresh_run(_config(baseline), str(tmp_path / "mtgan"))
  same = _same
  for k in range(3):
    before = jax.device_get(state.experiment)
    state, metrics = step(state, shard_lib.to_global(next(batches), exp.mesh))
    after = jax.device_get(state.experiment)
    assert not same(after["G"].params, before["G"].params)
    if k < 2:   # pretrain_steps = 2: G trains on the MSE alone, D is untouched
      assert same(after["D"], before["D"]) and float(metrics["pretrain"]) == 1.0
    else:
      assert not same(after["D"].params, before["D"].params)
      assert float(metrics["pretrain"]) == 0.0


def _load_config(name, arg=None):
  import importlib.util
  path = os.path.join(HERE, "..", "..", "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.parametrize("name", ["mtgan_coco", "mtgan_widerface", "mtgan_demo"])
def test_ablation_variants_set_the_paper_switches(name):
  from jaxdet.experiments.registry import schema
  from jaxdet.train.config_check import validate
  base = _load_config(name)
  assert base.mtgan.sr == "gan" and base.discriminator.adv_branch and base.loss.use_cls
  expect = {
      "sbu": {("mtgan", "sr"): "bilinear"},
      "rcnn": {("mtgan", "sr"): "none", ("mtgan", "hr_size"): 224,
               ("discriminator", "adv_branch"): False},
      "d_no_adv": {("discriminator", "adv_branch"): False},
      "d_no_reg": {("discriminator", "reg_branch"): False},
      "g_no_adv": {("loss", "use_adv"): False},
      "g_no_cls": {("loss", "use_cls"): False},
      "g_no_reg": {("loss", "use_reg"): False},
      "ensemble": {("mtgan", "ensemble"): True},
  }
  for variant, changes in expect.items():
    c = _load_config(name, variant)
    validate(c, schema("mtgan"))
    for (group, key), value in changes.items():
      assert c[group][key] == value, (variant, group, key)
    # Nothing else of the recipe moves (the schedule stays the paper's).
    assert c.train.num_steps == base.train.num_steps
  with pytest.raises(ValueError, match="valid: .*sbu"):
    _load_config(name, "sbux")


def test_widerface_schedule_is_three_plus_three_epochs():
  c = _load_config("mtgan_widerface")
  epoch = 12_880 * c.mtgan.rois_per_image // c.train.batch_size
  assert c.train.num_steps == 6 * epoch
  for opt in (c.optim_G, c.optim_D):
    assert opt.base_lr == 1e-4 and tuple(opt.decay_steps) == (3 * epoch,) and opt.decay_factor == 0.1
  assert c.mtgan.test_rois == 600 and c.eval.protocol == "wider_face"


def test_table9_counts_on_a_hand_made_image():
  """Labels by the mining thresholds, D's arg-max and the thresholded baseline, hand-counted."""
  import types
  from jaxdet.data.records import DetectionExample
  from jaxdet.experiments import mtgan_inference as inference
  exp = types.SimpleNamespace(config=types.SimpleNamespace(
      mtgan=types.SimpleNamespace(positive_iou=0.5, negative_iou=0.35)))
  ex = DetectionExample(image=None, boxes=[[0, 0, 10, 10], [20, 20, 30, 30]], classes=[0, 1],
                        image_id=1, height=40, width=40)
  rois = np.array([[0, 0, 10, 10],      # IoU 1 with class 0 -> label 1
                   [20, 20, 30, 31],    # IoU 10/11 with class 1 -> label 2
                   [0, 0, 10, 20],      # IoU 0.5 -> label 1 (>= 0.5, as Fast R-CNN)
                   [0, 0, 10, 14],      # IoU 1/1.4 = 0.714 -> label 1
                   [0, 0, 10, 25],      # IoU 0.4 -> ignored
                   [32, 32, 40, 40]],   # IoU 0 -> background
                  np.float32)
  item = inference.ImageRois(ex, [], rois, np.array([0.9, 0.2, 0.7, 0.6, 0.9, 0.8], np.float32),
                             np.array([0, 1, 1, 0, 0, 0]), None, None)
  labels = inference.roi_labels(exp, item)
  np.testing.assert_array_equal(labels, [1, 2, 1, 1, -1, 0])
  base = inference.baseline_prediction(item, 0.5)
  np.testing.assert_array_equal(base, [1, 0, 2, 1, 1, 1])
  counts = inference.AccuracyCounts()
  counts.add(labels, base)
  row = counts.table_row()
  # positives right: RoI 0 (1 == 1), RoI 3 (1 == 1); wrong: RoI 1 (said bg), RoI 2 (said 2).
  # negative RoI 5 said class 1: wrong.
  assert (row["num_pos"], row["num_neg"]) == (4, 1)
  assert row["pos"] == 2 / 4 and row["neg"] == 0.0 and row["all"] == 2 / 5
  d_pred = np.argmax(np.eye(3)[[1, 2, 0, 1, 0, 0]], axis=1)
  counts = inference.AccuracyCounts()
  counts.add(labels, d_pred)
  assert counts.table_row()["pos"] == 3 / 4 and counts.table_row()["neg"] == 1.0
