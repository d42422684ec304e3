"""WIDER FACE evaluation: easy / medium / hard AP as computed by the official MATLAB ``eval_tools``.

WIDER FACE (Yang et al., "WIDER FACE: A Face Detection Benchmark", CVPR 2016) reports one AP per
validation subset, Easy / Medium / Hard; MTGAN (Bai et al., IJCV 2019, §4.1 "WIDER FACE dataset",
§4.4.2 and Table 8) reports these three numbers (e.g. SRFACE 0.944 / 0.933 / 0.873, MTGAN
0.959 / 0.948 / 0.893). The numbers in such tables come from the official evaluation code
(``eval_tools.zip`` of the WIDER FACE site: ``wider_eval.m``, ``read_pred.m``, ``norm_score.m``,
``evaluation.m``, ``boxoverlap.m``, ``plot/VOCap.m``); this module re-implements that protocol
(written from its description below, vectorised; the test suite checks it against a literal
loop-by-loop transcription of the same steps).

Ground truth (``load_ground_truth``), from ``eval_tools/ground_truth``:

* ``wider_face_val.mat``: ``event_list`` (one name per event, e.g. ``0--Parade``), ``file_list``
  (per event, the image names without ``.jpg``) and ``face_bbx_list`` (per event and image, the
  faces as ``[x, y, w, h]`` rows);
* ``wider_easy_val.mat`` / ``wider_medium_val.mat`` / ``wider_hard_val.mat``: ``gt_list`` (per
  event and image, the 1-based indices of the faces that *count* in that subset; every other face
  of the image is "ignore" in that subset).

Predictions (``load_predictions`` / ``write_predictions``): one text file ``EVENT/IMAGE.txt`` per
image: line 1 the image name (not read by the official code), line 2 the number of boxes, then one
``x y w h score`` line per box.

Protocol (``evaluation.m`` and the functions it calls), for one subset:

1. *Reading* (``read_pred.m``): only the images listed in the ground truth are read; a missing file
   means "no predictions for that image". Each image's predictions are sorted by descending score
   (MATLAB ``sort(..., 'descend')``, stable: ties keep file order; equal scores always pass a
   threshold together, so their order cannot change the result).
2. *Score normalisation* (``norm_score.m``): ``s' = (s - min) / (max - min)`` with ``min`` / ``max``
   over *all* predictions read (every image of every event, whichever subset). ``norm_score.m``
   starts from ``realmin('single')`` / ``realmax('single')``, so MATLAB does this arithmetic in
   single precision. ``score_arithmetic="matlab"`` (default) reproduces that: float32 ``min``,
   ``max`` (the initial values included), difference and quotient, the result compared with the
   float64 thresholds. ``"float64"`` uses the exact min / max in double precision, like the common
   Python port (wondervictor/WiderFace-Evaluation, whose initial values 0 / 1 give the same min /
   max for scores in ``[0, 1]``). The two differ only where float32 rounding moves a normalised
   score across a threshold, and when every score is below ``realmin('single')`` (~1.2e-38, e.g.
   all-negative logits: MATLAB's max then stays at that initial value). If every score is equal,
   ``max - min = 0`` and all normalised scores are NaN (0 / 0): no prediction passes any threshold
   and AP is 0, as in the official code (a warning is issued).
3. *Matching* (``image_evaluation`` in ``evaluation.m``), per image with at least one face and one
   prediction: boxes become ``x2 = x + w``, ``y2 = y + h``; the IoU (``boxoverlap.m``) measures
   sizes with the inclusive "+1" pixel convention, ``(x2 - x1 + 1) * (y2 - y1 + 1)``, so a face
   ``[x, y, w, h]`` has area ``(w + 1)(h + 1)``; an intersection with ``x2 - x1 + 1 <= 0`` (or
   in y) is 0. For each prediction in score order, its best face is the one of largest IoU over
   *all* faces of the image (first one on a tie); if that IoU ``>= iou_threshold``:

   * the face is ignored in this subset: the prediction is dropped (neither TP nor FP);
   * the face counts and has not been found yet: it is marked found (the prediction is a TP);
   * the face counts and was already found: nothing (the prediction is a FP, a duplicate).

   Otherwise the prediction is a FP. Faces already found stay candidates (no exclusion: a second
   prediction on a found face is a FP even if another face overlaps it almost as much). Images
   without faces are skipped entirely: their predictions are *not* FPs (official behaviour).
4. *Per-image PR* (``image_pr_info``): for ``t = 1..1000`` and ``thresh = 1 - t/1000`` (0.999 down
   to 0), the predictions with normalised score ``>= thresh`` (a prefix of the sorted list) give
   ``proposals(t)`` = how many of them were not dropped and ``found(t)`` = how many counting faces
   they found.
5. *Dataset PR* (``dataset_pr_info``): sums over all images; ``precision(t) = found / proposals``
   (0 / 0 = NaN where nothing was proposed yet), ``recall(t) = found / faces``, where ``faces`` is
   the number of counting faces of the subset over *all* images (with or without predictions).
6. *AP* (``plot/VOCap.m``, called by ``wider_plot.m``): VOC all-point AP, the area under the
   monotone precision envelope with recall padded by 0 and 1 and precision by 0 and 0; the
   envelope ignores NaN like MATLAB's ``max`` (``np.fmax``). Predictions whose normalised scores
   fall between the same two thresholds form a single PR point.

A subset without counting faces has AP NaN. Run the official evaluation from a shell with
``python -m jaxdet.evaluation.wider_face --gt GROUND_TRUTH_DIR --pred PRED_DIR``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SUBSETS = ("easy", "medium", "hard")
THRESHOLD_STEPS = 1000  # ``thresh_num`` of evaluation.m
GT_FILE = "wider_face_val.mat"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def subset_file(subset: str) -> str:
  """File name of a subset's ``gt_list`` in ``eval_tools/ground_truth`` (``wider_hard_val.mat``)."""
  return f"wider_{subset}_val.mat"


@dataclasses.dataclass
class WiderFaceGroundTruth:
  """The content of the official ground-truth ``.mat`` files (see the module docstring).

  Attributes:
    events: event names (``event_list``), e.g. ``"0--Parade"``.
    images: per event, the image names without extension (``file_list``).
    boxes: per event and image, ``float64 [n, 4]`` faces ``[x, y, w, h]`` (``face_bbx_list``).
    subsets: subset name -> per event and image, ``int64 [k]`` 1-based indices of the faces that
      count in that subset (``gt_list``); every other face of the image is ignored there.
    origin: where it was read from (used in error messages).
  """

  events: list[str]
  images: list[list[str]]
  boxes: list[list[np.ndarray]]
  subsets: dict[str, list[list[np.ndarray]]]
  origin: str = "ground truth"

  def __post_init__(self):
    self.events = [str(e) for e in self.events]
    if len(self.images) != len(self.events) or len(self.boxes) != len(self.events):
      raise ValueError(f"{self.origin}: {len(self.events)} events, but file_list has "
                       f"{len(self.images)} and face_bbx_list {len(self.boxes)} entries.")
    if len(set(self.events)) != len(self.events):
      raise ValueError(f"{self.origin}: duplicate event names in event_list.")
    images, boxes = [], []
    for e, (names, bbx) in enumerate(zip(self.images, self.boxes)):
      names = [str(n) for n in names]
      if len(bbx) != len(names):
        raise ValueError(f"{self.origin}: event {self.events[e]!r} lists {len(names)} images but "
                         f"{len(bbx)} face_bbx_list entries.")
      rows = []
      for name, b in zip(names, bbx):
        b = np.asarray(b, np.float64)
        if b.size % 4 or (b.ndim == 2 and b.size and b.shape[1] != 4):
          raise ValueError(f"{self.origin}: faces of {self.events[e]}/{name} must be [n, 4] "
                           f"[x, y, w, h] rows, got shape {b.shape}.")
        b = b.reshape(-1, 4)
        if not np.isfinite(b).all():
          raise ValueError(f"{self.origin}: faces of {self.events[e]}/{name} are not finite.")
        rows.append(b)
      images.append(names)
      boxes.append(rows)
    self.images, self.boxes = images, boxes
    subsets = {}
    for subset, per_event in self.subsets.items():
      where = f"{self.origin}: subset {subset!r}"
      if len(per_event) != len(self.events):
        raise ValueError(f"{where} has {len(per_event)} events, the ground truth "
                         f"{len(self.events)}.")
      out = []
      for e, per_image in enumerate(per_event):
        if len(per_image) != len(self.images[e]):
          raise ValueError(f"{where}: event {self.events[e]!r} has {len(per_image)} images, the "
                           f"ground truth {len(self.images[e])}.")
        row = []
        for name, faces, idx in zip(self.images[e], self.boxes[e], per_image):
          idx = np.asarray(idx, np.float64).reshape(-1)
          if not np.all(np.isfinite(idx) & (idx == np.round(idx))):
            raise ValueError(f"{where}: indices of {self.events[e]}/{name} are not integers.")
          idx = idx.astype(np.int64)
          if idx.size and (idx.min() < 1 or idx.max() > len(faces)):
            raise ValueError(f"{where}: {self.events[e]}/{name} has {len(faces)} faces but lists "
                             f"face indices {idx.tolist()} (1-based).")
          row.append(idx)
        out.append(row)
      subsets[str(subset)] = out
    self.subsets = subsets

  def keys(self) -> list[tuple[str, str]]:
    """``(event, image)`` of every image, in ground-truth order."""
    return [(ev, name) for ev, names in zip(self.events, self.images) for name in names]

  def num_faces(self, subset: str) -> int:
    """Faces that count in ``subset`` (the recall denominator: ``count_face`` of evaluation.m)."""
    return int(sum(len(idx) for per_image in self.subsets[subset] for idx in per_image))


# --------------------------------------------------------------------------- reading .mat files
def _cells(value, what: str) -> list:
  a = np.asarray(value)
  if a.dtype != object:
    raise ValueError(f"{what}: expected a MATLAB cell array, got {a.dtype} {a.shape}.")
  if a.ndim > 2 or (a.ndim == 2 and min(a.shape) > 1):
    raise ValueError(f"{what}: expected a cell vector, got a {a.shape} cell array.")
  return list(a.ravel(order="F"))


def _text(value, what: str) -> str:
  if isinstance(value, str):
    return value
  a = np.asarray(value)
  if a.dtype == object and a.size == 1:
    return _text(a.ravel()[0], what)
  if a.dtype.kind != "U":
    raise ValueError(f"{what}: expected a string, got {a.dtype} {a.shape}.")
  return "".join(str(v) for v in a.ravel())


def _loadmat(path: Path, keys: Sequence[str]) -> dict:
  from scipy.io import loadmat

  if not path.is_file():
    raise FileNotFoundError(
        f"WIDER FACE ground-truth file not found: '{path}'. Hint: --gt is the 'ground_truth' "
        f"folder of the official eval_tools, holding {GT_FILE} and "
        f"{', '.join(subset_file(s) for s in SUBSETS)}.")
  try:
    data = loadmat(str(path))
  except Exception as e:  # noqa: BLE001 - scipy raises several types for unreadable files
    raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e}).") from e
  missing = [k for k in keys if k not in data]
  if missing:
    found = sorted(k for k in data if not k.startswith("__"))
    raise ValueError(f"{path}: missing variable(s) {missing}; found {found}.")
  return data


def load_ground_truth(gt_dir, subsets: Sequence[str] = SUBSETS) -> WiderFaceGroundTruth:
  """Reads the official ground truth (``wider_face_val.mat`` and ``wider_{subset}_val.mat``).

  Args:
    gt_dir: the ``ground_truth`` folder of the official ``eval_tools`` (or the path of its
      ``wider_face_val.mat``).
    subsets: which ``wider_{subset}_val.mat`` files to read (``gt_list`` of each).
  Raises:
    FileNotFoundError naming the missing file; ValueError naming the file and the variable at
    fault (a subset whose ``file_list`` / ``event_list`` differ from ``wider_face_val.mat``
    included).
  """
  gt_dir = Path(gt_dir)
  if gt_dir.is_file():
    gt_dir = gt_dir.parent
  elif not gt_dir.is_dir():
    raise FileNotFoundError(f"WIDER FACE ground-truth folder not found: '{gt_dir}' (expected the "
                            f"'ground_truth' folder of the official eval_tools with {GT_FILE}).")
  path = gt_dir / GT_FILE
  data = _loadmat(path, ("event_list", "file_list", "face_bbx_list"))
  events = [_text(e, f"{path}: event_list{{{i + 1}}}")
            for i, e in enumerate(_cells(data["event_list"], f"{path}: event_list"))]
  file_cells = _cells(data["file_list"], f"{path}: file_list")
  bbx_cells = _cells(data["face_bbx_list"], f"{path}: face_bbx_list")
  if not len(events) == len(file_cells) == len(bbx_cells):
    raise ValueError(f"{path}: event_list, file_list and face_bbx_list have different lengths "
                     f"({len(events)}, {len(file_cells)}, {len(bbx_cells)}).")
  images, boxes = [], []
  for i, (fc, bc) in enumerate(zip(file_cells, bbx_cells)):
    names = [_text(n, f"{path}: file_list{{{i + 1}}}{{{j + 1}}}")
             for j, n in enumerate(_cells(fc, f"{path}: file_list{{{i + 1}}}"))]
    images.append(names)
    boxes.append(_cells(bc, f"{path}: face_bbx_list{{{i + 1}}}"))
  subset_lists = {}
  for subset in subsets:
    spath = gt_dir / subset_file(subset)
    sdata = _loadmat(spath, ("gt_list",))
    for key, ref in (("event_list", events), ("file_list", images)):
      if key not in sdata:
        continue
      cells = _cells(sdata[key], f"{spath}: {key}")
      other = ([_text(c, f"{spath}: {key}") for c in cells] if key == "event_list" else
               [[_text(n, f"{spath}: {key}") for n in _cells(c, f"{spath}: {key}")] for c in cells])
      if other != ref:
        raise ValueError(f"{spath}: {key} differs from the one of {path}; both must come from the "
                         "same eval_tools release.")
    per_event = _cells(sdata["gt_list"], f"{spath}: gt_list")
    subset_lists[subset] = [_cells(c, f"{spath}: gt_list{{{i + 1}}}")
                            for i, c in enumerate(per_event)]
  return WiderFaceGroundTruth(events, images, boxes, subset_lists, origin=str(gt_dir))


# --------------------------------------------------------------------------- prediction files
def _strip_image_extension(name: str) -> str:
  root, ext = os.path.splitext(name)
  return root if ext.lower() in _IMAGE_EXTENSIONS else name


def read_prediction_file(path) -> np.ndarray:
  """One ``EVENT/IMAGE.txt`` file -> ``float64 [n, 5]`` rows ``x y w h score`` in file order.

  Line 1 (the image name) is not interpreted, as in ``read_pred.m``. Errors name the file and line.
  """
  path = Path(path)
  lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
  if len(lines) < 2:
    raise ValueError(f"{path}: a prediction file needs the image name on line 1 and the number "
                     f"of boxes on line 2; the file has {len(lines)} line(s).")
  try:
    n = int(lines[1].strip())
  except ValueError:
    n = -1
  if n < 0:
    raise ValueError(f"{path}:2: expected the number of boxes (an integer >= 0), "
                     f"got {lines[1].strip()!r}.")
  body = lines[2:]
  while body and not body[-1].strip():
    body.pop()
  if len(body) != n:
    raise ValueError(f"{path}: line 2 announces {n} box(es) but {len(body)} box line(s) follow.")
  rows = np.zeros((n, 5), np.float64)
  for k, line in enumerate(body):
    parts = line.split()
    try:
      values = [float(p) for p in parts]
    except ValueError:
      values = []
    if len(values) != 5 or not all(math.isfinite(v) for v in values):
      raise ValueError(f"{path}:{k + 3}: expected 5 finite numbers 'x y w h score', "
                       f"got {line.strip()!r}.")
    rows[k] = values
  return rows


def load_predictions(pred_dir) -> dict[str, dict[str, np.ndarray]]:
  """Reads the official layout ``pred_dir/EVENT/IMAGE.txt`` -> ``{event: {image: [n, 5]}}``.

  Every ``*.txt`` of every event folder is read (``x y w h score`` rows in file order; the
  evaluation sorts them). Images are keyed by file name without ``.txt`` (as ``read_pred.m`` looks
  them up from ``file_list``), events by folder name.
  """
  pred_dir = Path(pred_dir)
  if not pred_dir.is_dir():
    raise FileNotFoundError(f"WIDER FACE prediction folder not found: '{pred_dir}' (expected "
                            "one folder per event holding one IMAGE.txt per image).")
  out: dict[str, dict[str, np.ndarray]] = {}
  for event_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
    if event_dir.name.startswith("."):
      continue
    files = sorted(p for p in event_dir.iterdir() if p.suffix == ".txt" and p.is_file())
    out[event_dir.name] = {p.stem: read_prediction_file(p) for p in files}
  if not any(out.values()):
    raise FileNotFoundError(f"No prediction files in '{pred_dir}': expected the official layout "
                            "EVENT/IMAGE.txt (e.g. 0--Parade/0_Parade_marchingband_1_465.txt).")
  return out


def _as_rows(value, where: str) -> np.ndarray:
  rows = np.asarray(value, np.float64)
  if rows.size == 0:
    return np.zeros((0, 5), np.float64)
  if rows.ndim != 2 or rows.shape[1] != 5:
    raise ValueError(f"predictions of {where} must be [n, 5] rows [x, y, w, h, score], "
                     f"got shape {rows.shape}.")
  if not np.isfinite(rows).all():
    raise ValueError(f"predictions of {where} contain non-finite values.")
  return rows


def write_predictions(pred_dir, detections: Mapping[str, Mapping[str, object]]) -> int:
  """Writes ``{event: {image: [n, 5] x y w h score}}`` in the official layout; returns #files.

  ``pred_dir/EVENT/IMAGE.txt``: line 1 the image name as given, line 2 ``n``, then ``n`` lines
  ``x y w h score`` in descending score order (stable), each number written with Python's
  shortest round-trip ``repr`` (reading it back gives the same float64). ``IMAGE`` loses a
  trailing ``.jpg`` / ``.png`` so the file name matches ``file_list``. Sorting here makes tools that
  do not sort (the common Python port) agree with the official ``read_pred.m``. Files of images not
  in ``detections`` are left alone; write every image (empty arrays too) for a complete set.
  """
  pred_dir = Path(pred_dir)
  count = 0
  for event, per_image in detections.items():
    event = str(event)
    if not event or "/" in event or event in (".", ".."):
      raise ValueError(f"write_predictions: invalid event name {event!r}.")
    (pred_dir / event).mkdir(parents=True, exist_ok=True)
    for image, value in per_image.items():
      image = str(image)
      rows = _as_rows(value, f"{event}/{image}")
      rows = rows[np.argsort(-rows[:, 4], kind="stable")]
      stem = _strip_image_extension(image)
      if not stem or "/" in stem:
        raise ValueError(f"write_predictions: invalid image name {image!r} in event {event!r}.")
      lines = [image, str(len(rows))]
      lines += [" ".join(repr(float(v)) for v in row) for row in rows]
      (pred_dir / event / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
      count += 1
  return count


# --------------------------------------------------------------------------- the protocol
def _iou_plus_one(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
  """``boxoverlap.m``: IoU ``[P, G]`` with inclusive "+1" sizes; empty intersections are 0."""
  x1 = np.maximum(pred_xyxy[:, None, 0], gt_xyxy[None, :, 0])
  y1 = np.maximum(pred_xyxy[:, None, 1], gt_xyxy[None, :, 1])
  x2 = np.minimum(pred_xyxy[:, None, 2], gt_xyxy[None, :, 2])
  y2 = np.minimum(pred_xyxy[:, None, 3], gt_xyxy[None, :, 3])
  w = x2 - x1 + 1.0
  h = y2 - y1 + 1.0
  inter = w * h
  area_p = (pred_xyxy[:, 2] - pred_xyxy[:, 0] + 1.0) * (pred_xyxy[:, 3] - pred_xyxy[:, 1] + 1.0)
  area_g = (gt_xyxy[:, 2] - gt_xyxy[:, 0] + 1.0) * (gt_xyxy[:, 3] - gt_xyxy[:, 1] + 1.0)
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = inter / (area_p[:, None] + area_g[None, :] - inter)
  iou[(w <= 0) | (h <= 0)] = 0.0
  return iou


def _xyxy(xywh: np.ndarray) -> np.ndarray:
  out = xywh[:, :4].copy()
  out[:, 2] += out[:, 0]
  out[:, 3] += out[:, 1]
  return out


def _normalise(scores: list[np.ndarray], score_arithmetic: str) -> list[np.ndarray]:
  """``norm_score.m`` over all images' (sorted) raw scores; see the module docstring."""
  nonempty = [s for s in scores if len(s)]
  if not nonempty:
    return scores
  lo = min(float(s.min()) for s in nonempty)
  hi = max(float(s.max()) for s in nonempty)
  if score_arithmetic == "matlab":
    f32 = np.float32
    hi32 = f32(max(hi, float(np.finfo(f32).tiny)))  # max(realmin('single'), ...) is single
    lo32 = f32(min(lo, float(np.finfo(f32).max)))
    span = hi32 - lo32
    if span == 0:
      out = [np.full(s.shape, np.nan) for s in scores]
    else:
      out = [((s.astype(f32) - lo32) / span).astype(np.float64) for s in scores]
  elif score_arithmetic == "float64":
    span = hi - lo
    out = [np.full(s.shape, np.nan) if span == 0 else (s - lo) / span for s in scores]
  else:
    raise ValueError(f"score_arithmetic must be 'matlab' or 'float64', got {score_arithmetic!r}.")
  if span == 0:
    warnings.warn("WIDER FACE evaluation: every prediction has the same score, so the min-max "
                  "normalisation is 0/0 and (as in the official code) no prediction passes any "
                  "threshold: AP = 0.", RuntimeWarning, stacklevel=3)
  return out


def thresholds(steps: int = THRESHOLD_STEPS) -> np.ndarray:
  """``1 - t/steps`` for ``t = 1..steps`` (float64, same operations as ``image_pr_info``)."""
  return 1.0 - np.arange(1, steps + 1, dtype=np.float64) / steps


def _check_predictions(predictions) -> None:
  if not isinstance(predictions, Mapping):
    raise ValueError("predictions must be a mapping {event: {image: [n, 5] rows}}, got "
                     f"{type(predictions).__name__}.")
  for event, per_image in predictions.items():
    if not isinstance(per_image, Mapping):
      raise ValueError(f"predictions[{event!r}] must be a mapping {{image: [n, 5] rows}}, got "
                       f"{type(per_image).__name__}.")


def missing_predictions(gt: WiderFaceGroundTruth, predictions) -> list[tuple[str, str]]:
  """``(event, image)`` of the ground-truth images without an entry in ``predictions``
  (``read_pred.m`` prints "Can not find the prediction file" for these and evaluates them as
  images without predictions)."""
  return [(ev, name) for ev, name in gt.keys() if name not in predictions.get(ev, {})]


def unmatched_predictions(gt: WiderFaceGroundTruth, predictions) -> list[tuple[str, str]]:
  """``(event, image)`` of prediction entries that name no ground-truth image (never read)."""
  known = set(gt.keys())
  return [(str(ev), str(name)) for ev, per_image in predictions.items() for name in per_image
          if (str(ev), str(name)) not in known]


def wider_face_pr_curves(gt: WiderFaceGroundTruth, predictions, *, iou_threshold: float = 0.5,
                         score_arithmetic: str = "matlab") -> dict[str, dict]:
  """The official PR curves of every subset of ``gt`` (steps 1-5 of the module docstring).

  Args:
    gt: ``WiderFaceGroundTruth`` (``load_ground_truth``).
    predictions: ``{event: {image: [n, 5] rows [x, y, w, h, raw score]}}``; images missing here
      have no predictions; entries naming no ground-truth image are not read.
    iou_threshold: ``IoU_thresh`` of evaluation.m (a match needs IoU ``>=`` it).
    score_arithmetic: ``"matlab"`` or ``"float64"`` normalisation (module docstring, step 2).
  Returns:
    ``{subset: {"thresholds", "precision", "recall" (float64 [1000]), "proposals", "found"
    (int64 [1000], summed over images), "faces" (int)}}``; index ``t - 1`` is threshold
    ``1 - t/1000``.
  """
  _check_predictions(predictions)
  # Step 1: read the predictions of the ground-truth images, sorted by descending score (stable).
  entries = []
  for e, event in enumerate(gt.events):
    per_image = predictions.get(event, {})
    for j, name in enumerate(gt.images[e]):
      rows = _as_rows(per_image.get(name, np.zeros((0, 5))), f"{event}/{name}")
      entries.append((e, j, rows[np.argsort(-rows[:, 4], kind="stable")]))
  # Step 2: min-max normalisation over everything read.
  norm = _normalise([rows[:, 4] for _, _, rows in entries], score_arithmetic)
  thr = thresholds()
  neg_thr = -thr
  curves = {s: {"proposals": np.zeros(len(thr), np.int64), "found": np.zeros(len(thr), np.int64)}
            for s in gt.subsets}
  for (e, j, rows), scores in zip(entries, norm):
    faces = gt.boxes[e][j]
    if len(faces) == 0 or len(rows) == 0:
      continue  # evaluation.m: `if isempty(gt_bbx) || isempty(pred_info), continue`
    # Step 3 (subset-independent part): best face of every prediction.
    iou = _iou_plus_one(_xyxy(rows), _xyxy(faces))
    best = np.argmax(iou, axis=1)
    matched = iou[np.arange(len(rows)), best] >= iou_threshold
    # Step 4: predictions above each threshold form a prefix of the sorted list.
    if np.isnan(scores).any():  # 0/0 normalisation: no prediction passes (NaN >= t is false)
      n_above = np.zeros(len(thr), np.int64)
    else:
      n_above = np.searchsorted(-scores, neg_thr, side="right")
    has = n_above > 0
    last = np.maximum(n_above - 1, 0)
    for subset, per_event in gt.subsets.items():
      counts = np.zeros(len(faces), bool)
      counts[per_event[e][j] - 1] = True
      dropped = matched & ~counts[best]
      hit = matched & counts[best]
      first_hit = np.zeros(len(rows), bool)
      if hit.any():
        hit_rows = np.flatnonzero(hit)
        _, first = np.unique(best[hit_rows], return_index=True)
        first_hit[hit_rows[first]] = True
      found = np.cumsum(first_hit)
      proposals = np.cumsum(~dropped)
      curves[subset]["proposals"] += np.where(has, proposals[last], 0)
      curves[subset]["found"] += np.where(has, found[last], 0)
  # Step 5: dataset PR.
  out = {}
  for subset, c in curves.items():
    faces = gt.num_faces(subset)
    with np.errstate(divide="ignore", invalid="ignore"):
      precision = c["found"] / c["proposals"].astype(np.float64)
      recall = c["found"] / np.float64(faces)
    out[subset] = {"thresholds": thr, "precision": precision, "recall": recall,
                   "proposals": c["proposals"], "found": c["found"], "faces": faces}
  return out


def voc_ap_all_point(recall, precision) -> float:
  """``plot/VOCap.m``: area under the monotone precision envelope (NaN precision ignored by the
  envelope as MATLAB's ``max`` does)."""
  mrec = np.concatenate([[0.0], np.asarray(recall, np.float64).reshape(-1), [1.0]])
  mpre = np.concatenate([[0.0], np.asarray(precision, np.float64).reshape(-1), [0.0]])
  mpre = np.fmax.accumulate(mpre[::-1])[::-1]
  i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
  return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def evaluate_wider_face(gt: WiderFaceGroundTruth, predictions, *, iou_threshold: float = 0.5,
                        score_arithmetic: str = "matlab") -> dict[str, float]:
  """Official WIDER FACE AP of every subset: ``{"easy": AP, "medium": AP, "hard": AP}``.

  ``predictions``: ``{event: {image: [n, 5] rows [x, y, w, h, raw score]}}`` (image names without
  extension, as in ``gt.images``). The protocol is the module docstring's (steps 1-6).
  """
  curves = wider_face_pr_curves(gt, predictions, iou_threshold=iou_threshold,
                                score_arithmetic=score_arithmetic)
  return {s: voc_ap_all_point(c["recall"], c["precision"]) for s, c in curves.items()}


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxdet.evaluation.wider_face",
      description="WIDER FACE val easy / medium / hard AP with the official eval_tools protocol.")
  parser.add_argument("--gt", required=True,
                      help=f"eval_tools 'ground_truth' folder ({GT_FILE}, wider_*_val.mat)")
  parser.add_argument("--pred", required=True, help="predictions: PRED/EVENT/IMAGE.txt")
  parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
  parser.add_argument("--score-arithmetic", choices=("matlab", "float64"), default="matlab",
                      help="score normalisation arithmetic (default: as the MATLAB code)")
  args = parser.parse_args(argv)
  try:
    gt = load_ground_truth(args.gt)
    predictions = load_predictions(args.pred)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  missing = missing_predictions(gt, predictions)
  if missing:
    shown = ", ".join(f"{ev}/{name}.txt" for ev, name in missing[:3])
    print(f"warning: {len(missing)} of {len(gt.keys())} images have no prediction file (evaluated "
          f"as without predictions), e.g. {shown}", file=sys.stderr)
  extra = unmatched_predictions(gt, predictions)
  if extra:
    print(f"warning: {len(extra)} prediction file(s) name no ground-truth image and are not read, "
          f"e.g. {extra[0][0]}/{extra[0][1]}.txt", file=sys.stderr)
  try:
    ap = evaluate_wider_face(gt, predictions, iou_threshold=args.iou,
                             score_arithmetic=args.score_arithmetic)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"WIDER FACE val, official protocol (IoU >= {args.iou:g}): {len(gt.keys())} images")
  for subset in ap:
    print(f"{subset:<6} AP {ap[subset]:.4f}  ({gt.num_faces(subset)} faces)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
