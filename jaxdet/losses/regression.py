"""Box regression losses.

* L1 and smooth-L1 (Girshick, Fast R-CNN Eq. 3, with the transition point ``beta`` of
  Detectron: 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta; beta = 0 is L1) on encoded deltas.
* IoU-family losses 1 - GIoU (Rezatofighi et al. 2019), 1 - DIoU and 1 - CIoU (Zheng et al.
  2020, Eqs. 6 and 10) on xyxy boxes; ALWA compares L1 / SmoothL1 / CIoU
  (Yu et al., "Revisiting the Loss Weight Adjustment in Object Detection", §2.2 Eqs. 1-5,
  §3.1 Table 1, §4.2 Table 2).

All losses are elementwise / per box; the caller masks to positive anchors and normalises.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from jaxdet.ops import boxes as box_ops

REGRESSION_LOSSES = ("l1", "smooth_l1", "giou", "diou", "ciou")


def _abs(d):
  # |d| with gradient sign(d), i.e. 0 at d = 0 (jnp.abs would give 1 there), as in PyTorch.
  return d * jnp.sign(d)


def l1_loss(pred, target):
  """|pred - target| elementwise (gradient 0 where pred == target)."""
  return _abs(jnp.asarray(pred) - jnp.asarray(target))


def smooth_l1_loss(pred, target, beta: float = 1.0):
  """Huber-style smooth L1 elementwise; ``beta`` = 0 gives L1."""
  if beta < 0:
    raise ValueError(f"beta must be >= 0; got {beta}")
  d = _abs(jnp.asarray(pred) - jnp.asarray(target))
  if beta == 0:
    return d
  return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def giou_loss(pred_boxes, target_boxes):
  """1 - GIoU per box ``[..., 4] -> [...]``."""
  return 1.0 - box_ops.giou(pred_boxes, target_boxes)


def diou_loss(pred_boxes, target_boxes):
  """1 - DIoU per box ``[..., 4] -> [...]``."""
  return 1.0 - box_ops.diou(pred_boxes, target_boxes)


def ciou_loss(pred_boxes, target_boxes):
  """1 - CIoU per box ``[..., 4] -> [...]`` (alpha is a stop-gradient constant)."""
  return 1.0 - box_ops.ciou(pred_boxes, target_boxes)


_BOX_LOSSES = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}


def regression_loss(name: str, pred_deltas, target_deltas, anchors,
                    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), *, beta: float = 1.0):
  """Per-anchor regression loss ``[..., A]`` by ``name`` in :data:`REGRESSION_LOSSES`.

  'l1' / 'smooth_l1' (with ``beta``) compare the deltas and sum over the 4 coordinates;
  'giou' / 'diou' / 'ciou' decode both deltas with ``anchors [A, 4]`` and ``weights`` (the same
  ones used by :func:`jaxdet.ops.matching.box_targets`) and compare the boxes.
  """
  if name == "l1":
    return jnp.sum(l1_loss(pred_deltas, target_deltas), axis=-1)
  if name == "smooth_l1":
    return jnp.sum(smooth_l1_loss(pred_deltas, target_deltas, beta), axis=-1)
  if name in _BOX_LOSSES:
    anchors = jnp.asarray(anchors, jnp.float32)
    pred_boxes = box_ops.decode(pred_deltas, anchors, weights)
    target_boxes = box_ops.decode(target_deltas, anchors, weights)
    return _BOX_LOSSES[name](pred_boxes, target_boxes)
  raise ValueError(f"unknown regression loss {name!r}; valid names: {', '.join(REGRESSION_LOSSES)}")
