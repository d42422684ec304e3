"""Consistent optimization: losses on the refined anchors (Kong et al., "Consistent Optimization
for Single-Shot Object Detection", §4, Eq. 1 and Eq. 2).

Inference scores and regresses the *refined* anchors A1 = decode(t0, A0), so training adds
terms computed on them:

  Eq. 1  L_cls = (1/N_cls) sum_i [L_cls(c_i, c*_i) + alpha L_cls(c_i, c+_i)],
  Eq. 2  L_reg = (1/N0) sum_i L0(t0_i, t*_i) + (1/N1) sum_i L1(t1_i, t+_i),

c* / t* the labels / offsets of the original anchor (the usual RetinaNet terms, computed by the
experiment), c+ / t+ those of the refined anchor, labelled against the ground truth with
mu_pos = 0.6 / mu_neg = 0.5 (Table 2), and t1 the second offsets predicted for the refined
anchor. :func:`consistent_terms` returns only the refined terms; the experiment adds
'cls_loss_refined' to its cls_loss and 'reg_loss_refined' to its reg_loss.

Choices (the paper is silent; documented here):
  * Refined anchors are ``stop_gradient``-ed: labels and targets are constants, no gradient flows
    through the box decoding (as in Cascade R-CNN). They are not clipped to the image (inference
    does not clip them either; only the final boxes are clipped).
  * Labels of the refined anchors use the same rule as the original anchors
    (:func:`jaxdet.ops.matching.match_anchors`, including ``loss_cfg.allow_low_quality``) with the
    stage's thresholds. Class targets: positive (IoU >= mu_pos) -> 1 at the GT class, negative
    (IoU < mu_neg) -> 0, in between -> ignored.
  * Regression positives (the mask of the second sum of Eq. 2 and N1): refined anchors that are
    positive under mu_pos; t+ is their matched GT encoded relative to the refined anchor with
    ``loss_cfg.box_weights``; IoU-type losses decode t1 and t+ on the refined anchor.
  * Normalisation: the refined class term uses the same ``classification_loss`` as the usual term,
    so AP / AUC normalise themselves (|P| of the refined labels) and focal / CE-OHEM divide by
    N1 = #refined positives (``cls_normalizer='refined'``, default), or by the original
    anchors' N0 (``cls_normalizer='original'``, Eq. 1 read literally with one N_cls).
  * More stages (Table 3): stage s >= 2 works on anchors refined s-1 times, with thresholds
    (positive_iou, negative_iou) of config.consistent for s = 2 and (0.7, 0.6) for s = 3 (Table 3
    caption; override with optional keys positive_iou_stage3 / negative_iou_stage3). Terms of all
    extra stages are summed into 'cls_loss_refined' / 'reg_loss_refined'; alpha weighs every
    extra class term.
  * Class logits of stage s are ``outputs[cls_key(s)]``; the 'consistent' variant of ConRetinaNet
    sets them to the shared 'cls_logits' (the consistency is in the targets).

Output names: the model (``jaxdet.models.conretinanet.ConRetinaNet``) and these losses agree on the
keys of the stage outputs through :func:`cls_key` / :func:`box_key`, and on the valid variant /
stage counts through :func:`check_stages`. They live here, with the consumer, so that the losses
import nothing from ``jaxdet.models``; the model imports them from this module.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxdet.losses import detection as det_loss
from jaxdet.ops import boxes as box_ops

VARIANTS = ("consistent", "cascade", "gated_cascade")   # Fig. 4 (d), (b), (c)
MAX_STAGES = 3                                          # Table 3 goes up to #reg = 3
STAGE3_IOU = (0.7, 0.6)   # (mu_pos, mu_neg) of the third stage, Table 3 caption
CLS_NORMALIZERS = ("refined", "original")


def cls_key(stage: int) -> str:
  """Output key of the class logits of ``stage`` (1 = original anchors): 'cls_logits',
  'cls_logits_refined', 'cls_logits_refined2'."""
  return "cls_logits" + _suffix(stage)


def box_key(stage: int) -> str:
  """Output key of the box deltas of ``stage`` (1 = original anchors): 'box_deltas',
  'box_deltas_refined', 'box_deltas_refined2'."""
  return "box_deltas" + _suffix(stage)


def _suffix(stage: int) -> str:
  if int(stage) != stage or not 1 <= stage <= MAX_STAGES:
    raise ValueError(f"stage must be an integer in [1, {MAX_STAGES}]; got {stage!r}")
  return "" if stage == 1 else "_refined" if stage == 2 else f"_refined{stage - 1}"


def check_stages(variant: str, cls_stages: int, reg_stages: int) -> None:
  """ValueError unless ``variant`` is one of :data:`VARIANTS`, 1 <= reg_stages <= MAX_STAGES and
  1 <= cls_stages <= reg_stages + 1 (a class term at stage s scores the anchors refined s-1
  times, so it needs the regression of stage s-1)."""
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
  if int(reg_stages) != reg_stages or not 1 <= reg_stages <= MAX_STAGES:
    raise ValueError(f"reg_stages must be an integer in [1, {MAX_STAGES}]; got {reg_stages!r}")
  if int(cls_stages) != cls_stages or not 1 <= cls_stages <= min(reg_stages + 1, MAX_STAGES):
    raise ValueError(f"cls_stages must be an integer in [1, reg_stages + 1] = "
                     f"[1, {min(reg_stages + 1, MAX_STAGES)}] (a class term at stage s scores anchors "
                     f"refined s-1 times); got {cls_stages!r}")


def refined_anchors(anchors, box_deltas, box_weights: Sequence[float]) -> jax.Array:
  """Anchors ``[A, 4]`` or ``[B, A, 4]`` moved by ``box_deltas [B, A, 4]`` -> ``[B, A, 4]`` xyxy.

  Detectron decoding (``jaxdet.ops.boxes.decode`` with ``box_weights`` and its size clamp);
  the result is a ``stop_gradient`` constant.
  """
  box_deltas = jnp.asarray(box_deltas)
  anchors = jnp.asarray(anchors, jnp.float32)
  if box_deltas.ndim != 3 or box_deltas.shape[-1] != 4:
    raise ValueError(f"box_deltas must be [B, A, 4]; got shape {box_deltas.shape}")
  if anchors.shape not in (box_deltas.shape, box_deltas.shape[1:]):
    raise ValueError(f"anchors must be [A, 4] or [B, A, 4] matching box_deltas {box_deltas.shape}; "
                     f"got {anchors.shape}")
  anchors = jnp.broadcast_to(anchors, box_deltas.shape)
  boxes = box_ops.decode(box_deltas.astype(jnp.float32), anchors, tuple(box_weights))
  return jax.lax.stop_gradient(boxes)


def stage_thresholds(cons_cfg, stage: int) -> tuple[float, float]:
  """(mu_pos, mu_neg) of ``stage`` (2 or 3) from ``config.consistent``."""
  if stage == 2:
    return float(cons_cfg.positive_iou), float(cons_cfg.negative_iou)
  if stage == 3:
    return (float(getattr(cons_cfg, "positive_iou_stage3", STAGE3_IOU[0])),
            float(getattr(cons_cfg, "negative_iou_stage3", STAGE3_IOU[1])))
  raise ValueError(f"stage must be 2 or 3; got {stage!r}")


def _require(outputs, key, why):
  if key not in outputs:
    raise ValueError(f"model outputs lack {key!r}, needed for {why}; build the model with "
                     f"jaxdet.models.conretinanet.ConRetinaNet using the same variant / cls_stages / "
                     f"reg_stages as config.consistent (outputs have {sorted(outputs)})")
  return outputs[key]


def consistent_terms(outputs, anchors, gt_boxes, gt_classes, gt_valid,
                     targets: det_loss.AnchorTargets | None, loss_cfg, cons_cfg, num_classes: int, *,
                     cls_normalizer: str = "refined", mesh=None) -> dict:
  """Refined-anchor terms of Eq. 1 / Eq. 2 for one batch.

  Args:
    outputs: ConRetinaNet outputs ('box_deltas', and per extra stage the keys of
      ``cls_key`` / ``box_key``).
    anchors: original anchors ``[A, 4]`` (or ``[B, A, 4]``).
    gt_boxes, gt_classes, gt_valid: padded ground truth ``[B, G, 4]``, ``[B, G]``, ``[B, G]``.
    targets: the original anchors' :class:`AnchorTargets` (only used for
      ``cls_normalizer='original'``; may be None otherwise).
    loss_cfg: ``config.loss`` (cls, reg, box_weights, allow_low_quality and the loss params).
    cons_cfg: ``config.consistent`` (alpha, positive_iou, negative_iou, variant, cls_stages,
      reg_stages).
    num_classes: C.
    cls_normalizer: 'refined' (N1) or 'original' (N0) for focal / CE-OHEM; see module docstring.
    mesh: the device mesh, needed only with ``loss_cfg.ap_per_device``.

  Returns:
    {'cls_loss_refined': alpha * sum of the extra class terms,
     'reg_loss_refined': sum of the extra regression terms (each / its N1),
     'num_pos_refined': N1 of stage 2 (0 when there is no stage 2),
     'num_pos_refined2': N of stage 3 (only with a stage 3)} -- float32 scalars.
  """
  if cls_normalizer not in CLS_NORMALIZERS:
    raise ValueError(f"cls_normalizer must be one of {CLS_NORMALIZERS}; got {cls_normalizer!r}")
  if cls_normalizer == "original" and targets is None:
    raise ValueError("cls_normalizer='original' needs targets (the original anchors' AnchorTargets)")
  cls_stages, reg_stages = int(cons_cfg.cls_stages), int(cons_cfg.reg_stages)
  check_stages(cons_cfg.variant, cls_stages, reg_stages)
  alpha = float(cons_cfg.alpha)
  if not alpha >= 0:
    raise ValueError(f"config.consistent.alpha must be >= 0; got {cons_cfg.alpha!r}")
  box_weights = tuple(loss_cfg.box_weights)
  zero = jnp.zeros((), jnp.float32)
  terms = {"cls_loss_refined": zero, "reg_loss_refined": zero, "num_pos_refined": zero}
  stage_anchors = anchors
  for s in range(2, max(cls_stages, reg_stages) + 1):
    prev = _require(outputs, box_key(s - 1), f"the stage-{s} anchors")
    stage_anchors = refined_anchors(stage_anchors, prev, box_weights)
    mu_pos, mu_neg = stage_thresholds(cons_cfg, s)
    t = det_loss.anchor_targets(stage_anchors, gt_boxes, gt_classes, gt_valid,
                                num_classes=num_classes, positive_iou=mu_pos,
                                negative_iou=mu_neg, allow_low_quality=loss_cfg.allow_low_quality,
                                box_weights=box_weights)
    n = det_loss.num_positives(t)
    terms["num_pos_refined" if s == 2 else f"num_pos_refined{s - 1}"] = n
    if s <= cls_stages:
      logits = _require(outputs, cls_key(s), f"the stage-{s} classification term")
      norm = n if cls_normalizer == "refined" else det_loss.num_positives(targets)
      terms["cls_loss_refined"] = terms["cls_loss_refined"] + alpha * det_loss.classification_loss(
          loss_cfg, logits, t, norm, mesh=mesh)
    if s <= reg_stages:
      deltas = _require(outputs, box_key(s), f"the stage-{s} regression term")
      terms["reg_loss_refined"] = terms["reg_loss_refined"] + det_loss.box_regression_loss(
          loss_cfg, deltas, stage_anchors, t, n)
  return terms


def refine_for_inference(outputs, anchors, box_weights: Sequence[float], *,
                         reg_stages: int | None = None):
  """Anchors and deltas for ``generate_detections``: the regression applied ``reg_stages`` times.

  With stages 1..R present in ``outputs`` (R = ``reg_stages`` or, if None, all of them):
  anchors A_{R-1} (A0 = ``anchors``, A_s = decode(t_{s-1}, A_{s-1})) ``[B, A, 4]`` and the
  stage-R deltas ``[B, A, 4]``; decoding them gives the final boxes. ``reg_stages=1`` is
  Table 3's "2*" row (regression once at inference). Scores are not touched: use
  :func:`inference_logits`.
  """
  available = 1
  while available < MAX_STAGES and box_key(available + 1) in outputs:
    available += 1
  if reg_stages is None:
    reg_stages = available
  if int(reg_stages) != reg_stages or not 1 <= reg_stages <= available:
    raise ValueError(f"reg_stages must be in [1, {available}] (the box stages in outputs); got {reg_stages!r}")
  deltas = outputs["box_deltas"]
  stage_anchors = jnp.broadcast_to(jnp.asarray(anchors, jnp.float32), deltas.shape)
  for s in range(2, int(reg_stages) + 1):
    stage_anchors = refined_anchors(stage_anchors, deltas, box_weights)
    deltas = outputs[box_key(s)]
  return stage_anchors, deltas


def inference_logits(outputs):
  """Class logits to score detections with: those of the last class stage in ``outputs``.

  For the 'consistent' variant every stage's logits are the shared 'cls_logits' ("the confidence
  scores are generated exactly the same way as the traditional detector", §4); for the cascade
  variants with cls_stages >= 2 it is the last stage's classifier, the one trained on the refined
  anchors (our choice).
  """
  key = "cls_logits"
  for s in range(2, MAX_STAGES + 1):
    if cls_key(s) in outputs:
      key = cls_key(s)
  return outputs[key]
