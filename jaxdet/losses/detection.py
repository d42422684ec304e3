"""One-stage detector loss: anchor targets + classification + box regression.

L = cls_weight * L_cls / N_pos + reg_weight * L_reg / N_pos, with N_pos the
number of positive anchors in the global batch (at least 1). The
classification term is selected by ``config.loss.cls``:

- ``focal``: sigmoid focal loss (Lin et al. 2017, Eq. 5), ignored anchors masked;
- ``ap``: AP-loss (Chen et al., Eq. 5, error-driven update of Alg. 1) over all
  (anchor, class) samples of the batch — it normalises itself by |P|;
- ``auc``: AUC-loss (Eq. 7);
- ``ce_ohem``: softmax cross-entropy with 3:1 hard negative mining (SSD).

Box regression (``config.loss.reg``): smooth L1 / L1 on encoded deltas, or
GIoU / DIoU / CIoU on decoded boxes, over positive anchors.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdet.losses import focal as focal_lib
from jaxdet.losses import regression as reg_lib
from jaxdet.ops import matching

CLS_LOSSES = ("focal", "ap", "auc", "ce_ohem")


class AnchorTargets(NamedTuple):
  cls_targets: jax.Array   # [B, A, C] int32 in {-1 ignored, 0, 1}
  box_targets: jax.Array   # [B, A, 4] encoded deltas
  state: jax.Array         # [B, A] int32: 1 positive, 0 negative, -1 ignored
  classes: jax.Array       # [B, A] int32 class index of positives, -1 elsewhere
  matched_boxes: jax.Array  # [B, A, 4] matched GT box (positives)


def anchor_targets(anchors, gt_boxes, gt_classes, gt_valid, *, num_classes: int,
                   positive_iou: float, negative_iou: float, allow_low_quality: bool,
                   box_weights, low_quality_rematch: bool = False) -> AnchorTargets:
  """Labels anchors ([A, 4] or [B, A, 4]) against padded ground truth [B, G, ...] with
  :func:`jaxdet.ops.matching.match_anchors` (``low_quality_rematch``: a GT's best anchor is
  assigned to that GT even when another GT overlaps it more, SSD's first matching step)."""
  anchors = jnp.asarray(anchors)

  def one(a, b, c, v):
    m = matching.match_anchors(a, b, c, v, positive_iou=positive_iou,
                               negative_iou=negative_iou,
                               allow_low_quality=allow_low_quality,
                               low_quality_rematch=low_quality_rematch)
    return AnchorTargets(matching.class_targets(m, num_classes),
                         matching.box_targets(m, a, box_weights),
                         m.state, m.classes, m.matched_boxes)

  anchor_axis = 0 if anchors.ndim == 3 else None
  return jax.vmap(one, in_axes=(anchor_axis, 0, 0, 0))(anchors, gt_boxes, gt_classes, gt_valid)


def classification_loss(loss_cfg, logits, targets: AnchorTargets, num_pos, *,
                        mesh=None) -> jax.Array:
  """Scalar classification loss for ``loss_cfg.cls`` (see module docstring).

  ``mesh`` is needed only for ``loss_cfg.ap_per_device`` (rank within each device's
  shard of the batch, as the authors' per-GPU code does, instead of the global batch).
  For ``ce_ohem`` the logits have C + 1 channels, background first.
  """
  name = loss_cfg.cls
  labels = targets.cls_targets
  if name == "focal":
    per = focal_lib.sigmoid_focal_loss(logits, (labels == 1).astype(logits.dtype),
                                       alpha=loss_cfg.focal_alpha, gamma=loss_cfg.focal_gamma)
    return jnp.sum(jnp.where(labels >= 0, per, 0.0)) / num_pos
  if name in ("ap", "auc"):
    from jaxdet.losses import ranking
    kwargs = {"delta": loss_cfg.ap_delta}
    if name == "ap":
      kwargs["interpolate"] = loss_cfg.ap_interpolate
    if loss_cfg.ap_per_device:
      if mesh is None:
        raise ValueError("config.loss.ap_per_device=True needs the device mesh.")
      fn = ranking.ap_loss_per_shard if name == "ap" else ranking.auc_loss_per_shard
      return fn(logits, labels, mesh=mesh, **kwargs)
    fn = ranking.ap_loss if name == "ap" else ranking.auc_loss
    return fn(logits, labels, **kwargs)
  if name == "ce_ohem":
    from jaxdet.losses import ohem
    return ohem.ce_ohem_loss(logits, targets.classes, targets.state,
                             neg_pos_ratio=loss_cfg.ohem_neg_pos_ratio)
  raise ValueError(f"config.loss.cls={name!r}: valid values are {CLS_LOSSES}.")


def box_regression_loss(loss_cfg, deltas, anchors, targets: AnchorTargets, num_pos) -> jax.Array:
  """Scalar regression loss over positive anchors, divided by N_pos."""
  anchors = jnp.broadcast_to(jnp.asarray(anchors), deltas.shape)
  if loss_cfg.reg in ("smooth_l1", "l1"):
    if loss_cfg.reg == "smooth_l1":
      per = reg_lib.smooth_l1_loss(deltas, targets.box_targets, beta=loss_cfg.smooth_l1_beta)
    else:
      per = reg_lib.l1_loss(deltas, targets.box_targets)
    per = per.sum(-1)
  else:
    per = reg_lib.regression_loss(loss_cfg.reg, deltas, targets.box_targets, anchors,
                                  tuple(loss_cfg.box_weights))
  return jnp.sum(jnp.where(targets.state == 1, per, 0.0)) / num_pos


def num_positives(targets: AnchorTargets) -> jax.Array:
  return jnp.maximum(jnp.sum(targets.state == 1).astype(jnp.float32), 1.0)
