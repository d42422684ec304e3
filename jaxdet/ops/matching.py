"""Anchor labelling by IoU with padded ground truth (RetinaNet, Lin et al. 2017 §4 "Anchors";
AP-loss, Chen et al. §3.1.1 "Ranking Task").

One image at a time, static shapes, jit/vmap friendly (callers ``jax.vmap`` over the batch).

Rule (AP-loss authors' ``aploss.py``, also Detectron's "low-quality matches"): with the IoU
matrix over *valid* GTs only,
  * positive  if the anchor's best IoU >= positive_iou, or (allow_low_quality) the anchor's IoU
    with some valid GT g equals g's best IoU over all anchors (ties all count) and that best is > 0;
  * negative  if not positive and best IoU < negative_iou;
  * ignored   otherwise.
A positive anchor is matched to the GT with which it has its highest IoU (its argmax over valid
GTs, lowest index on ties), exactly as the authors' code does (``assigned_annotations =
bbox_annotation[IoU_argmax]``). With ``low_quality_rematch=True`` an anchor that is tied-best for
some GT(s) is instead matched to that GT (the one of highest IoU if several), which guarantees
every GT with a positive-IoU anchor keeps at least one anchor (ssd.pytorch-style forcing).
An image with no valid GT labels every anchor negative.

Label targets per (anchor, class) follow the AP-loss replication (AP-loss paper Fig. 3): a
positive anchor is 1 at its class and 0 elsewhere, a negative 0 everywhere, an ignored -1.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxdet.ops import boxes as box_ops


class AnchorMatch(NamedTuple):
  state: jax.Array          # [A] int32: 1 positive, 0 negative, -1 ignored
  matched_gt: jax.Array     # [A] int32 index into G (0 where not positive)
  classes: jax.Array        # [A] int32 class of the matched GT for positives, -1 elsewhere
  max_iou: jax.Array        # [A] float32 best IoU over valid GTs (0 when there is none)
  matched_boxes: jax.Array  # [A, 4] matched GT box for positives, zeros elsewhere


def match_anchors(anchors, gt_boxes, gt_classes, gt_valid, *, positive_iou: float = 0.5,
                  negative_iou: float = 0.4, allow_low_quality: bool = True,
                  low_quality_rematch: bool = False) -> AnchorMatch:
  """Label ``anchors [A, 4]`` against ``gt_boxes [G, 4]`` / ``gt_classes [G]`` / ``gt_valid [G]``.

  See the module docstring for the rule. ``G`` may be 0.
  """
  if not negative_iou <= positive_iou:
    raise ValueError(f"negative_iou ({negative_iou}) must be <= positive_iou ({positive_iou})")
  anchors = jnp.asarray(anchors, jnp.float32)
  gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
  gt_classes = jnp.asarray(gt_classes, jnp.int32)
  gt_valid = jnp.asarray(gt_valid, bool)
  if anchors.ndim != 2 or gt_boxes.ndim != 2 or gt_classes.ndim != 1 or gt_valid.ndim != 1:
    raise ValueError("match_anchors works on one image: anchors [A, 4], gt_boxes [G, 4], gt_classes [G], "
                     f"gt_valid [G]; got {anchors.shape}, {gt_boxes.shape}, {gt_classes.shape}, "
                     f"{gt_valid.shape} (jax.vmap over the batch)")
  if gt_boxes.shape[0] == 0:
    gt_boxes = jnp.zeros((1, 4), jnp.float32)
    gt_classes = jnp.zeros((1,), jnp.int32)
    gt_valid = jnp.zeros((1,), bool)

  ious = box_ops.pairwise_iou(anchors, gt_boxes)                 # [A, G]
  masked = jnp.where(gt_valid[None, :], ious, -1.0)              # invalid GTs never win
  any_valid = jnp.any(gt_valid)
  best_gt = jnp.argmax(masked, axis=1).astype(jnp.int32)         # [A]
  max_iou = jnp.where(any_valid, jnp.max(masked, axis=1), 0.0)   # [A]

  positive = max_iou >= positive_iou
  if allow_low_quality:
    gt_best = jnp.max(masked, axis=0)                            # [G], -1 for invalid GTs
    tied = (masked == gt_best[None, :]) & (gt_best[None, :] > 0.0)
    low_quality = jnp.any(tied, axis=1)
    positive = positive | low_quality
    if low_quality_rematch:
      tied_gt = jnp.argmax(jnp.where(tied, ious, -1.0), axis=1).astype(jnp.int32)
      best_gt = jnp.where(low_quality, tied_gt, best_gt)
  positive = positive & any_valid
  negative = ~positive & ((max_iou < negative_iou) | ~any_valid)
  state = jnp.where(positive, 1, jnp.where(negative, 0, -1)).astype(jnp.int32)

  matched_gt = jnp.where(positive, best_gt, 0).astype(jnp.int32)
  classes = jnp.where(positive, gt_classes[best_gt], -1).astype(jnp.int32)
  matched_boxes = jnp.where(positive[:, None], gt_boxes[best_gt], 0.0)
  return AnchorMatch(state=state, matched_gt=matched_gt, classes=classes,
                     max_iou=max_iou.astype(jnp.float32), matched_boxes=matched_boxes)


def class_targets(match: AnchorMatch, num_classes: int):
  """Per (anchor, class) labels ``[..., A, C]`` int32 in {-1, 0, 1} (AP-loss Fig. 3).

  Ignored anchor -> all -1; positive -> 1 at its class, 0 elsewhere; negative -> all 0.
  Works for a single image or a vmapped batch of matches.
  """
  if int(num_classes) != num_classes or num_classes <= 0:
    raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
  onehot = (match.classes[..., None] == jnp.arange(int(num_classes), dtype=jnp.int32)).astype(jnp.int32)
  state = match.state[..., None]
  return jnp.where(state == 1, onehot, jnp.where(state == 0, 0, -1)).astype(jnp.int32)


def box_targets(match: AnchorMatch, anchors, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
  """Encoded regression targets ``[..., A, 4]`` (:func:`jaxdet.ops.boxes.encode`), zeros where not positive."""
  deltas = box_ops.encode(match.matched_boxes, jnp.asarray(anchors, jnp.float32), weights)
  return jnp.where(match.state[..., None] == 1, deltas, 0.0)
