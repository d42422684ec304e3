"""Tests of jaxdet.evaluation.face_subsets: image keys, proxy easy / medium / hard ground truth
(counted faces and hand-computed AP), predictions by key and the restriction of a ground truth."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from jaxdet.data.factory import Subset
from jaxdet.evaluation import face_subsets as fs
from jaxdet.evaluation import wider_face as wf


def make_coco(images, anns, cats=({"id": 1, "name": "face"},)):
  gt = COCO()
  gt.dataset = {"images": [dict(im) for im in images], "categories": [dict(c) for c in cats],
                "annotations": [dict(a, id=k + 1, area=a["bbox"][2] * a["bbox"][3],
                                     iscrowd=a.get("iscrowd", 0)) for k, a in enumerate(anns)]}
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
  return gt


class FakeSource:
  """What the face evaluation reads of a source: ``coco``, ``image_ids``, ``len``."""

  def __init__(self, coco, image_ids=None):
    self.coco = coco
    self.image_ids = list(image_ids if image_ids is not None else coco.getImgIds())

  def __len__(self):
    return len(self.image_ids)


class OfficialKeySource(FakeSource):
  def __init__(self, coco, keys):
    super().__init__(coco)
    self.keys = keys

  def official_key(self, i):
    return self.keys[i]


# Image 7 ("photo_a.jpg"): faces of height 8 (D), 20 (A), 40 (B), 60 (C), a crowd face (E, h 70)
# and a non-face object (category 2). Image 9 ("photo_b.jpg"): no face.
# Proxy rule (MTGAN §4.1, heights larger than 50 / 30 / 10 px):
#   hard   h > 10: A B C  (D too small, E crowd: ignore)
#   medium h > 30: B C    (A D E ignore)
#   easy   h > 50: C      (A B D E ignore)
IMAGES = [{"id": 7, "file_name": "photo_a.jpg", "width": 400, "height": 200},
          {"id": 9, "file_name": "photo_b.jpg", "width": 100, "height": 100}]
FACES = {"D": [0, 0, 8, 8], "A": [20, 0, 16, 20], "B": [60, 0, 30, 40], "C": [120, 0, 50, 60],
         "E": [200, 0, 60, 70]}
ANNS = [{"image_id": 7, "category_id": 1, "bbox": FACES[k], "iscrowd": int(k == "E")}
        for k in "DABCE"] + [{"image_id": 7, "category_id": 2, "bbox": [300, 100, 50, 50]}]
CATS = ({"id": 1, "name": "face"}, {"id": 2, "name": "coin"})


def source():
  return FakeSource(make_coco(IMAGES, ANNS, CATS))


def test_proxy_subsets_count_the_right_faces():
  gt = fs.proxy_ground_truth(source())
  assert gt.events == [fs.SINGLE_EVENT] and gt.images == [["photo_a", "photo_b"]]
  np.testing.assert_array_equal(gt.boxes[0][0], [FACES[k] for k in "DABCE"])
  assert gt.boxes[0][1].shape == (0, 4)
  # 1-based indices into D A B C E
  assert [i.tolist() for i in gt.subsets["hard"][0]] == [[2, 3, 4], []]
  assert [i.tolist() for i in gt.subsets["medium"][0]] == [[3, 4], []]
  assert [i.tolist() for i in gt.subsets["easy"][0]] == [[4], []]
  assert {s: gt.num_faces(s) for s in wf.SUBSETS} == {"easy": 1, "medium": 2, "hard": 3}
  assert "easy > 50 px, medium > 30 px, hard > 10 px" in gt.origin
  # the thresholds are strict ("larger than") and configurable
  gt = fs.proxy_ground_truth(source(), min_height={"easy": 40, "medium": 20, "hard": 0})
  assert {s: gt.num_faces(s) for s in gt.subsets} == {"easy": 1, "medium": 2, "hard": 4}


def rows(*items):
  return np.array([[*FACES[k], score] if isinstance(k, str) else [*k, score]
                   for k, score in items], np.float64)


def test_perfect_predictions_give_ap_one_on_every_subset():
  gt = fs.proxy_ground_truth(source())
  preds = {fs.SINGLE_EVENT: {"photo_a": rows(("D", .5), ("A", .6), ("B", .7), ("C", .8),
                                             ("E", .9))}}
  assert wf.evaluate_wider_face(gt, preds) == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_one_false_positive_and_one_miss_hand_computed():
  gt = fs.proxy_ground_truth(source())
  # C .9, a FP .8, D .75 (ignore everywhere: dropped), B .7; A is missed. Min-max normalised:
  # C 1, FP 0.5, D 0.25, B 0.
  preds = {fs.SINGLE_EVENT: {"photo_a": rows(("C", .9), ((300, 150, 20, 20), .8), ("D", .75),
                                             ("B", .7)),
                             "photo_b": np.zeros((0, 5))}}
  ap = wf.evaluate_wider_face(gt, preds)
  # hard (A B C): C TP (P 1, R 1/3) | FP (1/2) | D dropped | B TP (2/3, R 2/3); A never found.
  #   AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
  # medium (B C): C (1, 1/2) | FP (1/2) | B (2/3, 1): AP = 1/2 + 1/2 * 2/3 = 5/6.
  # easy (C): C (1, 1) | FP | B dropped (ignore): AP = 1.
  assert ap == pytest.approx({"easy": 1.0, "medium": 5 / 6, "hard": 5 / 9}, abs=1e-12)
  # Counting every face instead (no ignore): D is a TP, A and E are missed, 5 faces.
  every = {"all": [[np.arange(1, 6), np.zeros(0, np.int64)]]}
  gt_all = wf.WiderFaceGroundTruth(gt.events, gt.images, gt.boxes, every)
  # C (1, 1/5) | FP (1/2) | D (2/3, 2/5) | B (3/4, 3/5): AP = 1/5 + 1/5 * 3/4 + 1/5 * 3/4 = 0.5
  assert wf.evaluate_wider_face(gt_all, preds)["all"] == pytest.approx(0.5, abs=1e-12)


def test_image_keys_rules():
  # WIDER FACE file names (TFDS wider_face image/filename, COCO-JSON conversions): official keys.
  images = [{"id": 3, "file_name": "0--Parade/0_Parade_x.jpg"},
            {"id": 1, "file_name": "12--Group/12_Group_y.jpg"}]
  src = FakeSource(make_coco(images, []))
  assert fs.image_keys(src) == [("0--Parade", "0_Parade_x"), ("12--Group", "12_Group_y")]
  # Other names: one event, names from the file names ('/' -> '_').
  images = [{"id": 3, "file_name": "a/x.png"}, {"id": 1, "file_name": "b.png"}]
  assert fs.image_keys(FakeSource(make_coco(images, []))) == [
      (fs.SINGLE_EVENT, "a_x"), (fs.SINGLE_EVENT, "b")]
  # Colliding or missing names: prefixed with the image id / the image id alone.
  images = [{"id": 3, "file_name": "x.png"}, {"id": 1, "file_name": "x.jpg"},
            {"id": 5, "file_name": ""}]
  assert fs.image_keys(FakeSource(make_coco(images, []))) == [
      (fs.SINGLE_EVENT, "3_x"), (fs.SINGLE_EVENT, "1_x"), (fs.SINGLE_EVENT, "5")]
  # official_key wins, also through a Subset.
  images = [{"id": i, "file_name": f"f{i}.jpg"} for i in (4, 5, 6)]
  keys = [("0--Parade", "p4"), ("1--Handshaking", "h5"), ("0--Parade", "p6")]
  official = OfficialKeySource(make_coco(images, []), keys)
  assert fs.image_keys(official) == keys
  assert fs.image_keys(Subset(official, indices=[2, 0])) == [keys[2], keys[0]]


def test_face_category_and_predictions_by_key():
  coco = make_coco(IMAGES, ANNS, CATS)
  assert fs.face_category_id(coco) == 1
  assert fs.face_category_id(make_coco(IMAGES, [], [{"id": 4, "name": "head"}])) == 4
  with pytest.raises(ValueError, match="none \\(or several\\) named 'face'"):
    fs.face_category_id(make_coco(IMAGES, [], [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]))
  results = [{"image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 4], "score": .5},
             {"image_id": 7, "category_id": 2, "bbox": [9, 9, 9, 9], "score": .9},
             {"image_id": 7, "category_id": 1, "bbox": [5, 6, 7, 8], "score": .7}]
  keys = [("e", "a"), ("e", "b")]
  out = fs.predictions_by_key(results, [7, 9], keys, category_id=1)
  np.testing.assert_array_equal(out["e"]["a"], [[1, 2, 3, 4, .5], [5, 6, 7, 8, .7]])
  assert out["e"]["b"].shape == (0, 5)
  with pytest.raises(ValueError, match="image_id 8"):
    fs.predictions_by_key([dict(results[0], image_id=8)], [7, 9], keys)


def test_restrict_ground_truth():
  gt = wf.WiderFaceGroundTruth(
      ["0--A", "1--B"], [["a1", "a2"], ["b1"]],
      [[np.array([[0, 0, 9, 9]]), np.zeros((0, 4))], [np.array([[1, 1, 5, 5], [9, 9, 5, 5]])]],
      {"hard": [[[1], []], [[1, 2]]], "easy": [[[1], []], [[2]]]}, origin="test")
  small = fs.restrict_ground_truth(gt, [("1--B", "b1"), ("0--A", "a1")])
  assert small.keys() == [("0--A", "a1"), ("1--B", "b1")]  # ground-truth order
  assert [i.tolist() for i in small.subsets["easy"][1]] == [[2]]
  assert small.num_faces("hard") == 3
  np.testing.assert_array_equal(small.boxes[1][0], gt.boxes[1][0])
  with pytest.raises(ValueError, match="1 of the 2 evaluated images are not in"):
    fs.restrict_ground_truth(gt, [("0--A", "a1"), ("0--A", "zz")])
