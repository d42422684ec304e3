"""Tests of jaxdet.data.report: per-split counts, the console lines and the max_boxes the data needs."""
import json
import sys

import numpy as np
import pytest
from test_coco_json import write_coco_fixture
from test_tfds_source import _coco_features, _fake_tfds

from jaxdet.data.coco_json import CocoJsonSource
from jaxdet.data.records import DetectionExample
from jaxdet.data.report import COUNTERS, format_report, required_max_boxes, source_report
from jaxdet.data.tfds_source import TfdsSource
from jaxdet.evaluation.coco import coco_from_source

EXTRA = [  # on image 11 (30 x 30, no objects in the base fixture)
    {"id": 10, "image_id": 11, "category_id": 12, "bbox": [5, 5, -3, 10]},  # degenerate (w < 0)
    {"id": 11, "image_id": 11, "category_id": 12, "bbox": [5, 5, 10, 0]},  # degenerate (h = 0)
    {"id": 12, "image_id": 11, "category_id": 12, "bbox": [25, -5, 10, 15]},  # clipped
    {"id": 13, "image_id": 11, "category_id": 12, "bbox": [40, 40, 5, 5]},  # outside
    {"id": 14, "image_id": 11, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 1},  # crowd
    {"id": 15, "image_id": 11, "category_id": 3, "bbox": [2, 2, 6, 6]},
    {"id": 16, "image_id": 11, "category_id": 40, "bbox": [10, 12, 6, 6]},
]


def test_source_report_of_a_coco_json(tmp_path):
  path, img_dir, _ = write_coco_fixture(tmp_path, EXTRA)
  src = CocoJsonSource(path, img_dir)
  r = source_report(src)
  assert r == {
      "source": "CocoJsonSource", "min_box_size": 1.0,
      "images": 3, "objects": 4 + 3, "crowd": 2, "images_without_objects": 0,
      "max_objects_per_image": 3, "max_objects_image_id": 11, "max_objects_file_name": "c.png",
      "boxes_dropped_degenerate": 2, "boxes_dropped_outside": 1, "boxes_dropped_invalid": 0,
      "boxes_clipped": 1, "bad_images_skipped": 0, "bad_images_at_read": 0,
  }
  json.dumps(r)  # serialisable as is (data_report.json)
  # the report's objects are the non-crowd objects of the evaluated ground truth
  anns = src.coco.loadAnns(src.coco.getAnnIds())
  assert sum(not a["iscrowd"] for a in anns) == r["objects"] and sum(a["iscrowd"] for a in anns) == r["crowd"]
  # the generic path (annotation(i) per image) gives the same numbers as the fast summary
  generic = source_report(type("Plain", (), {
      "__len__": lambda s: len(src), "annotation": lambda s, i: src.annotation(i), "stats": src.stats})())
  assert {k: v for k, v in generic.items() if k not in ("source", "min_box_size")} == \
      {k: v for k, v in r.items() if k not in ("source", "min_box_size")}


def test_skipped_images_leave_the_counts(tmp_path, capsys):
  path, img_dir, _ = write_coco_fixture(tmp_path, EXTRA)
  (img_dir / "c.png").write_bytes(b"garbage")
  src = CocoJsonSource(path, img_dir, skip_bad_images=True)
  assert "skipped 1" in capsys.readouterr().out and src.skipped_files == ["c.png"]
  r = source_report(src)
  assert (r["images"], r["objects"], r["crowd"], r["bad_images_skipped"]) == (2, 4, 1, 1)
  assert (r["boxes_dropped_degenerate"], r["boxes_dropped_outside"], r["boxes_clipped"]) == (0, 0, 0)
  assert (r["max_objects_per_image"], r["max_objects_image_id"]) == (2, 7)


class HandSource:
  """Hand-built source: objects per image as given (crowd flagged), no annotation()."""

  def __init__(self, counts, crowd=None, drop_crowd=True):
    crowd = crowd or [0] * len(counts)
    self.examples = [DetectionExample(
        image=np.zeros((4, 4, 3), np.uint8), boxes=np.tile([0, 0, 2, 2], (n + c, 1)), classes=np.zeros(n + c),
        image_id=100 + i, file_name=f"{i}.png", is_crowd=[False] * n + [True] * c)
        for i, (n, c) in enumerate(zip(counts, crowd))]
    self.drop_crowd = drop_crowd
    self.stats = {"boxes_dropped_degenerate": 4, "weird_things_dropped": 2}

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return self.examples[i]


def test_required_max_boxes_and_generic_report():
  a, b = HandSource([2, 5, 1]), HandSource([3, 0, 4], crowd=[0, 0, 3])
  assert required_max_boxes(a) == 5 and required_max_boxes(b) == 4
  assert required_max_boxes(a, b) == 5
  assert required_max_boxes(HandSource([3, 0, 4], crowd=[0, 0, 3], drop_crowd=False)) == 7  # crowd trained on
  assert required_max_boxes(HandSource([0, 0])) == 1
  r = source_report(b)
  assert (r["images"], r["objects"], r["crowd"], r["images_without_objects"]) == (3, 7, 3, 1)
  assert (r["max_objects_per_image"], r["max_objects_image_id"], r["max_objects_file_name"]) == (4, 102, "2.png")
  assert r["boxes_dropped_degenerate"] == 4 and r["weird_things_dropped"] == 2 and r["min_box_size"] is None
  assert all(r[k] == 0 for k in COUNTERS if k != "boxes_dropped_degenerate")
  assert "weird_things_dropped=2" in format_report({"x": r})


def test_format_report_lines():
  base = {"source": "CocoJsonSource", "min_box_size": 1.0, "images": 1000, "objects": 3441, "crowd": 0,
          "images_without_objects": 0, "max_objects_per_image": 9, "max_objects_image_id": 17,
          "max_objects_file_name": "17.jpg", **dict.fromkeys(COUNTERS, 0)}
  train = dict(base, boxes_dropped_degenerate=2, boxes_clipped=5)
  val = dict(base, images=1, objects=1, images_without_objects=0, crowd=1, max_objects_per_image=1,
             max_objects_image_id=3, max_objects_file_name="", bad_images_skipped=1)
  text = format_report({"train": train, "val": val})
  assert text.splitlines() == [
      "train: 1000 images, 3441 objects (max 9 per image: id 17 '17.jpg'); dropped: 2 degenerate "
      "(w or h < 1 px), 0 outside; clipped 5; 0 crowd; 0 bad images skipped",
      "val: 1 image, 1 object (max 1 per image: id 3); dropped: 0 degenerate (w or h < 1 px), 0 outside; "
      "clipped 0; 1 crowd; 1 bad images skipped",
  ]
  empty = dict(base, images=0, objects=0, max_objects_per_image=0, max_objects_image_id=None,
               max_objects_file_name=None, min_box_size=None, boxes_dropped_invalid=3)
  assert format_report({"val": empty}) == ("val: 0 images, 0 objects; dropped: 0 degenerate, 0 outside, "
                                           "3 invalid; clipped 0; 0 crowd; 0 bad images skipped")


def test_tfds_source_cleans_like_coco_json_and_reports(monkeypatch):
  feats = _coco_features()  # 40 x 60 image: one box, one crowd box
  bad = dict(feats, **{"image/id": np.int64(140)})
  # a zero-height box, a box reaching past the right edge (clipped), a box 0.5 px wide
  bad["objects"] = {"bbox": np.array([[0.5, 0.1, 0.5, 0.4], [0.1, 0.5, 0.6, 1.2], [0.1, 0.2, 0.6, 0.2083]],
                                     np.float32),
                    "label": np.array([1, 2, 3]), "is_crowd": np.array([False, False, False])}
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(True, [feats, bad]))
  src = TfdsSource("coco/2017", "validation")
  assert src[1].num_objects == 1  # the training example keeps only the clipped box
  np.testing.assert_allclose(src[1].boxes, [[30, 4, 60, 24]], rtol=1e-5)
  r = source_report(src)
  assert (r["images"], r["objects"], r["crowd"], r["max_objects_per_image"]) == (2, 2, 1, 1)
  assert (r["boxes_dropped_degenerate"], r["boxes_dropped_outside"], r["boxes_clipped"]) == (2, 0, 1)
  assert src.stats["annotations"] == 5
  assert required_max_boxes(src) == 1
  gt = coco_from_source(src)  # evaluated ground truth = the same cleaned objects
  anns = gt.loadAnns(gt.getAnnIds(imgIds=[140]))
  assert len(anns) == 1
  np.testing.assert_allclose(anns[0]["bbox"], [30, 4, 30, 20], rtol=1e-5)


def test_subset_report_reads_annotations_without_decoding(tmp_path):
  from jaxdet.data.factory import Subset

  path, img_dir, _ = write_coco_fixture(tmp_path, EXTRA)
  sub = Subset(CocoJsonSource(path, img_dir), 2)
  for f in img_dir.iterdir():
    f.unlink()  # any decoding would now fail
  r = source_report(sub)
  assert (r["images"], r["objects"], r["crowd"], r["max_objects_image_id"]) == (2, 4, 1, 7)
  with pytest.raises(IndexError):
    sub.annotation(2)
