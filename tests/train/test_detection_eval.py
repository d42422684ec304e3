"""Tests of jaxdet.experiments.detection_eval.evaluate_detections (COCO / VOC / WIDER FACE) and of
its use by DetectionExperiment.evaluate, on small in-memory sources."""
import contextlib
import io
import json
import types

import ml_collections
import numpy as np
import pytest
from pycocotools.coco import COCO
from scipy.io import savemat

from jaxdet.evaluation import coco as coco_eval
from jaxdet.evaluation import face_subsets as fs
from jaxdet.evaluation import voc
from jaxdet.evaluation import wider_face as wf
from jaxdet.experiments import detection_eval
from jaxdet.experiments.detection import DetectionExperiment

# Three images in two WIDER FACE events; faces [x, y, w, h].
IMAGES = [{"id": 10, "file_name": "0--Parade/0_Parade_a.jpg", "width": 200, "height": 100},
          {"id": 11, "file_name": "0--Parade/0_Parade_b.jpg", "width": 200, "height": 100},
          {"id": 12, "file_name": "1--Handshaking/1_Handshaking_c.jpg", "width": 200,
           "height": 100}]
FACES = {10: [[0, 0, 20, 24], [40, 0, 40, 48], [100, 10, 60, 70]],
         11: [[10, 10, 12, 14]],
         12: [[5, 5, 35, 36], [150, 50, 9, 9]]}
# Detections: hits, a near miss, false positives, one duplicate, nothing on image 11's face.
RESULTS = [
    {"image_id": 10, "category_id": 1, "bbox": [100, 10, 60, 70], "score": 0.95},
    {"image_id": 10, "category_id": 1, "bbox": [41, 1, 40, 47], "score": 0.80},
    {"image_id": 10, "category_id": 1, "bbox": [0, 60, 30, 30], "score": 0.70},
    {"image_id": 10, "category_id": 1, "bbox": [1, 0, 20, 24], "score": 0.30},
    {"image_id": 11, "category_id": 1, "bbox": [120, 50, 20, 20], "score": 0.60},
    {"image_id": 12, "category_id": 1, "bbox": [5, 5, 35, 36], "score": 0.90},
    {"image_id": 12, "category_id": 1, "bbox": [6, 5, 35, 36], "score": 0.50},
    {"image_id": 12, "category_id": 1, "bbox": [150, 52, 9, 9], "score": 0.20},
]
KEYS = [("0--Parade", "0_Parade_a"), ("0--Parade", "0_Parade_b"),
        ("1--Handshaking", "1_Handshaking_c")]


def make_coco(images=IMAGES, faces=FACES, cats=({"id": 1, "name": "face"},)):
  anns = [{"id": k + 1, "image_id": i, "category_id": 1, "bbox": b, "area": b[2] * b[3],
           "iscrowd": 0} for k, (i, b) in enumerate((i, b) for i in faces for b in faces[i])]
  gt = COCO()
  gt.dataset = {"images": [dict(im) for im in images], "annotations": anns,
                "categories": [dict(c) for c in cats]}
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
  return gt


class FakeSource:
  def __init__(self, coco, image_ids=(10, 11, 12)):
    self.coco, self.image_ids = coco, list(image_ids)

  def __len__(self):
    return len(self.image_ids)


def expected_predictions(results, keys_of):
  out = {}
  for image_id, key in keys_of.items():
    rows = [[*r["bbox"], r["score"]] for r in results if r["image_id"] == image_id]
    out.setdefault(key[0], {})[key[1]] = np.array(rows, np.float64).reshape(-1, 5)
  return out


def hand_proxy_ground_truth():
  """The proxy subsets of FACES by hand: hard h > 10, medium h > 30, easy h > 50 (1-based)."""
  return wf.WiderFaceGroundTruth(
      ["0--Parade", "1--Handshaking"], [["0_Parade_a", "0_Parade_b"], ["1_Handshaking_c"]],
      [[np.array(FACES[10], float), np.array(FACES[11], float)], [np.array(FACES[12], float)]],
      {"easy": [[[3], []], [[]]], "medium": [[[2, 3], []], [[1]]],
       "hard": [[[1, 2, 3], [1]], [[1]]]})


def test_wider_face_protocol_writes_official_layout_and_matches_direct_evaluation(tmp_path):
  source = FakeSource(make_coco())
  metrics = detection_eval.evaluate_detections(source, RESULTS, workdir=str(tmp_path), step=7,
                                               tag="_x", protocol="wider_face")
  pred_dir = tmp_path / "wider_face_x_step7"
  files = sorted(p.relative_to(pred_dir).as_posix() for p in pred_dir.rglob("*.txt"))
  assert files == ["0--Parade/0_Parade_a.txt", "0--Parade/0_Parade_b.txt",
                   "1--Handshaking/1_Handshaking_c.txt"]
  read = wf.load_predictions(pred_dir)
  want = expected_predictions(RESULTS, dict(zip(source.image_ids, KEYS)))
  assert read.keys() == want.keys()
  for event in want:
    assert read[event].keys() == want[event].keys()
    for name, rows in want[event].items():
      order = np.argsort(-rows[:, 4], kind="stable")  # files are written in score order
      np.testing.assert_array_equal(read[event][name], rows[order])
  ap = wf.evaluate_wider_face(hand_proxy_ground_truth(), want)
  assert {k: metrics[f"wider_{k}_AP"] for k in wf.SUBSETS} == ap
  assert 0 < ap["hard"] < ap["easy"] <= 1  # a real mix of hits and misses
  # The COCO metrics and the result file are there too.
  direct = coco_eval.evaluate_coco(source.coco, RESULTS, image_ids=[10, 11, 12])
  assert metrics["AP"] == direct["AP"]
  assert json.loads((tmp_path / "detections_x_step7.json").read_text()) == RESULTS


def test_empty_image_gets_a_file_and_stale_files_are_replaced(tmp_path):
  source = FakeSource(make_coco())
  stale = tmp_path / "wider_face_step1" / "9--Old" / "old.txt"
  stale.parent.mkdir(parents=True)
  stale.write_text("old\n0\n")
  results = [r for r in RESULTS if r["image_id"] != 11]
  detection_eval.evaluate_detections(source, results, workdir=str(tmp_path), step=1,
                                     protocol="wider_face")
  assert not stale.exists()
  text = (tmp_path / "wider_face_step1" / "0--Parade" / "0_Parade_b.txt").read_text()
  assert text.splitlines() == ["0_Parade_b", "0"]


def cell(items):
  out = np.empty((len(items), 1), dtype=object)
  for i, item in enumerate(items):
    out[i, 0] = item
  return out


def write_official_gt(gt_dir, gt: wf.WiderFaceGroundTruth):
  gt_dir.mkdir(parents=True)
  savemat(gt_dir / wf.GT_FILE, {
      "event_list": cell(gt.events),
      "file_list": cell([cell(names) for names in gt.images]),
      "face_bbx_list": cell([cell(boxes) for boxes in gt.boxes])})
  for s, per_event in gt.subsets.items():
    savemat(gt_dir / wf.subset_file(s), {
        "gt_list": cell([cell([np.asarray(i, float).reshape(-1, 1) for i in per_image])
                         for per_image in per_event])})


class KeyedSource(FakeSource):
  def official_key(self, i):
    return dict(zip((10, 11, 12), KEYS))[self.image_ids[i]]


def test_official_ground_truth_dir(tmp_path, capsys):
  # Official subsets that differ from the proxy ones (e.g. face 1 of image a is hard-only).
  official = wf.WiderFaceGroundTruth(
      hand_proxy_ground_truth().events, hand_proxy_ground_truth().images,
      hand_proxy_ground_truth().boxes,
      {"easy": [[[2, 3], []], [[1]]], "medium": [[[2, 3], [1]], [[1]]],
       "hard": [[[1, 2, 3], [1]], [[1, 2]]]})
  gt_dir = tmp_path / "ground_truth"
  write_official_gt(gt_dir, official)
  source = KeyedSource(make_coco())
  metrics = detection_eval.evaluate_detections(source, RESULTS, workdir=str(tmp_path / "w"),
                                               step=3, protocol="wider_face",
                                               wider_face_gt_dir=str(gt_dir))
  direct = wf.evaluate_wider_face(wf.load_ground_truth(gt_dir),
                                  wf.load_predictions(tmp_path / "w" / "wider_face_step3"))
  assert {k: metrics[f"wider_{k}_AP"] for k in wf.SUBSETS} == direct
  assert direct != wf.evaluate_wider_face(hand_proxy_ground_truth(),
                                          wf.load_predictions(tmp_path / "w" / "wider_face_step3"))
  # Part of the images (config.eval.max_images): the ground truth is reduced to them, with a note.
  part = KeyedSource(make_coco(), image_ids=(10, 11))
  results = [r for r in RESULTS if r["image_id"] in (10, 11)]
  metrics = detection_eval.evaluate_detections(part, results, workdir=str(tmp_path / "p"), step=3,
                                               protocol="wider_face", wider_face_gt_dir=str(gt_dir))
  assert "over the 2 evaluated images, not all 3" in capsys.readouterr().out
  reduced = wf.WiderFaceGroundTruth(
      ["0--Parade"], [official.images[0]], [official.boxes[0]],
      {s: [v[0]] for s, v in official.subsets.items()})
  want = wf.evaluate_wider_face(reduced, expected_predictions(results, dict(zip((10, 11), KEYS))))
  assert {k: metrics[f"wider_{k}_AP"] for k in wf.SUBSETS} == want
  # A source whose images the ground truth lacks (another split) is an error.
  other = FakeSource(make_coco(images=[dict(IMAGES[0], file_name="5--Car/5_Car_z.jpg")],
                               faces={10: FACES[10]}), image_ids=(10,))
  with pytest.raises(ValueError, match="not in the WIDER FACE ground truth"):
    detection_eval.evaluate_detections(other, [], workdir=str(tmp_path / "o"), step=0,
                                       protocol="wider_face", wider_face_gt_dir=str(gt_dir))


def test_coco_protocol_equals_evaluate_coco_and_voc(tmp_path):
  source = FakeSource(make_coco())
  metrics = detection_eval.evaluate_detections(source, RESULTS, workdir=str(tmp_path), step=2,
                                               protocol="coco", voc_metrics=True)
  direct = coco_eval.evaluate_coco(make_coco(), RESULTS, image_ids=source.image_ids)
  assert {k: metrics[k] for k in coco_eval.METRIC_NAMES} == direct
  for use07, name in ((True, "mAP50_voc07"), (False, "mAP50_area")):
    assert metrics[name] == voc.evaluate_voc_from_coco(make_coco(), RESULTS, use_07_metric=use07,
                                                       image_ids=source.image_ids)["mAP"]
  assert set(metrics) == set(coco_eval.METRIC_NAMES) | {"mAP50_voc07", "mAP50_area"}
  assert not (tmp_path / "wider_face_step2").exists()
  assert (tmp_path / "detections_step2.json").exists()


def test_protocol_errors(tmp_path):
  source = FakeSource(make_coco())
  with pytest.raises(ValueError, match="config.eval.protocol='widerface'.*valid: coco, wider_face"):
    detection_eval.evaluate_detections(source, RESULTS, workdir=str(tmp_path), step=0,
                                       protocol="widerface")
  two = FakeSource(make_coco(cats=({"id": 1, "name": "person"}, {"id": 2, "name": "car"})))
  with pytest.raises(ValueError, match="scores one class"):
    detection_eval.evaluate_detections(two, RESULTS, workdir=str(tmp_path), step=0,
                                       protocol="wider_face")


def test_detection_experiment_evaluate_passes_the_eval_config(tmp_path):
  """DetectionExperiment.evaluate with its detector stubbed: config.eval.* reach the protocol."""
  cfg = ml_collections.ConfigDict({"eval": {"protocol": "wider_face", "voc_metrics": False,
                                            "wider_face_gt_dir": ""}})
  fake = types.SimpleNamespace(config=cfg, val_source=FakeSource(make_coco()),
                               eval_batches=lambda transform=None: None,
                               detect=lambda state, loader: list(RESULTS))
  metrics = DetectionExperiment.evaluate(fake, None, workdir=str(tmp_path), step=5, tag="_t")
  want = expected_predictions(RESULTS, dict(zip((10, 11, 12), KEYS)))
  assert metrics["wider_hard_AP"] == wf.evaluate_wider_face(hand_proxy_ground_truth(), want)["hard"]
  assert (tmp_path / "detections_t_step5.json").exists()
  assert (tmp_path / "wider_face_t_step5" / "1--Handshaking" / "1_Handshaking_c.txt").exists()
  cfg.eval.protocol = "voc"
  fake.detect = lambda state, loader: pytest.fail("the protocol is checked before detecting")
  with pytest.raises(ValueError, match="valid: coco, wider_face"):
    DetectionExperiment.evaluate(fake, None, workdir=str(tmp_path), step=5)
