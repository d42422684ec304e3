"""Tests of jaxdet.data.face_tfds: the pure TFDS feature mapping (hand-made feature dicts), the
source over a stand-in ``tensorflow_datasets`` module, and, when tensorflow_datasets is
installed, the not-prepared error of the real package."""
import importlib.util
import sys
import types

import numpy as np
import pytest

from jaxdet.data.face_records import FaceSource
from jaxdet.data.face_sources import crop_window
from jaxdet.data.face_tfds import TfdsFaceSource, face_example_from_tfds


def _landmarks(seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0.3, 0.7, (68, 2)).astype(np.float32)


def test_the300w_lp_mapping_450_one_based():
  norm = _landmarks()
  norm[0] = [1 / 450, 1 / 450]  # Matlab pixel (1, 1): the centre of the first pixel
  feats = {"image": np.zeros((450, 450, 3), np.uint8), "landmarks_2d": norm,
           "landmarks_3d": norm * 0, "roi": np.zeros(4, np.float32)}
  ex = face_example_from_tfds("the300w_lp", feats, key="k")
  np.testing.assert_allclose(ex.landmarks, norm.astype(np.float64) * 450 - 0.5, rtol=1e-5)
  np.testing.assert_allclose(ex.landmarks[0], [0.5, 0.5], atol=1e-4)
  assert ex.visible.all() and ex.key == "k" and ex.image.shape == (450, 450, 3)
  np.testing.assert_allclose(ex.box, [*ex.landmarks.min(0), *ex.landmarks.max(0)])
  other = face_example_from_tfds("the300w_lp:1.0.0", {"image": feats["image"],
                                                      "landmarks_origin": norm},
                                 landmarks_feature="landmarks_origin")
  np.testing.assert_allclose(other.landmarks, ex.landmarks)


def test_aflw2k3d_mapping_and_scaling_to_a_smaller_image():
  norm = _landmarks(1)
  feats = {"image": np.zeros((90, 45, 1), np.uint8), "landmarks_68_3d_xy_normalized": norm,
           "landmarks_68_3d_z": np.zeros((68, 1), np.float32)}
  ex = face_example_from_tfds("aflw2k3d", feats)
  # 450-px continuous coordinates, scaled to the 45 x 90 image
  expected = (norm.astype(np.float64) * 450 - 0.5) * [45 / 450, 90 / 450]
  np.testing.assert_allclose(ex.landmarks, expected, rtol=1e-5)
  assert ex.image.shape == (90, 45, 3)


def test_mapping_errors_name_the_record():
  with pytest.raises(ValueError, match="celeb_a"):
    face_example_from_tfds("celeb_a", {})
  feats = {"image": np.zeros((8, 8, 3), np.uint8), "landmarks_2d": np.zeros((5, 2))}
  with pytest.raises(ValueError, match="the300w_lp/train/7.*68 finite"):
    face_example_from_tfds("the300w_lp", feats, key="the300w_lp/train/7")
  with pytest.raises(ValueError, match="no feature 'landmarks_2d'"):
    face_example_from_tfds("the300w_lp", {"image": feats["image"]})


class _FakeBuilder:
  def __init__(self, prepared, records):
    self._prepared, self._records = prepared, records

  def is_prepared(self):
    return self._prepared

  def as_data_source(self, split):
    return self._records


def _fake_tfds(prepared, records=()):
  mod = types.ModuleType("tensorflow_datasets")
  mod.builder = lambda name, data_dir=None: _FakeBuilder(prepared, list(records))
  return mod


def test_source_over_a_stand_in_module(monkeypatch):
  norm = _landmarks(2)
  rec = {"image": np.zeros((450, 450, 3), np.uint8), "landmarks_68_3d_xy_normalized": norm}
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(True, [rec, rec]))
  src = TfdsFaceSource("aflw2k3d", "train", size=64)
  assert isinstance(src, FaceSource) and src.scheme == "68" and len(src) == 2
  ex = src[-1]
  assert ex.key == "aflw2k3d/train/1" and ex.image.shape == (64, 64, 3)
  pixels = norm.astype(np.float64) * 450 - 0.5
  x0, y0, side = crop_window(np.concatenate([pixels.min(0), pixels.max(0)]), 0.25)
  np.testing.assert_allclose(ex.landmarks, (pixels - [x0, y0]) * 64 / side, rtol=1e-4, atol=1e-4)
  with pytest.raises(IndexError):
    src[2]


def test_not_prepared_and_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(False))
  with pytest.raises(FileNotFoundError, match="tfds build the300w_lp --data_dir=/d"):
    TfdsFaceSource("the300w_lp", data_dir="/d")
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
  with pytest.raises(ImportError, match=r"pip install jaxdet\[tfds\]"):
    TfdsFaceSource("aflw2k3d")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                    reason="tensorflow_datasets is not installed")
def test_real_tfds_not_prepared_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="not prepared"):
    TfdsFaceSource("aflw2k3d", data_dir=str(tmp_path))
