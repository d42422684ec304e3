"""Tests of jaxdet.data.factory.make_source for the WIDER FACE release and the benchmark's faces."""
import functools
import json

import numpy as np
import pytest
from PIL import Image

from jaxdet.data import benchmark, factory
from jaxdet.experiments.defaults import detector_defaults

# The official layout: wider_face_split/wider_face_{split}_bbx_gt.txt + WIDER_{split}/images/.
# val: image a (60 x 40) with one valid face and one flagged invalid, image b (30 x 30) without
# faces; train: image c (50 x 50) with two faces.
ANNOTATIONS = {
    "val": ("0--Parade/0_Parade_a.png\n2\n"
            "5 6 10 12 0 0 0 0 0 0 \n"
            "20 10 8 8 0 0 0 1 0 0 \n"
            "1--Handshaking/1_Handshaking_b.png\n0\n0 0 0 0 0 0 0 0 0 0 \n"),
    "train": "2--Demonstration/2_Demonstration_c.png\n2\n1 2 20 22 0 0 0 0 0 0 \n"
             "30 30 15 15 1 0 0 0 0 0 \n",
}
SIZES = {"0--Parade/0_Parade_a.png": (60, 40), "1--Handshaking/1_Handshaking_b.png": (30, 30),
         "2--Demonstration/2_Demonstration_c.png": (50, 50)}
TINY_BENCHMARK = dict(num_train=6, num_val=4, image_size=64, seed=3, verbose=False)


def write_release(root):
  rng = np.random.default_rng(0)
  (root / "wider_face_split").mkdir(parents=True)
  for split, text in ANNOTATIONS.items():
    (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text(text)
    for rel, (w, h) in SIZES.items():
      if rel in text:
        path = root / f"WIDER_{split}" / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
  return root


def data_config(**values):
  d = detector_defaults().data
  for key, value in values.items():
    d[key] = value
  return d


def test_wider_face_release_through_make_source(tmp_path):
  root = write_release(tmp_path / "wider_face")
  val = factory.make_source(data_config(source="wider_face", wider_face_root=str(root)), "val")
  assert (len(val), val.class_names, val.category_ids) == (2, ["face"], [1])
  ex = val[0]
  assert ex.image.shape == (40, 60, 3)
  np.testing.assert_array_equal(ex.boxes, [[5, 6, 15, 18]])  # the invalid face is dropped
  assert val[1].boxes.shape == (0, 4)
  assert [val.official_key(i) for i in range(2)] == [("0--Parade", "0_Parade_a"),
                                                      ("1--Handshaking", "1_Handshaking_b")]
  assert val.stats["boxes_dropped_invalid"] == 1
  train = factory.make_source(data_config(source="wider_face", wider_face_root=str(root)),
                              "train")
  np.testing.assert_array_equal(train.annotation(0).boxes, [[1, 2, 21, 24], [30, 30, 45, 45]])
  anns = train.coco.dataset["annotations"]
  assert [a["bbox"] for a in anns] == [[1, 2, 20, 22], [30, 30, 15, 15]]


def test_wider_face_skip_bad_images_is_passed(tmp_path):
  root = write_release(tmp_path / "wider_face")
  (root / "WIDER_val" / "images" / "1--Handshaking" / "1_Handshaking_b.png").write_bytes(b"junk")
  cfg = data_config(source="wider_face", wider_face_root=str(root))
  with pytest.raises(OSError, match="skip_bad_images"):
    factory.make_source(cfg, "val")
  cfg.skip_bad_images = True
  val = factory.make_source(cfg, "val")
  assert len(val) == 1 and val.skipped_files == ["1--Handshaking/1_Handshaking_b.png"]


@pytest.mark.parametrize("case", ["empty", "missing_root", "missing_files"])
def test_missing_wider_face_release_is_a_clear_error(tmp_path, case):
  root = {"empty": "", "missing_root": str(tmp_path / "nowhere"),
          "missing_files": str(tmp_path)}[case]
  error = ValueError if case == "empty" else FileNotFoundError
  with pytest.raises(error) as info:
    factory.make_source(data_config(source="wider_face", wider_face_root=root), "val")
  msg = str(info.value)
  assert "config.data.wider_face_root" in msg
  assert "wider_face_split/wider_face_val_bbx_gt.txt" in msg and "WIDER_val/images" in msg
  assert "WIDER_val.zip" in msg and "wider_face_split.zip" in msg
  assert "tfds build wider_face" in msg and "--config.data.source=tfds" in msg
  assert "--config.data.tfds_name=wider_face" in msg
  if case == "missing_files":
    assert "lacks wider_face_split/wider_face_val_bbx_gt.txt and WIDER_val/images/" in msg


def test_release_with_only_val_names_the_missing_train_files(tmp_path):
  root = write_release(tmp_path / "wider_face")
  (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").unlink()
  cfg = data_config(source="wider_face", wider_face_root=str(root))
  assert len(factory.make_source(cfg, "val")) == 2
  with pytest.raises(FileNotFoundError,
                     match="lacks wider_face_split/wider_face_train_bbx_gt.txt:"):
    factory.make_source(cfg, "train")


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
  root = tmp_path_factory.mktemp("bm") / "b"
  return benchmark.ensure_benchmark(root, **TINY_BENCHMARK)


def test_benchmark_faces_subset(tiny_benchmark, monkeypatch):
  # make_source builds the default-size benchmark; point it at the tiny build instead.
  monkeypatch.setattr(benchmark, "ensure_benchmark",
                      functools.partial(benchmark.ensure_benchmark, **TINY_BENCHMARK))
  root = tiny_benchmark["root"]
  for split in ("train", "val"):
    faces = factory.make_source(
        data_config(source="benchmark", benchmark_root=root, benchmark_subset="faces"), split)
    full = factory.make_source(data_config(source="benchmark", benchmark_root=root), split)
    assert (faces.class_names, faces.category_ids, faces.num_classes) == (["face"], [1], 1)
    assert [c["name"] for c in faces.coco.dataset["categories"]] == ["face"]
    assert full.num_classes == 5 and len(faces) == len(full)
    with open(tiny_benchmark[f"{split}_json"]) as f:
      data = json.load(f)
    want = {}  # the face boxes of the five-class file, per image
    for a in data["annotations"]:
      if a["category_id"] == 1:
        want.setdefault(a["image_id"], []).append(a["bbox"])
    got = {}
    for i in range(len(faces)):
      ex = faces.annotation(i)
      assert set(ex.classes.tolist()) <= {0}
      for x1, y1, x2, y2 in ex.boxes.tolist():
        got.setdefault(ex.image_id, []).append([x1, y1, x2 - x1, y2 - y1])
    assert got == want and sum(map(len, want.values())) > 0


def test_unknown_benchmark_subset_and_source(tmp_path):
  with pytest.raises(ValueError, match=r"config.data.benchmark_subset='cats'.*'all', 'faces'"):
    factory.make_source(data_config(source="benchmark", benchmark_subset="cats",
                                    benchmark_root=str(tmp_path)), "val")
  with pytest.raises(ValueError, match="wider_face"):
    factory.make_source(data_config(source="widerface"), "val")
