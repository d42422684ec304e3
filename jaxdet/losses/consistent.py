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

Choices (where the paper is silent or ambiguous; documented here):
  * Refined anchors are ``stop_gradient``-ed: labels and targets are constants, no gradient flows
    through the box decoding (as in Cascade R-CNN). They are not clipped to the image (inference
    does not clip them either; only the final boxes are clipped).
  * Labels of the refined anchors use the same rule as the original anchors
    (:func:`jaxdet.ops.matching.match_anchors`) with the stage's thresholds. Class targets:
    positive (IoU >= mu_pos) -> 1 at the GT class, negative (IoU < mu_neg) -> 0, in between ->
    ignored.
  * Low-quality matches of the refined anchors (``config.consistent.refined_low_quality_matches``):
    the paper defines the refined samples by the thresholds only ("The hyper-parameters in the
    consistent terms are the IoU thresholds mu_pos and mu_neg, which define the positive and
    negative samples", §6.3) and says nothing about Detectron's "each GT's best anchor is
    positive" rule. True (default, the behaviour before the key existed): the refined anchors
    follow ``loss_cfg.allow_low_quality`` like the original ones; False: refined anchors are
    positive only with IoU >= mu_pos (a GT whose best refined anchor is below mu_pos gets no
    refined positive). Low-quality matches happen only when ``loss_cfg.allow_low_quality`` and
    this key are both true.
  * Regression positives (the mask of the second sum of Eq. 2 and N1): refined anchors that are
    positive (as above); t+ is their matched GT encoded relative to the refined anchor with
    ``loss_cfg.box_weights``; IoU-type losses decode t1 and t+ on the refined anchor.
  * Normalisation of the class terms (``config.consistent.cls_normalizer``; it matters for the
    focal loss only: AP / AUC loss and CE-OHEM normalise themselves -- |P| of their labels / their
    own positives -- whatever is passed):
      - 'shared' (default): Eq. 1 as written, ONE N_cls for the original and the refined term.
        The paper: "N_cls is the mini-batch size for the classification branch" (§4, under
        Eq. 1), whereas Eq. 2 writes two normalisers N0_reg and N1_reg for its two sums -- the
        authors distinguish the cases, so one N_cls is meant. N_cls is read as N0 = the number
        of positive ORIGINAL anchors (``num_positives`` of the experiment's targets, at least 1):
        the count RetinaNet already divides its focal loss by ("normalized by the number of
        anchors assigned to a ground-truth box", Lin et al., Focal Loss, "Inference and
        Training"), and the experiments are "exactly the same as" Detectron's RetinaNet (§6.2)
        apart from the added terms. So cls_loss + cls_loss_refined = (1/N0) sum_i [FL(c_i, c*_i)
        + alpha FL(c_i, c+_i)]. A third class stage (Table 3) is divided by N0 as well.
      - 'separate' (the behaviour before the key existed): each class term divided by the
        positives of its own anchor set (N0 for the original term, N1 = refined positives for
        the refined term, N2 for a third stage), i.e. Eq. 1 normalised like Eq. 2.
    The regression terms always follow Eq. 2 (N0_reg for the original, N1_reg for the refined).
  * More stages (Table 3): stage s >= 2 works on anchors refined s-1 times, with thresholds
    (positive_iou, negative_iou) of config.consistent for s = 2 and (0.7, 0.6) for s = 3 (Table 3
    caption; override with optional keys positive_iou_stage3 / negative_iou_stage3). Terms of all
    extra stages are summed into 'cls_loss_refined' / 'reg_loss_refined'; alpha weighs every
    extra class term.
  * Class logits of stage s are ``outputs[cls_key(s)]``; the 'consistent' variant of ConRetinaNet
    sets them to the shared 'cls_logits' (the consistency is in the targets).
  * Inference (``config.consistent.inference_stages``, :func:`inference_stages`): by default every
    trained regression is applied ("At inference, we only add the two-stage regression", §6.3
    "Parameter and Timing"); 1 is Table 3's "2 2*" row -- two regressions trained, "“*” means
    performing anchor regression once during inference" (Table 3 caption) -- boxes
    decode(t0, A0). Scores are not changed by it: "the confidence score are generated exactly the
    same way as the traditional detector" (§4), i.e. the shared classifier of the 'consistent'
    variant (every class stage is the same array) scores each anchor's box whatever the number of
    regressions; the cascade variants use their last class stage (:func:`inference_logits`).

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
CLS_NORMALIZERS = ("shared", "separate")   # config.consistent.cls_normalizer (Eq. 1)


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


def check_config(cons_cfg) -> None:
  """ValueError unless ``config.consistent``'s variant / stage counts (:func:`check_stages`),
  ``cls_normalizer`` and ``inference_stages`` are valid (called when the model is built, so a bad
  value fails before compiling)."""
  check_stages(cons_cfg.variant, cons_cfg.cls_stages, cons_cfg.reg_stages)
  if cons_cfg.cls_normalizer not in CLS_NORMALIZERS:
    raise ValueError(f"config.consistent.cls_normalizer must be one of {CLS_NORMALIZERS}; got "
                     f"{cons_cfg.cls_normalizer!r}")
  inference_stages(cons_cfg)


def inference_stages(cons_cfg) -> int:
  """Regressions applied at test time: ``config.consistent.inference_stages``, 0 -> all trained
  (``reg_stages``); ValueError outside [0, reg_stages]. 1 with reg_stages = 2 is Table 3's "2 2*"."""
  n, reg = cons_cfg.inference_stages, int(cons_cfg.reg_stages)
  if isinstance(n, bool) or int(n) != n or not 0 <= n <= reg:
    raise ValueError(f"config.consistent.inference_stages must be an integer in [0, reg_stages = {reg}] "
                     f"(0: all trained regressions); got {n!r}")
  return int(n) or reg


def refined_targets(stage_anchors, gt_boxes, gt_classes, gt_valid, loss_cfg, cons_cfg,
                    num_classes: int, stage: int = 2) -> det_loss.AnchorTargets:
  """Labels c+ and offsets t+ of the anchors of ``stage`` (2: refined once, 3: twice) ``[B, A, 4]``:
  the stage's (mu_pos, mu_neg), ``loss_cfg.box_weights``, and low-quality matches only when
  ``loss_cfg.allow_low_quality`` and ``cons_cfg.refined_low_quality_matches`` are both true."""
  mu_pos, mu_neg = stage_thresholds(cons_cfg, stage)
  low_quality = bool(loss_cfg.allow_low_quality) and bool(cons_cfg.refined_low_quality_matches)
  rematch = low_quality and bool(loss_cfg.get("low_quality_rematch", False))   # SSD's rule
  return det_loss.anchor_targets(stage_anchors, gt_boxes, gt_classes, gt_valid,
                                 num_classes=num_classes, positive_iou=mu_pos, negative_iou=mu_neg,
                                 allow_low_quality=low_quality, box_weights=tuple(loss_cfg.box_weights),
                                 low_quality_rematch=rematch)


def consistent_terms(outputs, anchors, gt_boxes, gt_classes, gt_valid,
                     targets: det_loss.AnchorTargets | None, loss_cfg, cons_cfg, num_classes: int, *,
                     mesh=None) -> dict:
  """Refined-anchor terms of Eq. 1 / Eq. 2 for one batch.

  Args:
    outputs: ConRetinaNet outputs ('box_deltas', and per extra stage the keys of
      ``cls_key`` / ``box_key``).
    anchors: original anchors ``[A, 4]`` (or ``[B, A, 4]``).
    gt_boxes, gt_classes, gt_valid: padded ground truth ``[B, G, 4]``, ``[B, G]``, ``[B, G]``.
    targets: the original anchors' :class:`AnchorTargets` (only used for
      ``cons_cfg.cls_normalizer='shared'``, whose N_cls is their N0; may be None otherwise).
    loss_cfg: ``config.loss`` (cls, reg, box_weights, allow_low_quality and the loss params).
    cons_cfg: ``config.consistent`` (alpha, positive_iou, negative_iou, variant, cls_stages,
      reg_stages, cls_normalizer, refined_low_quality_matches); see the module docstring.
    num_classes: C.
    mesh: the device mesh, needed only with ``loss_cfg.ap_per_device``.

  Returns:
    {'cls_loss_refined': alpha * sum of the extra class terms (each / N0 with cls_normalizer
       'shared', / its own stage's positives with 'separate'),
     'reg_loss_refined': sum of the extra regression terms (each / its N1),
     'num_pos_refined': N1 of stage 2 (0 when there is no stage 2),
     'num_pos_refined2': N of stage 3 (only with a stage 3)} -- float32 scalars.
  """
  cls_normalizer = cons_cfg.cls_normalizer
  if cls_normalizer not in CLS_NORMALIZERS:
    raise ValueError(f"config.consistent.cls_normalizer must be one of {CLS_NORMALIZERS}; got "
                     f"{cls_normalizer!r}")
  if cls_normalizer == "shared" and targets is None:
    raise ValueError("config.consistent.cls_normalizer='shared' needs targets (the original anchors' "
                     "AnchorTargets: N_cls of Eq. 1 is their number of positives)")
  cls_stages, reg_stages = int(cons_cfg.cls_stages), int(cons_cfg.reg_stages)
  check_stages(cons_cfg.variant, cls_stages, reg_stages)
  n_cls = det_loss.num_positives(targets) if cls_normalizer == "shared" else None
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
    t = refined_targets(stage_anchors, gt_boxes, gt_classes, gt_valid, loss_cfg, cons_cfg,
                        num_classes, s)
    n = det_loss.num_positives(t)
    terms["num_pos_refined" if s == 2 else f"num_pos_refined{s - 1}"] = n
    if s <= cls_stages:
      logits = _require(outputs, cls_key(s), f"the stage-{s} classification term")
      norm = n_cls if cls_normalizer == "shared" else n   # Eq. 1's N_cls = N0, or this stage's N
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
  stage-R deltas ``[B, A, 4]``; decoding them gives the final boxes. The experiment passes
  :func:`inference_stages` of its config; ``reg_stages=1`` on a model with two box stages is
  Table 3's "2 2*" row (regression once at inference). Scores are not touched: use
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
