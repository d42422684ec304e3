"""The detectors' evaluation protocols: COCO AP (+ VOC mAP50), and WIDER FACE easy / medium / hard.

``evaluate_detections`` scores COCO-style results (``{image_id, category_id, score, bbox: [x, y, w,
h]}`` in original pixels, ``jaxdet.evaluation.coco.detections_to_coco``) of one source. It is what
``DetectionExperiment.evaluate`` (``config.eval.protocol``, ``config.eval.voc_metrics``,
``config.eval.wider_face_gt_dir``) and the MTGAN experiment call, on process 0 only.

* every protocol: COCO box AP (pycocotools ``COCOeval``: AP, AP50, AP75, APs, APm, APl; AP-loss
  §4.1.2, consistent optimization §6, ALWA §4.1, MTGAN §4.1), the results kept as
  ``<workdir>/detections<tag>_step<step>.json``;
* ``voc_metrics``: also the VOC mAP at IoU 0.5, 11-point (``mAP50_voc07``) and area
  (``mAP50_area``) (AP-loss §4.1.1, ALWA §4.1);
* ``protocol='wider_face'``: also ``wider_easy_AP``, ``wider_medium_AP``, ``wider_hard_AP`` with
  the official WIDER FACE protocol (``jaxdet.evaluation.wider_face``; MTGAN §4.1, Table 8). The
  detections of the face category are written in the official layout,
  ``<workdir>/wider_face<tag>_step<step>/EVENT/IMAGE.txt``, one file per image of the source
  (empty ones too), so ``python -m jaxdet.evaluation.wider_face --gt GT --pred DIR`` (or the
  official MATLAB code) can score them again. Ground truth: the official ``.mat`` files of
  ``wider_face_gt_dir`` (``eval_tools/ground_truth``), reduced to the images of the source (with a
  note when that is not all of them); with ``wider_face_gt_dir=''``, face-height *proxy* subsets
  built from the source (``jaxdet.evaluation.face_subsets``; a note says so, once per process).
  Image keys ``(event, image)``: ``face_subsets.image_keys``.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from jaxdet.evaluation import coco as coco_eval
from jaxdet.evaluation import face_subsets
from jaxdet.evaluation import wider_face

PROTOCOLS = ("coco", "wider_face")
WIDER_METRICS = {s: f"wider_{s}_AP" for s in wider_face.SUBSETS}
_notes_shown: set[str] = set()


def check_protocol(protocol: str) -> None:
  """ValueError naming ``config.eval.protocol`` and the valid ones if ``protocol`` is unknown."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"config.eval.protocol={protocol!r} is not an evaluation protocol; valid: "
                     f"{', '.join(PROTOCOLS)} (wider_face: COCO AP plus WIDER FACE easy / medium / "
                     "hard AP).")


def _note_once(key: str, text: str) -> None:
  if key not in _notes_shown:
    _notes_shown.add(key)
    print(text, flush=True)


def wider_face_metrics(source, results: Sequence[dict], *, pred_dir: str, gt_dir: str = "",
                       coco=None) -> dict[str, float]:
  """WIDER FACE AP per subset (``WIDER_METRICS`` names) of ``results`` on ``source``; writes the
  predictions of every image of ``source`` to ``pred_dir`` (replaced if it exists). ``gt_dir``:
  the official ground truth, else proxy subsets (module docstring)."""
  coco = face_subsets.source_coco(source) if coco is None else coco
  category = face_subsets.face_category_id(coco)
  keys = face_subsets.image_keys(source, coco)
  predictions = face_subsets.predictions_by_key(results, list(source.image_ids), keys,
                                                category_id=category)
  if gt_dir:
    full = wider_face.load_ground_truth(gt_dir)
    gt = face_subsets.restrict_ground_truth(full, keys)
    if len(keys) < len(full.keys()):
      _note_once(f"partial:{gt_dir}:{len(keys)}",
                 f"WIDER FACE AP over the {len(keys)} evaluated images, not all "
                 f"{len(full.keys())} of the official ground truth ({gt_dir}): not comparable "
                 "with full-val numbers.")
  else:
    gt = face_subsets.proxy_ground_truth(source, coco=coco, keys=keys, category_id=category)
    _note_once("proxy", "Note: WIDER FACE easy / medium / hard AP use proxy subsets by face height "
                        f"({face_subsets.describe_proxy()}), not the official ones; set "
                        "config.eval.wider_face_gt_dir to the eval_tools/ground_truth folder of "
                        "WIDER FACE for official numbers.")
  if os.path.isdir(pred_dir):
    shutil.rmtree(pred_dir)
  wider_face.write_predictions(pred_dir, predictions)
  ap = wider_face.evaluate_wider_face(gt, predictions)
  return {WIDER_METRICS[s]: float(ap[s]) for s in wider_face.SUBSETS if s in ap}


def evaluate_detections(source, results: Sequence[dict], *, workdir: str, step: int, tag: str = "",
                        protocol: str = "coco", voc_metrics: bool = False,
                        wider_face_gt_dir: str = "",
                        coco_backend: str = "pycocotools") -> dict[str, float]:
  """Metrics of ``results`` on ``source`` with ``protocol`` (module docstring).

  Args:
    source: the evaluated ``DetectionSource`` (``image_ids``; ``coco`` or ``annotation``).
    results: COCO result dicts of images of ``source``.
    workdir, step, tag: name the output files, ``<workdir>/detections<tag>_step<step>.json`` and
      (wider_face) ``<workdir>/wider_face<tag>_step<step>/``.
    protocol: ``'coco'`` or ``'wider_face'`` (``PROTOCOLS``).
    voc_metrics: also ``mAP50_voc07`` and ``mAP50_area``.
    wider_face_gt_dir: the official ``eval_tools/ground_truth`` folder; '' = proxy subsets.
    coco_backend: ``jaxdet.evaluation.coco.COCO_BACKENDS`` (``config.eval.coco_backend``).
  Returns:
    ``{'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl'}`` plus the protocol's metrics, plus the same
    six of the masks as ``mask_AP`` ... when the results carry a ``segmentation``.
  """
  check_protocol(protocol)
  results = list(results)
  os.makedirs(workdir, exist_ok=True)
  image_ids = list(source.image_ids)
  gt = face_subsets.source_coco(source)
  metrics = coco_eval.evaluate_coco(
      gt, results, result_file=os.path.join(workdir, f"detections{tag}_step{step}.json"),
      image_ids=image_ids, backend=coco_backend)
  if any("segmentation" in r for r in results):   # instance masks (Mask R-CNN): mask AP too
    segm = coco_eval.evaluate_coco(gt, results, image_ids=image_ids, iou_type="segm",
                                   backend=coco_backend)
    metrics.update({f"mask_{k}": v for k, v in segm.items()})
  if voc_metrics:
    from jaxdet.evaluation import voc
    for use07, name in ((True, "mAP50_voc07"), (False, "mAP50_area")):
      metrics[name] = voc.evaluate_voc_from_coco(gt, results, use_07_metric=use07,
                                                 image_ids=image_ids)["mAP"]
  if protocol == "wider_face":
    metrics.update(wider_face_metrics(
        source, results, pred_dir=os.path.join(workdir, f"wider_face{tag}_step{step}"),
        gt_dir=wider_face_gt_dir, coco=gt))
  return metrics
