"""MTGAN inference on a baseline's RoIs (§3.3, §4.2) and the classification accuracy of Table 9.

Inference (``MTGANExperiment.evaluate``), per val image:

1. the baseline's top ``mtgan.test_rois`` detections are the RoIs (100 per COCO image, 600 per
   WIDER FACE image, §4.2), with their baseline score and class;
2. each RoI is cropped as in training (``jaxdet.data.roi_crops.crop_hr_lr``): the LR crop goes
   through G (or the bilinear x4 of SBU; plain R-CNN feeds the HR crop itself), then D;
3. D's softmax over K + 1 classes scores each RoI for every class, D's regression refines the RoI
   (Fast R-CNN parameterisation with ``mtgan.box_weights``), ``mtgan.ensemble`` multiplies the
   score of the baseline's class by the baseline's score (Table 6);
4. per-class NMS (``eval.nms_iou``), score threshold and the top ``eval.max_detections``.

Crops of consecutive images share G/D batches of exactly ``eval.crop_batch`` (only the very last
batch is padded), so an image with few RoIs does not cost a whole padded batch.

Table 9 (``--mode=accuracy``): every baseline RoI of the val images is labelled against the
ground truth with the mining rule (``roi_crops.assign_rois``: positive IoU >= ``positive_iou``
with the class of that object, negative IoU < ``negative_iou``, the rest ignored); a network is
right on a positive when its arg-max class is the object's class, on a negative when it is
background. D's class is the arg-max of its K + 1 softmax. The baseline has no background output:
its class counts when its score is at least ``mtgan.accuracy_baseline_threshold``, otherwise it
says background. The table prints Pos. / Neg. / All accuracy for the baseline, this run and the
finished MTGAN runs of ``mtgan.compare_runs`` (e.g. the SBU run on the same baseline).
"""
from __future__ import annotations

import collections
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.data import roi_crops
from jaxdet.ops import boxes as box_ops


class ImageRois(NamedTuple):
  """One val image's baseline RoIs and what D says about them."""
  example: object          # DetectionExample (image, ground truth)
  baseline: list           # the baseline's COCO-style results for these RoIs (score order)
  rois: np.ndarray         # float32 [N, 4] xyxy, original pixels
  base_scores: np.ndarray  # float32 [N]
  base_classes: np.ndarray  # int [N] contiguous class of the baseline detection
  hr: np.ndarray           # uint8 [N, S, S, 3]
  lr: np.ndarray           # uint8 [N, S/s, S/s, 3]
  probs: np.ndarray | None = None   # float32 [N, K + 1] D's softmax (0 = background)
  deltas: np.ndarray | None = None  # float32 [N, 4] D's regression
  sr: np.ndarray | None = None      # uint8 [N, S, S, 3] D's input


def sr_label(sr: str) -> str:
  """The name of a run in the paper's tables, from ``mtgan.sr``."""
  return {"gan": "MTGAN", "bilinear": "SBU", "none": "Plain R-CNN"}[sr]


def baseline_rois(exp, source):
  """``ImageRois`` (without D's outputs) of every image of ``source`` with at least one RoI."""
  m = exp.config.mtgan
  dets = exp.baseline_detections(source, int(m.test_rois), float(m.test_score_threshold))
  class_of = {cid: k for k, cid in enumerate(exp.metadata()["categories"]["ids"])}
  for i in range(len(source)):
    ex = source[i]
    rs = sorted(dets.get(ex.image_id, []), key=lambda r: -r["score"])[: int(m.test_rois)]
    if not rs:
      continue
    rois = np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                      r["bbox"][1] + r["bbox"][3]] for r in rs], np.float32)
    hr, lr = roi_crops.crop_hr_lr(ex.image, rois, hr_size=int(m.hr_size), scale=int(m.scale))
    yield ImageRois(ex, rs, rois, np.array([r["score"] for r in rs], np.float32),
                    np.array([class_of[r["category_id"]] for r in rs]), hr, lr)


def refine(exp, state, items, *, keep_sr: bool = False):
  """Runs G and D over the crops of ``items`` (``ImageRois``) in batches of exactly
  ``eval.crop_batch`` crops that span images; yields each item with ``probs`` / ``deltas`` (and
  ``sr`` when ``keep_sr``) once all its crops are done, in input order."""
  b = int(exp.config.eval.crop_batch)
  waiting = collections.deque()   # [item, [outputs...], crops still missing]
  lr_buf, hr_buf, buffered = [], [], 0

  def run(n_take: int):
    nonlocal lr_buf, hr_buf, buffered
    lr, hr = np.concatenate(lr_buf), np.concatenate(hr_buf)
    lr_buf, hr_buf = [lr[n_take:]], [hr[n_take:]]
    buffered -= n_take
    lr, hr = lr[:n_take], hr[:n_take]
    pad = b - n_take
    if pad:
      lr = np.concatenate([lr, np.zeros((pad, *lr.shape[1:]), lr.dtype)])
      hr = np.concatenate([hr, np.zeros((pad, *hr.shape[1:]), hr.dtype)])
    out = [o[:n_take] for o in jax.device_get(exp.refine_crops(state, lr, hr))]
    at = 0
    for entry in waiting:
      if at == n_take:
        break
      k = min(entry[2], n_take - at)
      if k:
        entry[1].append([o[at:at + k] for o in out])
        entry[2] -= k
        at += k

  def done():
    while waiting and waiting[0][2] == 0:
      item, parts, _ = waiting.popleft()
      probs, deltas, sr = (np.concatenate([p[j] for p in parts]) for j in range(3))
      yield item._replace(probs=probs, deltas=deltas, sr=sr if keep_sr else None)

  for item in items:
    waiting.append([item, [], len(item.rois)])
    lr_buf.append(item.lr)
    hr_buf.append(item.hr)
    buffered += len(item.rois)
    while buffered >= b:
      run(b)
    yield from done()
  while buffered:
    run(min(b, buffered))
  yield from done()


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
  """Greedy NMS (host, small N): indices kept in descending score order."""
  order = np.argsort(-scores, kind="stable")
  keep = []
  while len(order):
    i = order[0]
    keep.append(int(i))
    rest = order[1:]
    if not len(rest):
      break
    x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
    y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
    x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
    y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    overlap = inter / np.maximum(area(boxes[i]) + area(boxes[rest]) - inter, 1e-9)
    order = rest[overlap <= iou]
  return keep


def detections(exp, item: ImageRois) -> list[dict]:
  """Steps 3-4 of the module docstring for one image: COCO-style results."""
  e, m = exp.config.eval, exp.config.mtgan
  ids = exp.metadata()["categories"]["ids"]
  ex = item.example
  boxes = np.asarray(box_ops.decode(jnp.asarray(item.deltas), jnp.asarray(item.rois),
                                    weights=tuple(m.box_weights)))
  boxes = np.clip(boxes, 0, [ex.width, ex.height, ex.width, ex.height])
  dets = []
  for k in range(len(ids)):
    score = item.probs[:, k + 1]
    if m.ensemble:
      score = np.where(item.base_classes == k, score * item.base_scores, 0.0)
    keep = np.nonzero(score > e.score_threshold)[0]
    for j in (keep[_nms(boxes[keep], score[keep], e.nms_iou)] if len(keep) else []):
      x1, y1, x2, y2 = (float(t) for t in boxes[j])
      dets.append({"image_id": ex.image_id, "category_id": ids[k], "score": float(score[j]),
                   "bbox": [x1, y1, x2 - x1, y2 - y1]})
  return sorted(dets, key=lambda d: -d["score"])[: e.max_detections]


# ------------------------------------------------------------------------------------ Table 9
def roi_labels(exp, item: ImageRois) -> np.ndarray:
  """Per RoI: class + 1 (positive), 0 (negative) or -1 (ignored), by the mining thresholds."""
  m, ex = exp.config.mtgan, item.example
  return roi_crops.assign_rois(item.rois, ex.boxes, ex.classes, gt_crowd=ex.is_crowd,
                               positive_iou=float(m.positive_iou),
                               negative_iou=float(m.negative_iou))["label"]


class AccuracyCounts:
  """Right / total over positive and negative RoIs (Table 9's Pos. / Neg. / All)."""

  def __init__(self):
    self.right = {"pos": 0, "neg": 0}
    self.total = {"pos": 0, "neg": 0}

  def add(self, labels: np.ndarray, predicted: np.ndarray) -> None:
    for kind, sel in (("pos", labels >= 1), ("neg", labels == 0)):
      self.total[kind] += int(sel.sum())
      self.right[kind] += int((predicted[sel] == labels[sel]).sum())

  def table_row(self) -> dict[str, float]:
    frac = lambda r, t: r / t if t else float("nan")  # noqa: E731
    return {"pos": frac(self.right["pos"], self.total["pos"]),
            "neg": frac(self.right["neg"], self.total["neg"]),
            "all": frac(sum(self.right.values()), sum(self.total.values())),
            "num_pos": self.total["pos"], "num_neg": self.total["neg"]}


def baseline_prediction(item: ImageRois, threshold: float) -> np.ndarray:
  """The baseline's class + 1 where its score >= threshold, else 0 (background)."""
  return np.where(item.base_scores >= threshold, item.base_classes + 1, 0)


def classification_accuracy(exp, runs: list[tuple[str, object, object]], source) -> dict:
  """Table 9 over the baseline RoIs of ``source``; ``runs`` = [(name, experiment, state)], all on
  ``exp``'s baseline. Returns ``{name: {pos, neg, all, num_pos, num_neg}}``, baseline first."""
  thr = float(exp.config.mtgan.accuracy_baseline_threshold)
  counts = {"Baseline": AccuracyCounts(), **{name: AccuracyCounts() for name, _, _ in runs}}
  items = list(baseline_rois(exp, source))
  labels = [roi_labels(exp, item) for item in items]
  for item, lab in zip(items, labels):
    counts["Baseline"].add(lab, baseline_prediction(item, thr))
  for name, run_exp, run_state in runs:
    for item, lab in zip(refine(run_exp, run_state, items), labels):
      counts[name].add(lab, np.argmax(item.probs, axis=1))
  return {name: c.table_row() for name, c in counts.items()}


def format_accuracy(table: dict, *, threshold: float) -> str:
  lines = [f"{'Method':<14} {'Acc. of Pos.':>12} {'Acc. of Neg.':>12} {'Acc. of All':>12}"]
  for name, row in table.items():
    lines.append(f"{name:<14} {row['pos']:>12.3f} {row['neg']:>12.3f} {row['all']:>12.3f}")
  first = next(iter(table.values()))
  lines.append(f"({first['num_pos']} positive and {first['num_neg']} negative RoIs; the "
               f"baseline says background below score {threshold:g})")
  return "\n".join(lines)


def accuracy_mode(exp, workdir: str) -> dict:
  """``--mode=accuracy``: Table 9 for the baseline, this run's latest checkpoint and
  ``mtgan.compare_runs``; printed and written to ``<workdir>/accuracy.json``."""
  from jaxdet.experiments.trained import load_trained
  from jaxdet.train import loop
  from jaxdet.train.config_check import ConfigError
  state = loop.restore_latest(exp, workdir, "accuracy")
  step = int(jax.device_get(state.step))
  runs = [(sr_label(exp.config.mtgan.sr), exp, state.experiment)]
  base = os.path.abspath(exp.config.mtgan.baseline_workdir)
  for other in exp.config.mtgan.compare_runs:
    trained = load_trained(other, mesh=exp.mesh, require_finished=False)
    if trained.config.get("experiment") != "mtgan":
      raise ConfigError(f"config.mtgan.compare_runs: {other!r} is a "
                        f"{trained.config.get('experiment')!r} run, not an MTGAN run.")
    theirs = os.path.abspath(trained.config.mtgan.baseline_workdir)
    if theirs != base:
      raise ConfigError(f"config.mtgan.compare_runs: {other!r} was trained on the baseline "
                        f"{theirs}, this run on {base}: Table 9 compares runs on one baseline.")
    name = sr_label(trained.config.mtgan.sr)
    if name in {n for n, _, _ in runs}:
      name = f"{name} ({os.path.basename(os.path.normpath(other))})"
    runs.append((name, trained.experiment, trained.state))
  table = classification_accuracy(exp, runs, exp.val_source)
  thr = float(exp.config.mtgan.accuracy_baseline_threshold)
  if jax.process_index() == 0:
    print(f"Table 9, classification accuracy on the baseline's RoIs of {len(exp.val_source)} val "
          f"images (step {step}):\n" + format_accuracy(table, threshold=thr), flush=True)
    with open(os.path.join(workdir, "accuracy.json"), "w") as f:
      json.dump({"step": step, "baseline_threshold": thr, "table": table}, f, indent=2)
  return {f"{name}/{k}": v for name, row in table.items() for k, v in row.items()}
