"""Fast R-CNN RoI sampling for training the box head (Girshick, Fast R-CNN, ICCV 2015, §2.3
"Mini-batch sampling"; Faster R-CNN §3.1.2 / §3.2 reuse it), with detectron2's default values.

One image at a time, static shapes (``jax.vmap`` over the batch):
  1. candidates = the valid proposals followed by the valid ground-truth boxes
     (``append_gt=True``, detectron2 ``ROI_HEADS.PROPOSAL_APPEND_GT``), so every gt is at least
     once a fg RoI (IoU 1 with itself) even when the RPN proposes nothing useful;
  2. each candidate is matched to its highest-IoU valid gt (lowest gt index on ties);
  3. fg: IoU >= ``fg_iou`` = 0.5; bg: IoU in [``bg_iou_low``, ``bg_iou_high``) = [0, 0.5)
     (detectron2 ``ROI_HEADS.IOU_THRESHOLDS = [0.5]``, no low bound; the Fast R-CNN paper used
     [0.1, 0.5), i.e. ``bg_iou_low=0.1``). Candidates in neither set are never sampled. An image
     without valid gt has every candidate at IoU 0: all bg (with ``bg_iou_low <= 0``);
  4. ``num_samples = 512`` RoIs with at most ``positive_fraction = 0.25`` fg
     (``ROI_HEADS.BATCH_SIZE_PER_IMAGE``, ``POSITIVE_FRACTION``), uniformly at random from
     ``rng`` (:func:`jaxdet.ops.rpn.balanced_sample`); fg first, then bg, then padding
     (``valid`` False) when there are fewer candidates than slots.

Class convention (detectron2): gt classes are in ``[0, num_classes)`` and the background class is
``num_classes`` (the box head predicts ``num_classes + 1`` logits, background last). Padding slots
also carry ``num_classes`` but are ``valid=False`` and must be left out of the losses.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdet.ops import boxes as box_ops
from jaxdet.ops.rpn import balanced_sample


class SampledRois(NamedTuple):
  boxes: jax.Array             # [S, 4] RoI boxes (zeros for padding)
  classes: jax.Array           # [S] int32: gt class for fg, num_classes for bg and padding
  matched_gt_boxes: jax.Array  # [S, 4] the matched gt box for fg, zeros elsewhere
  is_fg: jax.Array             # [S] bool
  valid: jax.Array             # [S] bool: a sampled RoI (fg or bg), False for padding
  indices: jax.Array           # [S] int32 into concat(proposals, gt_boxes) (or proposals if not
                               #   append_gt); 0 for padding
  matched_gt_index: jax.Array  # [S] int32 into gt_boxes for fg, 0 elsewhere


def sample_rois(proposals, proposals_valid, gt_boxes, gt_classes, gt_valid, rng, *, num_classes: int,
                num_samples: int = 512, positive_fraction: float = 0.25, fg_iou: float = 0.5,
                bg_iou_high: float = 0.5, bg_iou_low: float = 0.0, append_gt: bool = True) -> SampledRois:
  """Sample ``num_samples`` training RoIs of one image (rules in the module docstring).

  ``proposals [P, 4]`` with ``proposals_valid [P]`` (e.g. ``arange(P) < num_valid`` of
  :func:`jaxdet.ops.rpn.generate_proposals`), ``gt_boxes [G, 4]``, ``gt_classes [G]`` in
  ``[0, num_classes)``, ``gt_valid [G]``. ``P`` and ``G`` may be 0. The outputs carry no gradient.
  """
  if int(num_classes) != num_classes or num_classes <= 0:
    raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
  num_classes = int(num_classes)
  if not bg_iou_low <= bg_iou_high <= fg_iou:
    raise ValueError(f"need bg_iou_low <= bg_iou_high <= fg_iou; got {bg_iou_low}, {bg_iou_high}, {fg_iou}")
  proposals = jax.lax.stop_gradient(jnp.asarray(proposals, jnp.float32))
  proposals_valid = jnp.asarray(proposals_valid, bool)
  gt_boxes = jax.lax.stop_gradient(jnp.asarray(gt_boxes, jnp.float32))
  gt_classes = jnp.asarray(gt_classes, jnp.int32)
  gt_valid = jnp.asarray(gt_valid, bool)
  if (proposals.ndim != 2 or proposals.shape[1] != 4 or proposals_valid.shape != proposals.shape[:1]
      or gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4 or gt_classes.shape != gt_boxes.shape[:1]
      or gt_valid.shape != gt_boxes.shape[:1]):
    raise ValueError("sample_rois works on one image: proposals [P, 4], proposals_valid [P], gt_boxes [G, 4], "
                     f"gt_classes [G], gt_valid [G]; got {proposals.shape}, {proposals_valid.shape}, "
                     f"{gt_boxes.shape}, {gt_classes.shape}, {gt_valid.shape} (jax.vmap over the batch)")
  if proposals.shape[0] == 0 and not append_gt:
    proposals = jnp.zeros((1, 4), jnp.float32)
    proposals_valid = jnp.zeros((1,), bool)
  if gt_boxes.shape[0] == 0:
    gt_boxes = jnp.zeros((1, 4), jnp.float32)
    gt_classes = jnp.zeros((1,), jnp.int32)
    gt_valid = jnp.zeros((1,), bool)

  if append_gt:
    cands = jnp.concatenate([proposals, gt_boxes], axis=0)
    cand_valid = jnp.concatenate([proposals_valid, gt_valid], axis=0)
  else:
    cands, cand_valid = proposals, proposals_valid

  ious = jnp.where(gt_valid[None, :], box_ops.pairwise_iou(cands, gt_boxes), -1.0)   # [N, G]
  best_gt = jnp.argmax(ious, axis=1).astype(jnp.int32)
  max_iou = jnp.where(jnp.any(gt_valid), jnp.max(ious, axis=1), 0.0)
  fg = cand_valid & (max_iou >= fg_iou) & jnp.any(gt_valid)
  bg = cand_valid & ~fg & (max_iou < bg_iou_high) & (max_iou >= bg_iou_low)

  idx, is_fg, valid = balanced_sample(fg, bg, rng, num_samples=num_samples, positive_fraction=positive_fraction)
  gt_idx = jnp.where(is_fg, best_gt[idx], 0)
  return SampledRois(
      boxes=jnp.where(valid[:, None], cands[idx], 0.0),
      classes=jnp.where(is_fg, gt_classes[gt_idx], num_classes).astype(jnp.int32),
      matched_gt_boxes=jnp.where(is_fg[:, None], gt_boxes[gt_idx], 0.0),
      is_fg=is_fg, valid=valid, indices=idx, matched_gt_index=gt_idx)
