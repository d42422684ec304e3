"""Mask R-CNN: the mask branch's inference picks the detected class's mask, the mask head's
shapes, a tiny run end to end with box and mask AP, and the two-stage configs (Mask R-CNN and the
ALWA paper's Tables 3, 4 and 6 grids) against their schemas."""
import importlib.util
import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tiny  # noqa: E402

CONFIGS = pathlib.Path(HERE).parents[1] / "configs"


def _tiny_mask_config(data_root, **overrides):
  from jaxdet.experiments.mask_rcnn import mask_rcnn_defaults
  c = mask_rcnn_defaults()
  t = tiny.tiny_config(data_root)
  for g in ("data", "train", "optim"):
    c[g].update(t[g].to_dict())
  c.data.mask_size = 32
  c.eval.batch_size = 8
  c.model.depth, c.model.width, c.model.norm, c.model.frozen_stages = 18, 8, "group_norm", -1
  c.model.fpn_filters, c.model.fc_dim, c.model.mask_dim, c.model.mask_convs = 16, 32, 16, 2
  c.model.mask_pooler_resolution = 7
  c.rpn.batch_size_per_image, c.rpn.pre_nms_topk_train, c.rpn.post_nms_topk_train = 64, 200, 100
  c.rpn.pre_nms_topk_test, c.rpn.post_nms_topk_test = 200, 50
  c.roi_head.num_samples = 32
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


def _experiment(tmp_path):
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  cfg = _tiny_mask_config(str(tmp_path / "bench"))
  return registry.build(cfg, shard_lib.make_mesh())


def test_inference_masks_are_the_detected_class_channel(tmp_path):
  """``predict_fn``'s masks equal sigmoid(mask_head(detection boxes))[..., detected class],
  recomputed here from the same parameters."""
  exp = _experiment(tmp_path)
  state = exp.init(jax.random.PRNGKey(0))
  net = state["net"]
  # Make the predictor's classes differ so a wrong channel cannot pass by accident.
  params = jax.tree_util.tree_map(lambda x: x, net.params)
  key = jax.random.PRNGKey(3)
  w = params["mask_predictor"]["kernel"]
  params["mask_predictor"]["kernel"] = jax.random.normal(key, w.shape) * 0.5
  params["mask_predictor"]["bias"] = jnp.arange(w.shape[-1], dtype=jnp.float32)
  params["cls_score"]["bias"] = jnp.zeros_like(params["cls_score"]["bias"]).at[:-1].set(3.0)
  net = net.replace(params=params)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)), jnp.uint8)
  hw = jnp.array([[64, 64], [48, 64]], jnp.int32)
  dets = exp.predict_fn(net, images, hw)
  assert int(dets.num_valid.min()) > 0
  variables = {"params": net.params, **net.model_state}
  feats = exp.model.apply(variables, exp.normalize(images), method=lambda m, x: m.features(x))
  logits = exp.model.apply(variables, feats, dets.boxes,
                           method=lambda m, f, r: m.mask_head(f, r))
  logits = np.asarray(logits)
  classes = np.asarray(dets.classes)
  picked = logits[np.arange(2)[:, None], np.arange(classes.shape[1])[None, :], :, :, classes]
  want = 1 / (1 + np.exp(-picked))
  assert want.shape == dets.masks.shape == (2, classes.shape[1], 14, 14)
  np.testing.assert_allclose(np.asarray(dets.masks), want, rtol=1e-5, atol=1e-6)


def test_trains_and_evaluates_end_to_end(tmp_path):
  """A few steps of the tiny Mask R-CNN: finite losses including the mask loss, box and mask AP
  from pycocotools, and result segmentations that decode to masks of the original image size."""
  from pycocotools import mask as mask_utils

  from jaxdet.run import run
  workdir = str(tmp_path / "run")
  metrics = run(_tiny_mask_config(str(tmp_path / "bench"), **{"train.eval_every": 6}), workdir)
  assert {"AP", "AP50", "mask_AP", "mask_AP50", "mask_APs"} <= set(metrics)
  assert all(np.isfinite(metrics[k]) or k.endswith(("m", "l")) for k in ("AP", "mask_AP"))
  with open(os.path.join(workdir, "detections_step6.json")) as f:
    results = json.load(f)
  assert results and all("segmentation" in r for r in results)
  from jaxdet.data import benchmark
  gt = json.load(open(benchmark.ensure_benchmark(str(tmp_path / "bench"), num_train=24, num_val=8,
                                                 image_size=64, verbose=False)["val_json"]))
  sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
  for r in results[:20]:
    assert tuple(mask_utils.decode(r["segmentation"]).shape) == sizes[r["image_id"]]


@pytest.mark.parametrize("split", ["train", "val"])
def test_split_without_masks_is_a_clear_error_before_training(tmp_path, split):
  """A box-only JSON (segmentation [] as VOC converters write) loads as a detection dataset, but
  Mask R-CNN stops before the first step, naming the split and the count."""
  from jaxdet.run import run
  c = _tiny_mask_config(str(tmp_path / "bench"))
  with open(c.data[f"{split}_json"]) as f:
    data = json.load(f)
  for a in data["annotations"]:
    a["segmentation"] = []
  path = tmp_path / "no_masks.json"
  path.write_text(json.dumps(data))
  c.data[f"{split}_json"] = str(path)
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=rf"{split} split has no instance masks \({len(data['annotations'])} "):
    run(c, str(workdir))
  assert not (workdir / "checkpoints").exists()


# --------------------------------------------------------------------------------- configs
def _load(name):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("name,experiment", [("alwa_faster_rcnn_voc", "faster_rcnn"),
                                             ("alwa_faster_rcnn_coco", "faster_rcnn"),
                                             ("alwa_mask_rcnn_coco", "mask_rcnn")])
@pytest.mark.parametrize("demo", [False, True])
def test_alwa_grid_configs(name, experiment, demo):
  """Every cell of the ALWA tables' grids is a valid config with the loss and weighting asked."""
  from jaxdet.experiments.registry import schema
  from jaxdet.train.config_check import validate
  mod = _load(name)
  for reg in ("l1", "smooth_l1", "ciou"):
    for weighting in ("baseline", "alwa1", "alwa2"):
      arg = ",".join([reg, weighting] + (["demo"] if demo else []))
      c = mod.get_config(arg)
      validate(c, schema(c.experiment))
      assert c.experiment == experiment
      assert c.loss.reg == reg
      assert c.loss.reg_weight == (10.0 if reg == "ciou" else 1.0)
      assert c.loss.smooth_l1_beta == (1.0 if reg == "smooth_l1" else 0.0)
      assert c.alwa.enabled == (weighting != "baseline")
      if weighting != "baseline":
        assert c.alwa.statistic == weighting and c.alwa.window == 100
      assert (c.data.source == "benchmark") == demo
  with pytest.raises(ValueError, match="unknown variant"):
    mod.get_config("ohem")
  with pytest.raises(ValueError, match="pick one"):
    mod.get_config("l1,ciou")


def test_mask_rcnn_config_is_faster_rcnn_fpn_plus_masks():
  from jaxdet.experiments.registry import schema
  from jaxdet.train.config_check import validate
  box, mask = _load("faster_rcnn_coco"), _load("mask_rcnn_coco")
  for arg in ("", "r101", "demo", "alwa"):
    b, m = box.get_config(arg), mask.get_config(arg)
    validate(m, schema("mask_rcnn"))
    assert m.experiment == "mask_rcnn" and m.model.design == "fpn"
    assert (m.data.mask_size, m.model.mask_dim) == ((56, 16) if arg == "demo" else (112, 256))
    for group in ("data", "model", "optim", "train", "rpn", "roi_head", "alwa"):
      for k, v in b[group].items():
        assert m[group][k] == v, (arg, group, k)
  with pytest.raises(ValueError, match="unknown variant"):
    mask.get_config("c4")


@pytest.mark.parametrize("name,images", [("alwa_faster_rcnn_voc", 11_540),
                                         ("alwa_faster_rcnn_coco", 117_266),
                                         ("alwa_mask_rcnn_coco", 117_266)])
def test_alwa_grid_paper_schedule(name, images):
  """Tables 3-8 were trained with 2 GPUs x 4 images at lr 0.02, 1x (12 epochs, /10 at 8, 11)."""
  c = _load(name).get_config("l1,alwa1")
  per_epoch = images // 8
  assert (c.train.batch_size, c.optim.base_batch, c.optim.base_lr) == (8, 8, 0.02)
  assert c.train.num_steps == 12 * per_epoch
  assert tuple(c.optim.decay_steps) == (8 * per_epoch, 11 * per_epoch)
