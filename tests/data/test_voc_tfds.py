"""PASCAL VOC read from TFDS (``voc/2007``, ``voc/2012``) vs read from VOC XML converted to COCO JSON
(the file-based path of configs/retinanet_voc.py): the same ground truth, the same VOC07 mAP.

One tiny VOC-like dataset is written as a VOCdevkit tree (XML + JPEG, ``write_vocdevkit``) and
read three ways:

* ``json``: the XML converted to a COCO JSON in the frame ``CocoJsonSource`` / the VOC evaluator
  expect (``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``, difficult -> iscrowd),
  read by ``CocoJsonSource``;
* ``tfds``: the *real* TFDS ``voc`` builder prepares ``voc/2007`` and ``voc/2012`` from that tree
  as ArrayRecord (``prepare_real_tfds``: its download is pointed at the tree and its
  ``tf.io.gfile.GFile`` at ``open``, the only TensorFlow call of the builder), read by
  ``TfdsSource``; skipped without tensorflow_datasets and importlib_resources (``CAN_PREPARE``);
* ``stand_in``: a stand-in ``tensorflow_datasets`` module whose records apply the builder's own
  formula (``tensorflow_datasets/object_detection/voc.py``, ``_get_example_objects``:
  ``BBox(ymin / height, xmin / width, ymax / height, xmax / width)`` of the XML values, float32);
  it runs without the package, and ``test_stand_in_records_equal_the_real_builder`` checks it
  against the real builder where the package is installed.

The reference is independent of all three: the devkit's rule applied to the XML integers
(``evaluate_voc`` with ``pixel_plus_one=True``) and the hand-computed per-class APs of ``PRED``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from jaxdet.data import factory, tfds_source
from jaxdet.data.coco_json import CocoJsonSource
from jaxdet.data.tfds_source import VOC_CLASSES, TfdsSource, example_from_tfds
from jaxdet.evaluation import voc as voc_eval
from jaxdet.evaluation.face_subsets import source_coco
from jaxdet.experiments import detection_eval
from jaxdet.experiments.defaults import sibling_config

HAS_TFDS = importlib.util.find_spec("tensorflow_datasets") is not None
# TFDS' builders need importlib_resources to prepare a dataset (not to read one).
CAN_PREPARE = HAS_TFDS and importlib.util.find_spec("importlib_resources") is not None
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs")

# year -> split -> images (stem, width, height, objects (class, xmin, ymin, xmax, ymax, difficult))
# in the XML's 1-based inclusive pixels. voc/2007 test holds the scored images; voc/2012 test has
# no annotations (as in TFDS: has_test_annotations=False).
VOC = {
    "2007": {
        "test": [
            ("000001", 500, 375, [("dog", 11, 21, 20, 30, 0),          # 10 x 10 px
                                  ("person", 101, 101, 150, 200, 1),   # difficult
                                  ("car", 1, 1, 500, 375, 0)]),        # the whole image
            ("000002", 353, 500, [("dog", 201, 301, 260, 360, 0),
                                  ("person", 51, 51, 100, 150, 0),
                                  ("person", 291, 11, 340, 110, 1)]),  # difficult, not detected
        ],
        "train": [("000003", 64, 48, [("cat", 5, 6, 40, 44, 0), ("dog", 30, 2, 64, 30, 1)])],
        "val": [("000004", 48, 64, [("horse", 2, 3, 47, 60, 0)])],
    },
    "2012": {
        "train": [("2008_000002", 64, 48, [("tvmonitor", 10, 8, 50, 40, 0)]),
                  ("2008_000003", 40, 40, [("person", 1, 1, 40, 40, 0),
                                           ("bottle", 3, 4, 9, 20, 0)])],
        "val": [("2008_000004", 56, 40, [("sheep", 7, 5, 50, 39, 0)])],
        "test": [("2008_000005", 32, 32, [])],
    },
}

# Detections in jaxdet's continuous frame (VOC pixel (i, j) covers [i - 1, i] x [j - 1, j]).
# Hand-computed VOC07 11-point APs (devkit rule, IoU >= 0.5):
#  dog: 0.9 on 000001 [10, 20, 16, 30] covers 60 of the GT's 10 x 10 px, IoU 0.6: TP; 0.8 on
#       000002 is the GT: TP -> AP 1. (In TFDS' unconverted frame that GT is [11, 21, 20, 30], 9 x 9:
#       IoU 45 / 96 = 0.47, a FP, and AP = 6 * 0.5 / 11 = 3 / 11.)
#  person: 0.95 lies on the difficult GT of 000001 (ignored), 0.7 is the GT of 000002 (TP); the
#       difficult GT of 000002 is not needed for recall -> AP 1. (Difficult kept as a normal GT:
#       7 / 11; dropped altogether: the 0.95 becomes a FP, AP 0.5.)
#  car: 0.65 on 000002 is a FP, 0.6 is the whole-image GT (TP) -> precision 0.5 -> AP 0.5.
PRED = {
    "000001.jpg": [("dog", 0.9, [10, 20, 16, 30]), ("person", 0.95, [100, 100, 150, 200]),
                   ("car", 0.6, [0, 0, 500, 375])],
    "000002.jpg": [("dog", 0.8, [200, 300, 260, 360]), ("person", 0.7, [50, 50, 100, 150]),
                   ("car", 0.65, [0, 0, 100, 100])],
}
HAND_AP = {"dog": 1.0, "person": 1.0, "car": 0.5}
HAND_MAP = 2.5 / 3
BEFORE_MAP = (3 / 11 + 1.0 + 0.5) / 3   # the old TfdsSource frame (dog AP 3 / 11)


# ---- writing the VOC tree, and the three readers --------------------------------------------------
def write_vocdevkit(root):
  """``root/VOCdevkit/VOC{year}/{Annotations, JPEGImages, ImageSets/Main}`` of ``VOC``."""
  rng = np.random.default_rng(0)
  for year, splits in VOC.items():
    base = os.path.join(root, "VOCdevkit", f"VOC{year}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
      os.makedirs(os.path.join(base, sub), exist_ok=True)
    for split, images in splits.items():
      with open(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{stem}\n" for stem, *_ in images))
      for stem, w, h, objects in images:
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(base, "JPEGImages", f"{stem}.jpg"))
        objs = "".join(
            f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for c, x1, y1, x2, y2, d in objects)
        with open(os.path.join(base, "Annotations", f"{stem}.xml"), "w") as f:
          f.write(f"<annotation><folder>VOC{year}</folder><filename>{stem}.jpg</filename><size>"
                  f"<width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}"
                  "</annotation>")


def read_xml(path):
  """(width, height, [(class, xmin, ymin, xmax, ymax, difficult)]) of one VOC XML file."""
  root = ET.parse(path).getroot()
  size = root.find("size")
  objects = []
  for obj in root.findall("object"):
    b = obj.find("bndbox")
    objects.append((obj.find("name").text, *(float(b.find(k).text) for k in
                                             ("xmin", "ymin", "xmax", "ymax")),
                    obj.find("difficult").text == "1"))
  return int(size.find("width").text), int(size.find("height").text), objects


def xml_to_coco_json(root, year, split, out):
  """The file-based path: VOC XML -> COCO JSON, boxes [xmin - 1, ymin - 1, xmax - xmin + 1,
  ymax - ymin + 1] (the pixels' area), difficult -> iscrowd, category ids 1..20 in VOC order."""
  base = os.path.join(root, "VOCdevkit", f"VOC{year}")
  images, anns = [], []
  for k, (stem, *_) in enumerate(VOC[year][split]):
    w, h, objects = read_xml(os.path.join(base, "Annotations", f"{stem}.xml"))
    images.append({"id": k + 1, "file_name": f"{stem}.jpg", "width": w, "height": h})
    for c, x1, y1, x2, y2, d in objects:
      anns.append({"id": len(anns) + 1, "image_id": k + 1,
                   "category_id": VOC_CLASSES.index(c) + 1, "iscrowd": int(d),
                   "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                   "area": (x2 - x1 + 1) * (y2 - y1 + 1)})
  cats = [{"id": i + 1, "name": n} for i, n in enumerate(VOC_CLASSES)]
  with open(out, "w") as f:
    json.dump({"images": images, "annotations": anns, "categories": cats}, f)
  return CocoJsonSource(str(out), os.path.join(base, "JPEGImages"))


def stand_in_records(root, year, split, *, decode=True):
  """The records TFDS' voc builder writes for ``split`` (its formula, module docstring)."""
  base = os.path.join(root, "VOCdevkit", f"VOC{year}")
  tfds_split = {"validation": "val"}.get(split, split)
  records = []
  for stem, *_ in VOC[year][tfds_split]:
    w, h, objects = read_xml(os.path.join(base, "Annotations", f"{stem}.xml"))
    if year == "2012" and split == "test":
      objects = []
    path = os.path.join(base, "JPEGImages", f"{stem}.jpg")
    image = np.asarray(Image.open(path).convert("RGB")) if decode else open(path, "rb").read()
    records.append({
        "image": image, "image/filename": f"{stem}.jpg".encode(),
        "objects": {
            "bbox": np.array([[y1 / h, x1 / w, y2 / h, x2 / w] for _, x1, y1, x2, y2, _ in objects],
                             np.float32).reshape(-1, 4),
            "label": np.array([VOC_CLASSES.index(o[0]) for o in objects], np.int64),
            "is_difficult": np.array([o[5] for o in objects], bool),
            "is_truncated": np.zeros(len(objects), bool)}})
  return records[::-1]  # TFDS shuffles: the order must not matter


def stand_in_tfds(root, prepared=("voc/2007", "voc/2012")):
  """A ``tensorflow_datasets`` stand-in serving ``stand_in_records`` (``split`` may be a
  ``+``-joined list); datasets not in ``prepared`` are not prepared."""

  class Builder:
    def __init__(self, name, data_dir=None):
      self.name = name
      label = types.SimpleNamespace(names=list(VOC_CLASSES))
      self.info = types.SimpleNamespace(features={"objects": {"label": label}})

    def is_prepared(self):
      return self.name in prepared

    def as_data_source(self, split, decoders=None):
      year = self.name.split("/")[1]
      return [r for s in split.split("+")
              for r in stand_in_records(root, year, s, decode=decoders is None)]

  mod = types.ModuleType("tensorflow_datasets")
  mod.builder = Builder
  mod.decode = types.SimpleNamespace(SkipDecoding=lambda: "skip")
  return mod


def prepare_real_tfds(root, data_dir):
  """Prepares ``voc/2007`` and ``voc/2012`` with TFDS' own builder from the tree at ``root``."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import download_manager
  from tensorflow_datasets.object_detection import voc as tfds_voc

  gfile = types.SimpleNamespace(GFile=open)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tfds_voc, "tf", types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile)))
    mp.setattr(download_manager.DownloadManager, "download_and_extract",
               lambda self, urls: {k: root for k in urls})
    for name in ("voc/2007", "voc/2012"):
      tfds.builder(name, data_dir=data_dir).download_and_prepare(file_format="array_record")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("voc"))
  write_vocdevkit(root)
  return root


@pytest.fixture(scope="module")
def real_tfds_dir(voc_root, tmp_path_factory):
  if not CAN_PREPARE:
    pytest.skip("preparing a TFDS dataset needs tensorflow_datasets and importlib_resources "
                "(pip install jaxdet[tfds] importlib_resources)")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  prepare_real_tfds(voc_root, data_dir)
  return data_dir


@pytest.fixture(params=["tfds", "stand_in"])
def tfds_test_source(request, voc_root, monkeypatch):
  """``TfdsSource('voc/2007', 'test')`` over the real prepared data or over the stand-in."""
  if request.param == "tfds":
    return TfdsSource("voc/2007", "test", data_dir=request.getfixturevalue("real_tfds_dir"))
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", stand_in_tfds(voc_root))
  return TfdsSource("voc/2007", "test")


def results_for(source):
  """``PRED`` as COCO results with ``source``'s image ids and category ids."""
  ids = {source.annotation(i).file_name: source.annotation(i).image_id for i in range(len(source))}
  cat = dict(zip(source.class_names, source.category_ids))
  return [{"image_id": ids[name], "category_id": cat[c], "score": s,
           "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
          for name, dets in PRED.items() for c, s, b in dets]


def by_file(source):
  return {source.annotation(i).file_name: source.annotation(i) for i in range(len(source))}


# ---- the box frame -------------------------------------------------------------------------------
def test_hand_case_one_record():
  """XML (xmin, ymin, xmax, ymax) = (1, 2, 40, 20) on a 40 x 30 image; TFDS stores
  (2/30, 1/40, 20/30, 40/40); the box of those pixels is [0, 1, 40, 20] (39 + 1 px wide)."""
  feats = {"image": np.zeros((30, 40, 3), np.uint8), "image/filename": b"000009.jpg",
           "objects": {"bbox": np.array([[2 / 30, 1 / 40, 20 / 30, 40 / 40]], np.float32),
                       "label": np.array([11]), "is_difficult": np.array([False])}}
  ex = example_from_tfds(feats, "voc/2007", index=0)
  np.testing.assert_allclose(ex.boxes, [[0, 1, 40, 20]], atol=1e-5)
  np.testing.assert_allclose(voc_eval.xyxy_from_voc_pixels([1, 2, 40, 20]), [0, 1, 40, 20])
  with pytest.raises(ValueError, match="4 coordinates"):
    voc_eval.xyxy_from_voc_pixels([1, 2, 3])


def test_stand_in_records_equal_the_real_builder(voc_root, real_tfds_dir):
  import tensorflow_datasets as tfds
  for name, splits in (("voc/2007", ("train", "validation", "test")),
                       ("voc/2012", ("train", "validation", "test"))):
    builder = tfds.builder(name, data_dir=real_tfds_dir)
    assert list(builder.info.features["objects"]["label"].names) == list(VOC_CLASSES)
    for split in splits:
      real = builder.as_data_source(split)
      fake = {r["image/filename"].decode(): r
              for r in stand_in_records(voc_root, name[-4:], split, decode=False)}
      assert len(real) == len(fake), (name, split)
      for rec in real:
        want = fake[rec["image/filename"].decode()]
        got = rec["objects"]
        np.testing.assert_array_equal(np.asarray(got["bbox"], np.float32).reshape(-1, 4),
                                      want["objects"]["bbox"])
        assert np.asarray(got["label"]).tolist() == want["objects"]["label"].tolist()
        assert np.asarray(got["is_difficult"]).tolist() == want["objects"]["is_difficult"].tolist()


def test_same_ground_truth_and_voc07_map_as_the_xml_json_path(voc_root, tmp_path,
                                                              tfds_test_source):
  tf_src = tfds_test_source
  js_src = xml_to_coco_json(voc_root, "2007", "test", tmp_path / "voc07_test.json")
  # Ground truth: same objects, boxes to 1e-4 px, difficult flags, classes, image sizes.
  a, b = by_file(js_src), by_file(tf_src)
  assert sorted(a) == sorted(b) == ["000001.jpg", "000002.jpg"]
  for name in a:
    order_a, order_b = (np.lexsort(np.round(x[name].boxes, 2).T) for x in (a, b))
    np.testing.assert_allclose(b[name].boxes[order_b], a[name].boxes[order_a], atol=1e-4, rtol=0)
    assert b[name].classes[order_b].tolist() == a[name].classes[order_a].tolist()
    assert b[name].is_crowd[order_b].tolist() == a[name].is_crowd[order_a].tolist()
    assert (b[name].height, b[name].width) == (a[name].height, a[name].width)
  assert tf_src.class_names == js_src.class_names == list(VOC_CLASSES)
  assert tf_src[0].num_objects < tf_src.annotation(0).num_objects or \
      tf_src[1].num_objects < tf_src.annotation(1).num_objects   # difficult: not a training target

  # Independent reference: the devkit rule on the XML integers (+1 widths), detections moved
  # into the devkit's 1-based inclusive frame.
  gt, dets = {}, {}
  for name in PRED:
    _, _, objects = read_xml(os.path.join(voc_root, "VOCdevkit", "VOC2007", "Annotations",
                                          name.replace(".jpg", ".xml")))
    gt[name] = ([o[1:5] for o in objects], [VOC_CLASSES.index(o[0]) for o in objects],
                [o[5] for o in objects])
    dets[name] = ([np.asarray(bx, float) + [1, 1, 0, 0] for _, _, bx in PRED[name]],
                  [s for _, s, _ in PRED[name]], [VOC_CLASSES.index(c) for c, _, _ in PRED[name]])
  devkit = voc_eval.evaluate_voc(gt, dets, 20, use_07_metric=True, pixel_plus_one=True)
  assert devkit["mAP"] == pytest.approx(HAND_MAP, abs=1e-12)

  metrics = {}
  for tag, src in (("json", js_src), ("tfds", tf_src)):
    metrics[tag] = detection_eval.evaluate_detections(
        src, results_for(src), workdir=str(tmp_path / tag), step=0, voc_metrics=True)
    per_class = voc_eval.evaluate_voc_from_coco(source_coco(src), results_for(src))["per_class_ap"]
    for c, ap in HAND_AP.items():
      assert per_class[VOC_CLASSES.index(c)] == pytest.approx(ap, abs=1e-12), (tag, c)
  assert metrics["tfds"]["mAP50_voc07"] == pytest.approx(HAND_MAP, abs=1e-12)
  for key, value in metrics["json"].items():   # COCO AP and the VOC area mAP agree too
    assert metrics["tfds"][key] == pytest.approx(value, abs=1e-9, nan_ok=True), key


def test_the_fixture_detects_a_one_pixel_frame_error(tfds_test_source, tmp_path, monkeypatch):
  """Without the frame conversion (the old TfdsSource: [xmin, ymin, xmax, ymax] as stored) the
  same detections score ``BEFORE_MAP``: the equality above is not vacuous."""
  monkeypatch.setattr(tfds_source, "xyxy_from_voc_pixels", lambda b: b)
  src = TfdsSource(tfds_test_source.name, tfds_test_source.split,
                   data_dir=tfds_test_source.data_dir)
  m = detection_eval.evaluate_detections(src, results_for(src), workdir=str(tmp_path), step=0,
                                         voc_metrics=True)
  assert m["mAP50_voc07"] == pytest.approx(BEFORE_MAP, abs=1e-12)


# ---- splits of several datasets, and the configs ------------------------------------------------
def test_tfds_split_parts():
  parts = factory.tfds_split_parts
  assert parts("train+validation", "voc/2007") == [("voc/2007", "train+validation")]
  assert parts("train[:10%]", "coco/2017") == [("coco/2017", "train[:10%]")]
  assert parts("voc/2007/train + voc/2012/train+voc/2007/validation", "x") == [
      ("voc/2007", "train+validation"), ("voc/2012", "train")]
  assert parts("voc/2007:5.0.0/test", "x") == [("voc/2007:5.0.0", "test")]
  with pytest.raises(ValueError, match=r"config.data.tfds_train_split=.*mixes bare splits \['validation'\]"):
    parts("voc/2012/train+validation", "voc/2007", key="config.data.tfds_train_split")
  with pytest.raises(ValueError, match="empty split term"):
    parts("train++test", "voc/2007")
  with pytest.raises(ValueError, match="not NAME/SPLIT"):
    parts("voc/2007/", "voc/2007")


def _config(name, arg):
  return sibling_config(os.path.join(CONFIGS, "x.py"), name).get_config(arg)


def test_voc_configs_tfds_variants_name_the_paper_splits(voc_root, monkeypatch):
  c = _config("retinanet_voc", "tfds")
  assert c.data.source == "tfds" and c.eval.voc_metrics
  assert factory.tfds_split_parts(c.data.tfds_train_split, c.data.tfds_name) == [
      ("voc/2007", "train+validation"), ("voc/2012", "train+validation")]
  assert factory.tfds_split_parts(c.data.tfds_val_split, c.data.tfds_name) == [("voc/2007", "test")]
  file_based = _config("retinanet_voc", "")
  assert "voc0712_trainval" in file_based.data.train_json and "voc07_test" in file_based.data.val_json
  aploss = _config("aploss_voc", "tfds,focal")
  assert (aploss.data.tfds_name, aploss.data.tfds_train_split, aploss.data.tfds_val_split) == (
      c.data.tfds_name, c.data.tfds_train_split, c.data.tfds_val_split)
  assert aploss.loss.cls == "focal" and aploss.eval.voc_metrics
  alwa = _config("alwa_voc", "tfds,ciou")     # ALWA: VOC12 trainval -> VOC07 test
  assert factory.tfds_split_parts(alwa.data.tfds_train_split, alwa.data.tfds_name) == [
      ("voc/2012", "train+validation")]
  assert (alwa.data.tfds_name, alwa.data.tfds_val_split) == ("voc/2007", "test")
  with pytest.raises(ValueError, match="demo.*tfds"):
    _config("alwa_voc", "tfds,demo")
  # Without voc/2012 prepared, the train split fails naming it and the command that prepares it.
  monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                      stand_in_tfds(voc_root, prepared=("voc/2007",)))
  c.data.tfds_data_dir = "/data/tfds"
  with pytest.raises(FileNotFoundError, match="voc/2012.*tfds build voc/2012 --data_dir=/data/tfds"):
    factory.make_source(c.data, "train")
  assert factory.make_source(c.data, "val").name == "voc/2007"


def test_unknown_split_error_names_the_config_key(voc_root, real_tfds_dir):
  c = _config("retinanet_voc", "tfds")
  c.data.tfds_data_dir, c.data.tfds_val_split = real_tfds_dir, "tset"
  with pytest.raises(ValueError, match=r"config.data.tfds_val_split='tset'.*voc/2007.*'tset'"):
    factory.make_source(c.data, "val")


def test_voc0712_trainval_is_one_concat_source(voc_root, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", stand_in_tfds(voc_root))
  c = _config("retinanet_voc", "tfds")
  train = factory.make_source(c.data, "train")
  assert isinstance(train, factory.Concat) and len(train) == 5
  names = {train.annotation(i).file_name for i in range(len(train))}
  assert names == {"000003.jpg", "000004.jpg", "2008_000002.jpg", "2008_000003.jpg",
                   "2008_000004.jpg"}
  assert train.image_ids == [0, 1, 2, 3, 4]            # the parts' record indices collide
  assert [train[i].image_id for i in range(5)] == [0, 1, 2, 3, 4]
  assert train.class_names == list(VOC_CLASSES) and train.category_ids == list(range(1, 21))
  s = train.annotation_summary()
  assert s["objects"].sum() == 6 and s["crowd"].sum() == 1   # the difficult dog of 000003
  assert train.stats["images"] == 5 and train.stats["crowd"] == 1
  with pytest.raises(IndexError):
    train[5]
  other = types.SimpleNamespace(class_names=["face"], category_ids=[1])
  with pytest.raises(ValueError, match="voc/2012/train.*class_names differ"):
    factory.Concat([train.sources[0], other], ["voc/2007/train", "voc/2012/train"])


def test_two_train_steps_on_tfds_voc0712_and_its_voc07_evaluation(voc_root, tmp_path, monkeypatch,
                                                                   request):
  """configs/retinanet_voc.py:tfds with a tiny network, over the real prepared TFDS data where
  it can be prepared (``CAN_PREPARE``), else over the stand-in: the train source is VOC07+12
  trainval, two train steps run, and the experiment's val source scored the way
  ``DetectionExperiment.evaluate`` scores it gives the hand-computed VOC07 mAP of ``PRED``. (The
  network's own detections after two steps carry no information, and compiling its predict
  function would double the test's time.)"""
  import jax
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.loop import init_or_restore, make_step

  c = _config("retinanet_voc", "tfds")
  if CAN_PREPARE:
    c.data.tfds_data_dir = request.getfixturevalue("real_tfds_dir")
  else:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", stand_in_tfds(voc_root))
  c.data.image_size, c.data.short_side, c.data.max_side = (64, 64), 64, 64
  c.data.num_workers, c.data.max_boxes = 1, 0
  c.model.depth, c.model.width, c.model.norm, c.model.frozen_stages = 18, 8, "frozen_bn", -1
  c.model.min_level, c.model.max_level, c.model.head_convs = 3, 5, 1
  c.model.fpn_filters = c.model.head_filters = 16
  c.model.anchor_scales, c.model.aspect_ratios = (1.0,), (1.0,)
  c.model.pretrained, c.model.dtype = "", "float32"
  c.optim.warmup_steps, c.optim.decay_steps = 0, ()
  c.train.batch_size, c.train.num_steps = 2, 2

  mesh = shard_lib.make_mesh()
  exp = registry.build(c, mesh)
  assert isinstance(exp.train_source, factory.Concat) and len(exp.train_source) == 5
  assert exp.categories.names == list(VOC_CLASSES)
  state, shardings = init_or_restore(exp, None)
  step = jax.jit(make_step(exp), out_shardings=(shardings, shard_lib.replicated(mesh)))
  batches = exp.train_batches(0)
  seen = set()
  for _ in range(2):
    batch = next(batches)
    seen |= {int(i) for i, ok in zip(batch["image_id"], batch["example_valid"]) if ok}
    state, metrics = step(state, shard_lib.to_global(batch, mesh))
    assert np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 2 and len(seen) == 4 and seen <= set(range(5))
  val = exp.val_source
  assert (val.name, val.split, len(val)) == ("voc/2007", "test", 2)
  m = detection_eval.evaluate_detections(val, results_for(val), workdir=str(tmp_path), step=2,
                                         voc_metrics=bool(c.eval.voc_metrics))
  assert m["mAP50_voc07"] == pytest.approx(HAND_MAP, abs=1e-12)
