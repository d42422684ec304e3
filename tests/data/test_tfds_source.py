"""Tests of jaxdet.data.tfds_source: the pure TFDS feature mapping and the error paths.

These tests do not need tensorflow_datasets: the missing-package error is tested with the import
blocked, the not-prepared error and the source with a stand-in module. VOC read through the real
TFDS builder: tests/data/test_voc_tfds.py.
"""
import io
import sys
import types

import numpy as np
import pytest
from PIL import Image

from jaxdet.data import tfds_source
from jaxdet.data.tfds_source import COCO_CATEGORY_IDS, TfdsSource, example_from_tfds
from jaxdet.evaluation.coco import coco_from_source


def _coco_features():
    img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    return {
        "image": img, "image/id": np.int64(139), "image/filename": b"000000000139.jpg",
        "objects": {"bbox": np.array([[0.25, 0.1, 0.75, 0.5], [0.0, 0.0, 1.0, 1.0]], np.float32),
                    "label": np.array([0, 79]), "is_crowd": np.array([False, True]),
                    "area": np.array([10, 20]), "id": np.array([1, 2])},
    }


def test_coco_mapping():
    ex = example_from_tfds(_coco_features(), "coco/2017")
    assert ex.image_id == 139 and ex.file_name == "000000000139.jpg"
    assert (ex.height, ex.width) == (40, 60)
    # [ymin, xmin, ymax, xmax] normalised -> xyxy pixels (x * W, y * H)
    np.testing.assert_allclose(ex.boxes, [[6, 10, 30, 30], [0, 0, 60, 40]], rtol=1e-6)
    assert ex.classes.tolist() == [0, 79] and ex.is_crowd.tolist() == [False, True]
    assert ex.without_crowd().num_objects == 1
    assert COCO_CATEGORY_IDS[79] == 90 and COCO_CATEGORY_IDS[0] == 1


def test_voc_mapping_difficult_grayscale_and_index_id():
    feats = {"image": np.full((10, 20, 1), 7, np.uint8), "image/filename": "2008_000002.jpg",
             "objects": {"bbox": np.array([[0.1, 0.2, 0.5, 0.9]]), "label": np.array([14]),
                         "is_difficult": np.array([True]), "is_truncated": np.array([False])}}
    ex = example_from_tfds(feats, "voc/2012", index=42)
    assert ex.image.shape == (10, 20, 3) and ex.image_id == 42
    # TFDS voc stores the XML's 1-based inclusive pixels / size: (xmin, ymin, xmax, ymax) =
    # (4, 1, 18, 5) are pixels 4..18 x 1..5, the continuous box [4 - 1, 1 - 1, 18, 5]
    np.testing.assert_allclose(ex.boxes, [[3, 0, 18, 5]], rtol=1e-6, atol=1e-6)
    assert ex.classes.tolist() == [14] and ex.is_crowd.tolist() == [True]
    # without an index the id is a stable hash of the file name
    a = example_from_tfds(feats, "voc/2012").image_id
    assert a == example_from_tfds(feats, "voc/2012").image_id and a >= 0


def test_wider_face_mapping_drops_invalid_and_reads_header_size():
    img = np.zeros((30, 50, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    feats = {"image": img, "image/filename": b"0--Parade/0_Parade_1.jpg",
             "faces": {"bbox": np.array([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.7]], np.float32),
                       "invalid": np.array([False, True]), "blur": np.array([0, 1])}}
    ex = example_from_tfds(feats, "wider_face", index=3)
    assert ex.classes.tolist() == [0] and ex.num_objects == 1
    np.testing.assert_allclose(ex.boxes, [[5, 3, 10, 6]], rtol=1e-6)
    ann = example_from_tfds(dict(feats, image=buf.getvalue()), "wider_face", index=3, with_image=False)
    assert ann.image is None and (ann.height, ann.width) == (30, 50)
    np.testing.assert_allclose(ann.boxes, ex.boxes)


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="imagenet2012"):
        example_from_tfds(_coco_features(), "imagenet2012")


def test_missing_package_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install jaxdet\[tfds\]"):
        TfdsSource("coco/2017", "validation")


class _FakeBuilder:
    def __init__(self, prepared, records):
        self._prepared, self._records = prepared, records
        label = types.SimpleNamespace(names=[f"c{i}" for i in range(80)])
        self.info = types.SimpleNamespace(features={"objects": {"label": label}})

    def is_prepared(self):
        return self._prepared

    def as_data_source(self, split, decoders=None):
        return self._records


def _fake_tfds(prepared, records=()):
    mod = types.ModuleType("tensorflow_datasets")
    mod.builder = lambda name, data_dir=None: _FakeBuilder(prepared, list(records))
    mod.decode = types.SimpleNamespace(SkipDecoding=lambda: None)
    return mod


def test_not_prepared_error_names_dataset_and_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(prepared=False))
    with pytest.raises(FileNotFoundError) as e:
        TfdsSource("coco/2017", "validation", data_dir="/data/tfds")
    msg = str(e.value)
    assert "coco/2017" in msg and "tfds build coco/2017 --data_dir=/data/tfds" in msg


def test_source_over_a_stand_in_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(True, [_coco_features()]))
    src = TfdsSource("coco/2017", "validation")
    assert len(src) == 1 and src.num_classes == 80 and src.category_ids[79] == 90
    assert src[0].num_objects == 1  # crowd dropped
    assert src.image_ids == [139]
    gt = coco_from_source(src)
    anns = gt.loadAnns(gt.getAnnIds())
    assert [a["category_id"] for a in anns] == [1, 90] and [a["iscrowd"] for a in anns] == [0, 1]
    np.testing.assert_allclose(anns[0]["bbox"], [6, 10, 24, 20], rtol=1e-6)
    assert tfds_source._family("voc/2007:5.0.0") == "voc"
