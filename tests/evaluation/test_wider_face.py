"""Tests of jaxdet.evaluation.wider_face: hand-computed AP on a tiny fixture written as official
``.mat`` files, a literal loop-by-loop transcription of the official MATLAB code compared on random
data, prediction files, errors and the command line."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from jaxdet.evaluation import wider_face as wf

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- the fixture
# Two events, three images. Faces [x, y, w, h]; all of size 9 x 9 (area 10 x 10 = 100 with the
# official "+1" convention) except B1 (19 x 19, area 400).
EVENTS = ["0--Parade", "1--Handshaking"]
IMAGES = [["0_Parade_a", "0_Parade_b"], ["1_Handshaking_c"]]
FACES = [
    [np.array([[0, 0, 9, 9], [20, 0, 9, 9], [40, 0, 9, 9]], np.float64),   # A1 A2 A3
     np.array([[0, 0, 19, 19], [50, 50, 9, 9]], np.float64)],              # B1 B2
    [np.array([[0, 0, 9, 9], [100, 100, 9, 9]], np.float64)],              # C1 C2
]
# 1-based indices of the faces that count in each subset (the rest are "ignore" there).
SUBSETS = {
    "easy": [[[1], [1]], [[1]]],             # A1 B1 C1            -> 3 faces
    "medium": [[[1, 2], [1]], [[1]]],        # A1 A2 B1 C1         -> 4 faces
    "hard": [[[1, 2, 3], [1, 2]], [[1, 2]]],  # all seven          -> 7 faces
}

# Raw scores are logits in [-1, 3]; min-max normalisation maps s -> (s + 1) / 4 (exact in binary).
# Rows are deliberately not in score order (the protocol sorts per image).
PREDICTIONS = {
    "0--Parade": {
        "0_Parade_a": np.array([
            [20, 0, 9, 9, -1.0],      # pA4 -> 0.0   exactly on A2
            [40, 0, 9, 9, 2.0],       # pA2 -> 0.75  exactly on A3
            [0, 0, 9, 9, 3.0],        # pA1 -> 1.0   exactly on A1
            [200, 200, 9, 9, 0.0],    # pA3 -> 0.25  on nothing
        ]),
        "0_Parade_b": np.array([
            [0, 0, 19, 19, 2.5],      # pB1 -> 0.875 exactly on B1
            [53.2, 50, 9, 9, 1.5],    # pB3 -> 0.625 on B2, IoU (+1) = 6.8*10 / 132 = 0.515
            [1, 1, 19, 19, 1.0],      # pB2 -> 0.5   on B1 again (IoU 361/439 = 0.82): duplicate
        ]),
    },
    # image C has no predictions at all (no entry)
}
# Global order: pA1 1.0, pB1 .875, pA2 .75, pB3 .625, pB2 .5, pA3 .25, pA4 0.0.
#
# easy (3 faces: A1 B1 C1; A2 A3 B2 C2 ignored):
#   pA1 TP (found 1, proposals 1) | pB1 TP (2, 2) | pA2 on A3, ignored: dropped | pB3 on B2 ignored:
#   dropped | pB2 duplicate of B1: FP (2, 3) | pA3 FP (2, 4) | pA4 on A2, ignored: dropped.
#   Recall 1/3 and 2/3 reached at precision 1, never more: AP = 2/3.
# medium (4 faces: A1 A2 B1 C1):
#   (1, 1) | (2, 2) | pA2 dropped | pB3 dropped | pB2 FP (2, 3) | pA3 FP (2, 4) | pA4 TP (3, 5).
#   AP = 1/4 * 1 + 1/4 * 1 + 1/4 * 3/5 = 0.65.
#   (If ignored matches counted as FPs: pA4 would be (3, 7), AP 0.6071; if the duplicate were not
#   a FP: (3, 4), AP 0.6875.)
# hard (7 faces):
#   (1, 1) | (2, 2) | pA2 TP (3, 3) | pB3 TP (4, 4) | pB2 FP (4, 5) | pA3 FP (4, 6) | pA4 TP (5, 7).
#   AP = 4/7 * 1 + 1/7 * 5/7 = 33/49 = 0.673469.
#   (Without the "+1" sizes pB3 has IoU 52.2 / 109.8 = 0.475 and is a FP: AP would be 25/49.)
# Without the min-max normalisation, pA1..pB2 (raw >= 1) would all pass the first threshold at
# once and pA4 (raw -1) none: medium AP would be 2/4 * 2/5 = 0.2.
EXPECTED = {"easy": 2 / 3, "medium": 0.65, "hard": 33 / 49}


def cell(items):
  """A MATLAB cell column (object array [n, 1]) as ``savemat`` writes it."""
  out = np.empty((len(items), 1), dtype=object)
  for i, item in enumerate(items):
    out[i, 0] = item
  return out


def write_ground_truth(root: Path, events=EVENTS, images=IMAGES, faces=FACES, subsets=SUBSETS):
  """Writes ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` like eval_tools."""
  root.mkdir(parents=True, exist_ok=True)
  common = {
      "event_list": cell(list(events)),
      "file_list": cell([cell(list(names)) for names in images]),
      "face_bbx_list": cell([cell([np.asarray(b, np.float64).reshape(-1, 4) for b in per])
                             for per in faces]),
  }
  savemat(root / "wider_face_val.mat", common)
  for name, per_event in subsets.items():
    gt_list = cell([cell([np.asarray(idx, np.float64).reshape(-1, 1) for idx in per])
                    for per in per_event])
    savemat(root / f"wider_{name}_val.mat", {**common, "gt_list": gt_list})
  return root


def fixture_gt(**overrides):
  kw = dict(events=EVENTS, images=IMAGES, boxes=FACES, subsets=SUBSETS)
  kw.update(overrides)
  return wf.WiderFaceGroundTruth(**kw)


# ----------------------------------------------------------------------------- hand-checked values
def test_hand_computed_ap_from_official_mat_files(tmp_path):
  gt = wf.load_ground_truth(write_ground_truth(tmp_path / "ground_truth"))
  assert gt.events == EVENTS and gt.images == IMAGES
  np.testing.assert_array_equal(gt.boxes[0][1], FACES[0][1])
  assert [idx.tolist() for idx in gt.subsets["hard"][0]] == [[1, 2, 3], [1, 2]]
  assert {s: gt.num_faces(s) for s in wf.SUBSETS} == {"easy": 3, "medium": 4, "hard": 7}
  for arithmetic in ("matlab", "float64"):  # the fixture's normalised scores are exact in both
    ap = wf.evaluate_wider_face(gt, PREDICTIONS, score_arithmetic=arithmetic)
    assert list(ap) == ["easy", "medium", "hard"]
    for subset, value in EXPECTED.items():
      assert ap[subset] == pytest.approx(value, abs=1e-12), (arithmetic, subset)
  # the path of wider_face_val.mat is accepted as well (as wider_eval.m's gt_dir)
  ap = wf.evaluate_wider_face(wf.load_ground_truth(tmp_path / "ground_truth" / wf.GT_FILE),
                              PREDICTIONS)
  assert ap["hard"] == pytest.approx(33 / 49, abs=1e-12)


def test_pr_counts_at_thresholds():
  curves = wf.wider_face_pr_curves(fixture_gt(), PREDICTIONS)
  hard, medium, easy = curves["hard"], curves["medium"], curves["easy"]
  assert hard["thresholds"][0] == 0.999 and hard["thresholds"][-1] == 0.0
  # t = 1 (score >= 0.999): only pA1.
  assert (hard["proposals"][0], hard["found"][0]) == (1, 1)
  # pB1 has normalised score 0.875 = 1 - 125/1000: it enters at t = 125 (">="), not before.
  assert (hard["proposals"][123], hard["found"][123]) == (1, 1)
  assert (hard["proposals"][124], hard["found"][124]) == (2, 2)
  # t = 1000 (score >= 0): everything; dropped predictions are not proposals.
  assert (hard["proposals"][-1], hard["found"][-1]) == (7, 5)
  assert (medium["proposals"][-1], medium["found"][-1]) == (5, 3)
  assert (easy["proposals"][-1], easy["found"][-1]) == (4, 2)
  assert hard["precision"][-1] == pytest.approx(5 / 7)
  assert hard["recall"][-1] == pytest.approx(5 / 7)
  assert easy["faces"] == 3 and easy["recall"][-1] == pytest.approx(2 / 3)


def test_ignored_duplicate_and_plus_one_cases_change_the_result():
  base = wf.evaluate_wider_face(fixture_gt(), PREDICTIONS)
  # Moving pB3 by 0.4 px (IoU 6.4*10/136 = 0.47 even with "+1") makes it a FP everywhere: the hard
  # sequence becomes (1,1) (2,2) (3,3) FP FP FP (4,7): AP = 3/7 + 1/7 * 4/7 = 25/49.
  moved = {ev: dict(per) for ev, per in PREDICTIONS.items()}
  b = moved["0--Parade"]["0_Parade_b"].copy()
  b[1, 0] = 53.6
  moved["0--Parade"]["0_Parade_b"] = b
  ap = wf.evaluate_wider_face(fixture_gt(), moved)
  assert ap["hard"] == pytest.approx(25 / 49, abs=1e-12)
  # medium: pB3 was dropped (B2 is ignored there), now a FP: (1,1) (2,2) (2,3) (2,4) (2,5) (3,6).
  assert ap["medium"] == pytest.approx(0.5 + 0.25 * 3 / 6, abs=1e-12)
  assert ap["easy"] == pytest.approx(base["easy"])  # FPs after the last TP do not matter
  # Without the duplicate pB2: medium (1,1) (2,2) - - (2,3) (3,4): AP = 0.5 + 0.25 * 3/4.
  no_dup = {ev: dict(per) for ev, per in PREDICTIONS.items()}
  no_dup["0--Parade"]["0_Parade_b"] = PREDICTIONS["0--Parade"]["0_Parade_b"][:2]
  assert wf.evaluate_wider_face(fixture_gt(), no_dup)["medium"] == pytest.approx(0.6875, abs=1e-12)


def test_image_without_predictions_and_image_without_faces():
  empty_c = {**PREDICTIONS, "1--Handshaking": {"1_Handshaking_c": np.zeros((0, 5))}}
  ap = wf.evaluate_wider_face(fixture_gt(), empty_c)
  assert ap == pytest.approx(EXPECTED, abs=1e-12)
  # Image C's faces stay in the recall denominator: with C dropped from the ground truth, easy
  # has 2 faces, both found at precision 1: AP = 1.
  gt_no_c = fixture_gt(events=EVENTS[:1], images=IMAGES[:1], boxes=FACES[:1],
                       subsets={k: v[:1] for k, v in SUBSETS.items()})
  assert wf.evaluate_wider_face(gt_no_c, PREDICTIONS)["easy"] == pytest.approx(1.0, abs=1e-12)
  # An image without faces: its predictions are skipped by evaluation.m (not FPs), but they take
  # part in the normalisation. Scores inside [-1, 3] change nothing; AP stays the same.
  gt_d = fixture_gt(images=[IMAGES[0], IMAGES[1] + ["1_Handshaking_d"]],
                    boxes=[FACES[0], FACES[1] + [np.zeros((0, 4))]],
                    subsets={k: [v[0], v[1] + [[]]] for k, v in SUBSETS.items()})
  with_d = {**PREDICTIONS, "1--Handshaking": {
      "1_Handshaking_d": np.array([[0, 0, 9, 9, 2.9], [5, 5, 9, 9, 2.4]])}}
  assert wf.evaluate_wider_face(gt_d, with_d) == pytest.approx(EXPECTED, abs=1e-12)


def test_normalisation_is_over_all_images_and_affine_invariant():
  scaled = {ev: {im: np.concatenate([r[:, :4], 10 * r[:, 4:] + 100], axis=1)
                 for im, r in per.items()} for ev, per in PREDICTIONS.items()}
  assert wf.evaluate_wider_face(fixture_gt(), scaled) == pytest.approx(EXPECTED, abs=1e-12)
  # Predictions that name no ground-truth image are never read, so they do not move min / max.
  extra = {**PREDICTIONS, "9--Other": {"x": np.array([[0, 0, 5, 5, 1000.0]])}}
  assert wf.evaluate_wider_face(fixture_gt(), extra) == pytest.approx(EXPECTED, abs=1e-12)
  assert wf.unmatched_predictions(fixture_gt(), extra) == [("9--Other", "x")]
  missing = wf.missing_predictions(fixture_gt(), PREDICTIONS)
  assert missing == [("1--Handshaking", "1_Handshaking_c")]


def one_image_gt(n_faces=2):
  faces = np.array([[0, 0, 9, 9], [100, 0, 9, 9], [200, 0, 9, 9]][:n_faces], np.float64)
  return wf.WiderFaceGroundTruth(["e"], [["i"]], [[faces]],
                                 {"hard": [[list(range(1, n_faces + 1))]]})


def test_scores_between_two_thresholds_form_one_pr_point():
  # Two faces. p1 TP score 1, p3 TP 0.5004, p2 FP 0.5001, far FP 0 (sets min = 0, max = 1).
  # p3 and p2 both lie in [0.5, 0.501): they enter together at t = 500 (thresh 0.5), so the PR
  # points are (found 1, proposals 1) then (2, 3): AP = 1/2 * 1 + 1/2 * 2/3 = 0.8333, although an
  # exact ranking (TP before FP) would give AP 1.
  def preds(p3_score):
    return {"e": {"i": np.array([[0, 0, 9, 9, 1.0], [100, 0, 9, 9, p3_score],
                                 [300, 0, 9, 9, 0.5001], [500, 0, 9, 9, 0.0]])}}
  gt = one_image_gt()
  assert wf.evaluate_wider_face(gt, preds(0.5004))["hard"] == pytest.approx(5 / 6, abs=1e-12)
  # p3 at 0.5014 passes thresh 0.501 (t = 499) before p2: (1,1) (2,2) (2,3): AP = 1.
  assert wf.evaluate_wider_face(gt, preds(0.5014))["hard"] == pytest.approx(1.0, abs=1e-12)


def test_matlab_single_precision_normalisation():
  # norm_score.m starts from realmin('single') / realmax('single'), so MATLAB normalises in single
  # precision. A FP scored 0.79999999 (normalised exactly so in float64, below thresh 0.8 of
  # t = 200) rounds to float32(0.8) = 0.800000012 >= 0.8: in MATLAB it enters at t = 200 together
  # with the TP scored 0.8003; in float64 it enters one step later.
  gt = one_image_gt()
  preds = {"e": {"i": np.array([[0, 0, 9, 9, 1.0], [100, 0, 9, 9, 0.8003],
                                [300, 0, 9, 9, 0.79999999], [500, 0, 9, 9, 0.0]])}}
  # float64: (1,1) (2,2) ... -> AP 1.   matlab: (1,1) then (2,3) -> 1/2 + 1/2 * 2/3.
  assert wf.evaluate_wider_face(gt, preds, score_arithmetic="float64")["hard"] == pytest.approx(1.0)
  assert wf.evaluate_wider_face(gt, preds)["hard"] == pytest.approx(5 / 6, abs=1e-12)
  with pytest.raises(ValueError, match="score_arithmetic"):
    wf.evaluate_wider_face(gt, preds, score_arithmetic="half")


def test_top_prediction_on_ignored_face_gives_nan_precision_that_the_envelope_ignores():
  # Faces 1 (counted) and 2 (ignored). p on face 2 (score 1) is dropped: at t = 1..500 nothing is
  # proposed (precision 0/0 = NaN); p on face 1 (score 0.5) then gives (1, 1): AP = 1.
  gt = wf.WiderFaceGroundTruth(["e"], [["i"]], [[np.array([[0, 0, 9, 9], [100, 0, 9, 9]])]],
                               {"hard": [[[1]]]})
  preds = {"e": {"i": np.array([[100, 0, 9, 9, 1.0], [0, 0, 9, 9, 0.5], [300, 0, 9, 9, 0.0]])}}
  curve = wf.wider_face_pr_curves(gt, preds)["hard"]
  assert np.isnan(curve["precision"][:499]).all() and curve["precision"][499] == 1.0
  assert wf.evaluate_wider_face(gt, preds)["hard"] == pytest.approx(1.0, abs=1e-12)


def test_equal_scores_and_no_counted_faces():
  gt = one_image_gt()
  same = {"e": {"i": np.array([[0, 0, 9, 9, 0.7], [100, 0, 9, 9, 0.7]])}}
  with pytest.warns(RuntimeWarning, match="same score"):
    assert wf.evaluate_wider_face(gt, same)["hard"] == 0.0  # 0/0 normalisation, as in MATLAB
  nothing = wf.WiderFaceGroundTruth(["e"], [["i"]], [[np.array([[0, 0, 9, 9]])]], {"hard": [[[]]]})
  preds = {"e": {"i": np.array([[0, 0, 9, 9, 1.0], [50, 0, 9, 9, 0.0]])}}
  assert math.isnan(wf.evaluate_wider_face(nothing, preds)["hard"])
  assert wf.evaluate_wider_face(gt, {})["hard"] == 0.0


def test_voc_ap_all_point():
  # recall 0.5 at precision 1, then 1.0 at 0.5 (envelope) -> 0.5 + 0.25; NaN is skipped.
  assert wf.voc_ap_all_point([0.0, 0.5, 1.0], [np.nan, 1.0, 0.5]) == pytest.approx(0.75)
  assert wf.voc_ap_all_point([0.5, 0.5, 1.0], [0.4, 1.0, 0.5]) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- literal reference
def _matlab_max(a, b):  # MATLAB's max ignores NaN
  if a != a:
    return b
  if b != b:
    return a
  return max(a, b)


def reference_evaluation(gt, predictions, iou_thresh=0.5, single=False):
  """read_pred.m + norm_score.m + evaluation.m + VOCap.m, transcribed loop by loop with plain
  Python lists. Returns {subset: (proposals per t, found per t, count_face, AP)}."""
  # read_pred.m: sort each image's rows by descending score (stable).
  pred_list = {}
  for e, event in enumerate(gt.events):
    for j, name in enumerate(gt.images[e]):
      rows = [[float(v) for v in r] for r in predictions.get(event, {}).get(name, [])]
      order = sorted(range(len(rows)), key=lambda k: -rows[k][4])
      pred_list[e, j] = [rows[k] for k in order]
  # norm_score.m
  scores = [r[4] for rows in pred_list.values() for r in rows]
  if single:
    f = np.float32
    max_score, min_score = f(np.finfo(f).tiny), f(np.finfo(f).max)
    for s in scores:
      max_score, min_score = max(max_score, f(s)), min(min_score, f(s))
    for rows in pred_list.values():
      for r in rows:
        r[4] = float((f(r[4]) - min_score) / (max_score - min_score))
  elif scores:
    max_score, min_score = max(scores), min(scores)
    for rows in pred_list.values():
      for r in rows:
        r[4] = (r[4] - min_score) / (max_score - min_score)

  def boxoverlap(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
      return 0.0
    inter = w * h
    aarea = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    barea = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (aarea + barea - inter)

  out = {}
  for subset in gt.subsets:
    org = [[0, 0] for _ in range(1000)]
    count_face = 0
    for e in range(len(gt.events)):
      for j in range(len(gt.images[e])):
        gt_bbx = [list(map(float, b)) for b in gt.boxes[e][j]]
        pred_info = pred_list[e, j]
        keep_index = [int(k) for k in gt.subsets[subset][e][j]]
        count_face += len(keep_index)
        if not gt_bbx or not pred_info:
          continue
        ignore = [0] * len(gt_bbx)
        for k in keep_index:
          ignore[k - 1] = 1
        # image_evaluation
        p = [[r[0], r[1], r[0] + r[2], r[1] + r[3], r[4]] for r in pred_info]
        g = [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in gt_bbx]
        recall_list = [0] * len(g)
        proposal_list = [1] * len(p)
        pred_recall = [0] * len(p)
        for h in range(len(p)):
          overlap_list = [boxoverlap(gb, p[h]) for gb in g]
          max_overlap = max(overlap_list)
          idx = overlap_list.index(max_overlap)
          if max_overlap >= iou_thresh:
            if ignore[idx] == 0:
              recall_list[idx] = -1
              proposal_list[h] = -1
            elif recall_list[idx] == 0:
              recall_list[idx] = 1
          pred_recall[h] = sum(1 for v in recall_list if v == 1)
        # image_pr_info
        for t in range(1, 1001):
          thresh = 1 - t / 1000
          r_index = None
          for k in range(len(p)):
            if p[k][4] >= thresh:
              r_index = k
          if r_index is not None:
            org[t - 1][0] += sum(1 for v in proposal_list[:r_index + 1] if v == 1)
            org[t - 1][1] += pred_recall[r_index]
    # dataset_pr_info
    prec = [o[1] / o[0] if o[0] else math.nan for o in org]
    rec = [o[1] / count_face if count_face else math.nan for o in org]
    # VOCap.m
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
      mpre[i] = _matlab_max(mpre[i], mpre[i + 1])
    ap = 0.0
    for i in range(1, len(mrec)):
      if mrec[i] != mrec[i - 1]:
        ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    out[subset] = ([o[0] for o in org], [o[1] for o in org], count_face, ap)
  return out


def random_case(seed):
  rng = np.random.default_rng(seed)
  events, images, boxes, subsets = [], [], [], {s: [] for s in wf.SUBSETS}
  predictions = {}
  for e in range(4):
    event = f"{e}--Event"
    events.append(event)
    names, per_boxes = [], []
    per_subset = {s: [] for s in wf.SUBSETS}
    for j in range(int(rng.integers(2, 7))):
      name = f"{e}_img_{j}"
      n = int(rng.choice([0, 1, 3, 6]))
      xy = rng.integers(0, 80, (n, 2))
      wh = rng.integers(2, 25, (n, 2))
      faces = np.concatenate([xy, wh], axis=1).astype(np.float64)
      names.append(name)
      per_boxes.append(faces)
      for s in wf.SUBSETS:
        per_subset[s].append(np.flatnonzero(rng.random(n) < 0.6) + 1)
      if rng.random() < 0.15:
        continue  # no prediction entry for this image
      rows = []
      for f in faces:  # jittered detections: matches of counted / ignored faces, duplicates
        for _ in range(int(rng.integers(0, 3))):
          jit = f + rng.normal(0, 1.0, 4) * [1, 1, 0.5, 0.5]
          rows.append([*jit, 0.0])
      for _ in range(int(rng.integers(0, 4))):  # random boxes
        rows.append([*rng.uniform(0, 90, 2), *rng.uniform(2, 25, 2), 0.0])
      rows = np.asarray(rows, np.float64).reshape(-1, 5)
      # raw scores in [-2, 5]: some equal (ties keep file order), some 0.002 apart (normalised
      # 0.0003 apart: usually between the same two thresholds, i.e. one PR point)
      score = np.round(rng.uniform(-2, 5, len(rows)), 2)
      if len(rows) > 1:
        tie = rng.random(len(rows)) < 0.3
        score[tie] = score[rng.integers(0, len(rows), int(tie.sum()))]
        score[rng.random(len(rows)) < 0.2] += 0.002
      rows[:, 4] = score
      predictions.setdefault(event, {})[name] = rows
    images.append(names)
    boxes.append(per_boxes)
    for s in wf.SUBSETS:
      subsets[s].append(per_subset[s])
  return wf.WiderFaceGroundTruth(events, images, boxes, subsets), predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_literal_transcription_of_the_matlab_code(seed):
  gt, predictions = random_case(seed)
  for arithmetic, single in (("float64", False), ("matlab", True)):
    ref = reference_evaluation(gt, predictions, single=single)
    curves = wf.wider_face_pr_curves(gt, predictions, score_arithmetic=arithmetic)
    ap = wf.evaluate_wider_face(gt, predictions, score_arithmetic=arithmetic)
    for subset, (props, found, faces, ref_ap) in ref.items():
      assert curves[subset]["proposals"].tolist() == props, (seed, arithmetic, subset)
      assert curves[subset]["found"].tolist() == found, (seed, arithmetic, subset)
      assert curves[subset]["faces"] == faces
      assert ap[subset] == pytest.approx(ref_ap, rel=1e-12, abs=1e-12), (seed, arithmetic, subset)
      assert 0.0 < ap[subset] < 1.0  # a non-trivial case
  # a lower IoU threshold changes matches; the reference agrees there too
  ref = reference_evaluation(gt, predictions, iou_thresh=0.3)
  ap = wf.evaluate_wider_face(gt, predictions, iou_threshold=0.3, score_arithmetic="float64")
  assert ap == pytest.approx({s: r[3] for s, r in ref.items()}, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------- files and errors
def test_write_and_load_predictions_round_trip(tmp_path):
  pred_dir = tmp_path / "pred"
  data = {**PREDICTIONS, "1--Handshaking": {"1_Handshaking_c.jpg": np.zeros((0, 5))}}
  assert wf.write_predictions(pred_dir, data) == 3
  text = (pred_dir / "0--Parade" / "0_Parade_b.txt").read_text().splitlines()
  assert text[:3] == ["0_Parade_b", "3", "0.0 0.0 19.0 19.0 2.5"]  # sorted by score
  assert text[3] == "53.2 50.0 9.0 9.0 1.5"
  empty_file = pred_dir / "1--Handshaking" / "1_Handshaking_c.txt"
  assert empty_file.read_text() == "1_Handshaking_c.jpg\n0\n"
  loaded = wf.load_predictions(pred_dir)
  assert sorted(loaded) == ["0--Parade", "1--Handshaking"]
  a = PREDICTIONS["0--Parade"]["0_Parade_a"]
  np.testing.assert_array_equal(loaded["0--Parade"]["0_Parade_a"],
                                a[np.argsort(-a[:, 4], kind="stable")])
  assert loaded["1--Handshaking"]["1_Handshaking_c"].shape == (0, 5)
  assert wf.evaluate_wider_face(fixture_gt(), loaded) == pytest.approx(EXPECTED, abs=1e-12)
  with pytest.raises(ValueError, match="non-finite"):
    wf.write_predictions(pred_dir, {"e": {"i": np.array([[0, 0, 1, 1, np.nan]])}})


@pytest.mark.parametrize("content, message", [
    ("img\n2\n1 2 3 4 0.5\n", "line 2 announces 2 box"),
    ("img\ntwo\n", ":2: expected the number of boxes"),
    ("img\n1\n1 2 3 0.5\n", ":3: expected 5 finite numbers"),
    ("img\n", "needs the image name on line 1"),
])
def test_bad_prediction_files_name_file_and_line(tmp_path, content, message):
  path = tmp_path / "e" / "img.txt"
  path.parent.mkdir()
  path.write_text(content)
  with pytest.raises(ValueError, match=message) as info:
    wf.load_predictions(tmp_path)
  assert str(path) in str(info.value)


def test_ground_truth_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    wf.load_ground_truth(tmp_path / "nope")
  root = write_ground_truth(tmp_path / "gt")
  (root / "wider_medium_val.mat").unlink()
  with pytest.raises(FileNotFoundError, match="wider_medium_val.mat"):
    wf.load_ground_truth(root)
  savemat(root / "wider_medium_val.mat", {"something": np.zeros(2)})
  with pytest.raises(ValueError,
                     match=r"wider_medium_val.mat: missing variable\(s\) \['gt_list'\]"):
    wf.load_ground_truth(root)
  bad = {**SUBSETS, "medium": [[[1, 4], [1]], [[1]]]}  # image A has 3 faces
  root = write_ground_truth(tmp_path / "gt2", subsets=bad)
  with pytest.raises(ValueError,
                     match=r"0--Parade/0_Parade_a has 3 faces but lists face indices \[1, 4\]"):
    wf.load_ground_truth(root)
  (tmp_path / "gt3").mkdir()
  (tmp_path / "gt3" / wf.GT_FILE).write_text("not a mat file")
  with pytest.raises(ValueError, match="not a readable MATLAB .mat file"):
    wf.load_ground_truth(tmp_path / "gt3")
  with pytest.raises(ValueError, match=r"predictions of 0--Parade/0_Parade_a must be \[n, 5\]"):
    wf.evaluate_wider_face(fixture_gt(), {"0--Parade": {"0_Parade_a": np.zeros((2, 4))}})


def test_cli_prints_official_ap(tmp_path):
  gt_dir = write_ground_truth(tmp_path / "ground_truth")
  wf.write_predictions(tmp_path / "pred", PREDICTIONS)
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run([sys.executable, "-m", "jaxdet.evaluation.wider_face", "--gt", str(gt_dir),
                         "--pred", str(tmp_path / "pred")], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert "easy   AP 0.6667  (3 faces)" in lines
  assert "medium AP 0.6500  (4 faces)" in lines
  assert "hard   AP 0.6735  (7 faces)" in lines
  assert "1 of 3 images have no prediction file" in proc.stderr  # image C
  assert "1--Handshaking/1_Handshaking_c.txt" in proc.stderr


def test_cli_errors_exit_2_and_name_the_file(tmp_path, capsys):
  gt_dir = write_ground_truth(tmp_path / "ground_truth")
  (gt_dir / "wider_hard_val.mat").unlink()
  wf.write_predictions(tmp_path / "pred", PREDICTIONS)
  assert wf.main(["--gt", str(gt_dir), "--pred", str(tmp_path / "pred")]) == 2
  err = capsys.readouterr().err
  assert "error:" in err and str(gt_dir / "wider_hard_val.mat") in err
  write_ground_truth(gt_dir)
  assert wf.main(["--gt", str(gt_dir), "--pred", str(tmp_path / "missing")]) == 2
  assert str(tmp_path / "missing") in capsys.readouterr().err
