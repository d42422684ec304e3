"""Tests of jaxdet.data.wider_face.WiderFaceSource on a tiny official-format annotation file."""
import numpy as np
import pytest
from PIL import Image

from jaxdet.data.records import DetectionSource
from jaxdet.data.report import format_report, required_max_boxes, source_report
from jaxdet.data.wider_face import WiderFaceSource, parse_annotation_file
from jaxdet.evaluation import wider_face as wf

# Three images: a (80 x 60), b (32 x 32, no faces), c (40 x 50).
ANNOTATIONS = """\
0--Parade/0_Parade_a.jpg
3
10 5 20 30 0 0 0 0 0 0 
50 40 0 10 2 0 0 0 0 0 
70 50 20 20 1 0 1 1 2 0 
0--Parade/0_Parade_b.jpg
0
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_c.jpg
2
-5 10 20 20 1 1 0 0 1 0 
100 100 10 10 0 0 0 0 0 0 
"""
# a: face 1 kept as [10, 5, 30, 35]; face 2 has w = 0 (degenerate); face 3 is invalid (when kept,
#    [70, 50, 90, 70] is clipped to the 80 x 60 image: [70, 50, 80, 60]).
# b: N = 0 followed by the all-zero placeholder line.
# c: face 1 reaches left of the image: clipped to [0, 10, 15, 30]; face 2 lies outside 40 x 50.
SIZES = {"0--Parade/0_Parade_a.jpg": (80, 60), "0--Parade/0_Parade_b.jpg": (32, 32),
         "1--Handshaking/1_Handshaking_c.jpg": (40, 50)}


def write_fixture(root, text=ANNOTATIONS, sizes=SIZES):
  images = root / "WIDER_val" / "images"
  rng = np.random.default_rng(0)
  for rel, (w, h) in sizes.items():
    (images / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / rel)
  ann = root / "wider_face_val_bbx_gt.txt"
  ann.write_text(text)
  return ann, images


def test_examples_stats_and_report(tmp_path):
  ann, images = write_fixture(tmp_path)
  src = WiderFaceSource(ann, images)
  assert isinstance(src, DetectionSource)
  assert (len(src), src.image_ids, src.num_classes, src.class_names, src.category_ids) == (
      3, [0, 1, 2], 1, ["face"], [1])
  ex = src[0]
  assert ex.image.shape == (60, 80, 3) and ex.image.dtype == np.uint8
  np.testing.assert_array_equal(ex.boxes, [[10, 5, 30, 35]])
  np.testing.assert_array_equal(ex.classes, [0])
  assert (ex.image_id, ex.file_name) == (0, "0--Parade/0_Parade_a.jpg")
  assert src[1].boxes.shape == (0, 4) and src[1].image.shape == (32, 32, 3)
  c = src.annotation(2)
  assert c.image is None and (c.height, c.width) == (50, 40)
  np.testing.assert_array_equal(c.boxes, [[0, 10, 15, 30]])
  assert src.stats == {
      "images": 3, "annotations": 5, "boxes_kept": 2, "boxes_clipped": 1,
      "boxes_dropped_degenerate": 1, "boxes_dropped_outside": 1, "boxes_dropped_invalid": 1,
      "invalid_faces": 1, "crowd": 0, "images_without_objects": 1, "bad_images_skipped": 0,
      "bad_images_at_read": 0}
  assert {k: v.tolist() for k, v in src.face_attributes(2).items()} == {
      "blur": [1], "expression": [1], "illumination": [0], "invalid": [0], "occlusion": [1],
      "pose": [0]}
  assert src.official_key(2) == ("1--Handshaking", "1_Handshaking_c")
  summary = src.annotation_summary()
  assert summary["objects"].tolist() == [1, 0, 1] and summary["crowd"].tolist() == [0, 0, 0]
  report = source_report(src)
  assert (report["images"], report["objects"], report["images_without_objects"]) == (3, 2, 1)
  assert (report["boxes_dropped_invalid"], report["boxes_dropped_degenerate"],
          report["boxes_dropped_outside"], report["boxes_clipped"]) == (1, 1, 1, 1)
  assert "1 invalid" in format_report({"val": report})
  assert required_max_boxes(src) == 1


def test_keep_invalid_faces(tmp_path):
  ann, images = write_fixture(tmp_path)
  src = WiderFaceSource(ann, images, drop_invalid=False)
  np.testing.assert_array_equal(src[0].boxes, [[10, 5, 30, 35], [70, 50, 80, 60]])
  assert src.face_attributes(0)["invalid"].tolist() == [0, 1]
  assert src.face_attributes(0)["occlusion"].tolist() == [0, 2]
  st = src.stats
  assert (st["boxes_kept"], st["boxes_clipped"], st["boxes_dropped_invalid"], st["invalid_faces"],
          st["annotations"]) == (3, 2, 0, 1, 5)
  assert st["annotations"] == (st["boxes_kept"] + st["boxes_dropped_invalid"]
                               + st["boxes_dropped_degenerate"] + st["boxes_dropped_outside"])


def test_coco_ground_truth_and_official_predictions(tmp_path):
  ann, images = write_fixture(tmp_path)
  src = WiderFaceSource(ann, images)
  coco = src.coco
  assert sorted(coco.getImgIds()) == [0, 1, 2]
  assert coco.imgs[2]["width"] == 40 and coco.imgs[2]["height"] == 50
  anns = [coco.anns[k] for k in sorted(coco.anns)]
  assert [(a["image_id"], a["bbox"], a["area"], a["iscrowd"], a["category_id"]) for a in anns] == [
      (0, [10.0, 5.0, 20.0, 30.0], 600.0, 0, 1), (2, [0.0, 10.0, 15.0, 20.0], 300.0, 0, 1)]
  results = [{"image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
             {"image_id": 0, "category_id": 1, "bbox": [10, 5, 20, 30], "score": 0.9}]
  official = src.official_predictions(results)
  assert sorted(official) == ["0--Parade", "1--Handshaking"]
  np.testing.assert_array_equal(official["1--Handshaking"]["1_Handshaking_c"], [[1, 2, 3, 4, 0.5]])
  assert official["0--Parade"]["0_Parade_b"].shape == (0, 5)  # every image gets a file
  pred_dir = tmp_path / "pred"
  assert wf.write_predictions(pred_dir, official) == 3
  assert wf.load_predictions(pred_dir)["0--Parade"]["0_Parade_a"].tolist() == [[10, 5, 20, 30, 0.9]]
  with pytest.raises(ValueError, match="image_id 7 is not an image"):
    src.official_predictions([{"image_id": 7, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_placeholder_line_is_optional_and_checked(tmp_path):
  # N = 0 without the placeholder, in the middle and at the end of the file.
  text = "0--Parade/0_Parade_b.jpg\n0\n0--Parade/0_Parade_a.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n" \
         "1--Handshaking/1_Handshaking_c.jpg\n0\n"
  records = parse_annotation_file(write_fixture(tmp_path, text)[0])
  assert [(r.path, r.line, len(r.faces)) for r in records] == [
      ("0--Parade/0_Parade_b.jpg", 1, 0), ("0--Parade/0_Parade_a.jpg", 3, 1),
      ("1--Handshaking/1_Handshaking_c.jpg", 6, 0)]
  np.testing.assert_array_equal(records[1].faces, [[1, 1, 5, 5, 0, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize("text, line, message", [
    ("0--Parade/0_Parade_a.jpg\nthree\n", 2, "expected the number of faces"),
    ("0--Parade/0_Parade_a.jpg\n-1\n", 2, "expected the number of faces"),
    ("0--Parade/0_Parade_a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8\n", 4, "expected 10 numbers"),
    ("0--Parade/0_Parade_a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 3, "ends after 1 of the 2 face lines"),
    ("0--Parade/0_Parade_a.jpg\n1\n1 2 3 4 0 0 0 0.5 0 0\n", 3, "must be integers"),
    ("0--Parade/0_Parade_a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n", 4,
     "expected an image path"),
    ("0--Parade/0_Parade_b.jpg\n0\n3 3 5 5 0 0 0 0 0 0\n", 3, "all-zero placeholder"),
    ("0--Parade/0_Parade_b.jpg\n0\n0--Parade/0_Parade_b.jpg\n0\n", 3, "listed twice"),
    ("0--Parade/0_Parade_a.jpg\n", 1, "expected its number of faces"),
])
def test_parse_errors_name_file_and_line(tmp_path, text, line, message):
  ann, images = write_fixture(tmp_path, text)
  with pytest.raises(ValueError, match=message) as info:
    WiderFaceSource(ann, images)
  assert f"{ann}:{line}:" in str(info.value)


def test_missing_files_and_bad_images(tmp_path):
  ann, images = write_fixture(tmp_path)
  with pytest.raises(FileNotFoundError, match="annotation file not found"):
    WiderFaceSource(tmp_path / "nope.txt", images)
  with pytest.raises(FileNotFoundError, match="Image directory not found"):
    WiderFaceSource(ann, tmp_path / "nope")
  (images / "1--Handshaking" / "1_Handshaking_c.jpg").unlink()
  with pytest.raises(OSError, match=r"1_Handshaking_c.jpg' \(line 9 of") as info:
    WiderFaceSource(ann, images)
  assert "skip_bad_images" in str(info.value)
  src = WiderFaceSource(ann, images, skip_bad_images=True)
  assert src.image_ids == [0, 1] and src.skipped_files == ["1--Handshaking/1_Handshaking_c.jpg"]
  assert (src.stats["bad_images_skipped"], src.stats["annotations"], src.stats["boxes_kept"],
          src.stats["boxes_dropped_outside"]) == (1, 3, 1, 0)
  # an image that breaks after the source was made: a black image without faces, counted
  (images / "0--Parade" / "0_Parade_a.jpg").write_bytes(b"broken")
  with pytest.warns(RuntimeWarning, match="black image"):
    ex = src[0]
  assert ex.image.shape == (60, 80, 3) and not ex.image.any() and ex.boxes.shape == (0, 4)
  assert src.stats["bad_images_at_read"] == 1
