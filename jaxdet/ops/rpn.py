"""Region Proposal Network targets and proposals (Ren et al., Faster R-CNN, NeurIPS 2015, §3.1.2
"Loss Function" / §3.1 "Region Proposal Networks"), with detectron2's default values.

Static shapes throughout (jit / vmap friendly), built on :mod:`jaxdet.ops.matching`,
:mod:`jaxdet.ops.boxes` and :mod:`jaxdet.ops.nms`.

Training targets, :func:`rpn_targets` (one image; ``jax.vmap`` over the batch):
  * fg (label 1): IoU >= 0.7 with some ground-truth box, or, with ``allow_low_quality``, an
    anchor whose IoU with a gt equals that gt's highest IoU over all anchors (every anchor tied
    at the maximum counts; the paper's "(i) the anchor/anchors with the highest IoU overlap with
    a ground-truth box"; detectron2 ``Matcher(allow_low_quality_matches=True)``). Unlike
    detectron2, a gt whose best IoU is 0 (a box outside every anchor) makes no low-quality match
    (:func:`jaxdet.ops.matching.match_anchors`); detectron2 would mark every anchor fg then.
  * bg (label 0): not fg and IoU < 0.3 with every gt; an image without valid gt is all bg.
  * ignore (label -1): everything else. Anchors crossing the image border are not ignored
    (detectron2 ``RPN.BOUNDARY_THRESH = -1``).
  * A fg anchor regresses to the gt of its highest IoU (lowest gt index on ties; detectron2
    does not re-match low-quality anchors either).
  * Mini-batch: at most ``batch_size_per_image = 256`` anchors with at most
    ``positive_fraction = 0.5`` fg; bg fill the rest (detectron2 ``subsample_labels``). Unsampled
    candidates become -1. The random choice is a top-k over uniform keys from ``rng``
    (:func:`balanced_sample`), reproducible and of fixed shape.
  * Regression targets (:func:`rpn_box_targets`): :func:`jaxdet.ops.boxes.encode` with weights
    (1, 1, 1, 1) (detectron2 ``MODEL.RPN.BBOX_REG_WEIGHTS``).

Proposals, :func:`generate_proposals` (detectron2 ``find_top_rpn_proposals``): per level the
``min(pre_nms_topk, level size)`` top objectness logits (2000 per level in training, 1000 at test
for FPN configs), decode, clip to the image, drop boxes with width or height <= ``min_size``
(detectron2 ``Boxes.nonempty``, ``MIN_SIZE = 0``), NMS at IoU 0.7 separately per level (the level
is the NMS "class"), then the ``post_nms_topk`` best by logit over all levels. detectron2's
``POST_NMS_TOPK_TRAIN = 1000`` (FPN) is *per image* (old Detectron used it per batch); test uses
1000 too. Proposals carry no gradient (``stop_gradient``; detectron2 runs this under
``torch.no_grad``).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops import boxes as box_ops
from jaxdet.ops import matching
from jaxdet.ops import nms as nms_ops


class RpnTargets(NamedTuple):
  labels: jax.Array            # [A] int32: 1 fg, 0 bg, -1 ignore (after subsampling)
  matched_gt_index: jax.Array  # [A] int32 index into gt_boxes for fg anchors, 0 elsewhere


class Proposals(NamedTuple):
  boxes: jax.Array      # [B, K, 4] xyxy, clipped to the image; zeros past num_valid
  scores: jax.Array     # [B, K] objectness logits, descending among valid entries; 0 past num_valid
  num_valid: jax.Array  # [B] int32


def _check_count(name, value):
  if int(value) != value or value <= 0:
    raise ValueError(f"{name} must be a positive integer; got {value!r}")
  return int(value)


def balanced_sample(fg, bg, rng, *, num_samples: int, positive_fraction: float):
  """Random fg/bg mini-batch of fixed size (detectron2 ``subsample_labels``), one image.

  ``fg [N]``, ``bg [N]`` are disjoint candidate masks. Takes ``n_fg = min(#fg,
  int(num_samples * positive_fraction))`` fg and ``min(#bg, num_samples - n_fg)`` bg, uniformly
  at random without replacement: each candidate gets a uniform key from ``rng`` and the
  largest keys win (``lax.top_k``), so the choice is reproducible and every shape is static.

  Returns ``(indices [num_samples] int32, is_fg [num_samples] bool, valid [num_samples] bool)``:
  the chosen fg first, then the chosen bg, then padding (index 0, valid False).
  """
  num_samples = _check_count("num_samples", num_samples)
  if not 0.0 <= positive_fraction <= 1.0:
    raise ValueError(f"positive_fraction must be in [0, 1]; got {positive_fraction!r}")
  fg = jnp.asarray(fg, bool)
  bg = jnp.asarray(bg, bool)
  if fg.ndim != 1 or fg.shape != bg.shape:
    raise ValueError(f"fg and bg must be [N] masks of one image (vmap for batches); got {fg.shape}, {bg.shape}")
  n = fg.shape[0]
  if n == 0:
    return (jnp.zeros((num_samples,), jnp.int32), jnp.zeros((num_samples,), bool),
            jnp.zeros((num_samples,), bool))
  keys = jax.random.uniform(rng, (n,))  # one key per candidate; fg and bg are disjoint
  max_fg = int(num_samples * positive_fraction)

  slot = jnp.arange(num_samples)
  if max_fg > 0:
    fg_keys, fg_idx = jax.lax.top_k(jnp.where(fg, keys, -jnp.inf), min(max_fg, n))
    fg_take = fg_keys > -jnp.inf          # candidates sort before non-candidates
    n_fg = jnp.sum(fg_take).astype(jnp.int32)
  else:
    fg_idx, fg_take, n_fg = jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool), jnp.int32(0)
  bg_keys, bg_idx = jax.lax.top_k(jnp.where(bg, keys, -jnp.inf), min(num_samples, n))
  bg_take = (bg_keys > -jnp.inf) & (jnp.arange(bg_idx.shape[0]) < num_samples - n_fg)
  n_bg = jnp.sum(bg_take).astype(jnp.int32)

  # Compact: fg j -> slot j, bg j -> slot n_fg + j.
  indices = jnp.zeros((num_samples,), jnp.int32)
  indices = indices.at[jnp.where(fg_take, jnp.arange(fg_idx.shape[0]), num_samples)].set(
      fg_idx.astype(jnp.int32), mode="drop")
  indices = indices.at[jnp.where(bg_take, n_fg + jnp.arange(bg_idx.shape[0]), num_samples)].set(
      bg_idx.astype(jnp.int32), mode="drop")
  is_fg = slot < n_fg
  valid = slot < n_fg + n_bg
  return indices, is_fg, valid


def rpn_targets(anchors, gt_boxes, gt_valid, rng, *, positive_iou: float = 0.7, negative_iou: float = 0.3,
                batch_size_per_image: int | None = 256, positive_fraction: float = 0.5,
                allow_low_quality: bool = True) -> RpnTargets:
  """RPN labels of ``anchors [A, 4]`` for one image with ``gt_boxes [G, 4]``, ``gt_valid [G]``.

  Rules in the module docstring. Returns :class:`RpnTargets` ``(labels [A] int32 in {1 fg, 0 bg,
  -1 ignore}, matched_gt_index [A] int32)``. ``batch_size_per_image=None`` skips the subsampling
  (labels are then the full candidate sets and ``rng`` is unused). ``G`` may be 0.
  """
  anchors = jnp.asarray(anchors, jnp.float32)
  gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
  gt_valid = jnp.asarray(gt_valid, bool)
  if gt_valid.ndim != 1:
    raise ValueError(f"gt_valid must be [G] (one image; vmap over the batch); got {gt_valid.shape}")
  match = matching.match_anchors(anchors, gt_boxes, jnp.zeros(gt_valid.shape, jnp.int32), gt_valid,
                                 positive_iou=positive_iou, negative_iou=negative_iou,
                                 allow_low_quality=allow_low_quality, low_quality_rematch=False)
  labels = match.state
  if batch_size_per_image is not None:
    if rng is None:
      raise ValueError("rpn_targets needs an rng key to subsample (or batch_size_per_image=None)")
    idx, is_fg, valid = balanced_sample(labels == 1, labels == 0, rng, num_samples=batch_size_per_image,
                                        positive_fraction=positive_fraction)
    num_anchors = labels.shape[0]
    labels = jnp.full((num_anchors,), -1, jnp.int32).at[jnp.where(valid, idx, num_anchors)].set(
        is_fg.astype(jnp.int32), mode="drop")
  matched = jnp.where(labels == 1, match.matched_gt, 0).astype(jnp.int32)
  return RpnTargets(labels=labels.astype(jnp.int32), matched_gt_index=matched)


def rpn_box_targets(anchors, gt_boxes, targets: RpnTargets,
                    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
  """Regression targets ``[..., A, 4]``: ``encode(gt_boxes[matched_gt_index], anchors, weights)``
  where ``labels == 1``, zeros elsewhere. One image, or a vmapped batch (then vmap this too)."""
  anchors = jnp.asarray(anchors, jnp.float32)
  gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
  if gt_boxes.shape[-2] == 0:
    gt_boxes = jnp.zeros(gt_boxes.shape[:-2] + (1, 4), jnp.float32)
  matched = jnp.take_along_axis(gt_boxes, targets.matched_gt_index[..., None], axis=-2)
  deltas = box_ops.encode(matched, anchors, weights)
  return jnp.where(targets.labels[..., None] == 1, deltas, 0.0)


def _check_level_slices(level_slices, num_anchors):
  slices = [(int(a), int(b)) for a, b in level_slices]
  if (not slices or slices[0][0] != 0 or slices[-1][1] != num_anchors or any(a >= b for a, b in slices)
      or any(p[1] != q[0] for p, q in zip(slices, slices[1:]))):
    raise ValueError(f"level_slices must be contiguous non-empty (start, stop) pairs covering [0, {num_anchors}); "
                     f"got {slices}")
  return slices


def generate_proposals(objectness, deltas, anchors, level_slices: Sequence[tuple[int, int]], image_hw, *,
                       pre_nms_topk: int = 2000, post_nms_topk: int = 1000, nms_iou: float = 0.7,
                       min_size: float = 0.0, bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                       scale_clamp: float | None = box_ops.DEFAULT_DECODE_CLAMP) -> Proposals:
  """Proposals from RPN outputs ``objectness [B, A]`` (logits) and ``deltas [B, A, 4]``.

  ``anchors [A, 4]`` (or per image ``[B, A, 4]``), ``level_slices`` the static per-level
  ``(start, stop)`` of the flat anchor order, ``image_hw [B, 2]`` (height, width) to clip to.
  ``pre_nms_topk`` is per level and ``post_nms_topk`` per image (detectron2 FPN: 2000 / 1000 in
  training, 1000 / 1000 at test). Non-finite logits or boxes never become proposals. Returns
  :class:`Proposals` with ``post_nms_topk`` slots per image, ``scores`` the objectness logits.
  """
  objectness = jax.lax.stop_gradient(jnp.asarray(objectness))
  deltas = jax.lax.stop_gradient(jnp.asarray(deltas))
  if objectness.ndim != 2 or deltas.shape != objectness.shape + (4,):
    raise ValueError(f"objectness must be [B, A] and deltas [B, A, 4]; got {objectness.shape} and {deltas.shape}")
  batch, num_anchors = objectness.shape
  if not isinstance(anchors, jax.Array):
    anchors = np.asarray(anchors, np.float32)
  if anchors.shape not in ((num_anchors, 4), (batch, num_anchors, 4)):
    raise ValueError(f"anchors must be [A={num_anchors}, 4] or [B={batch}, A, 4]; got {anchors.shape}")
  slices = _check_level_slices(level_slices, num_anchors)
  pre_nms_topk = _check_count("pre_nms_topk", pre_nms_topk)
  post_nms_topk = _check_count("post_nms_topk", post_nms_topk)
  image_hw = jnp.asarray(image_hw, jnp.float32)
  if image_hw.shape != (batch, 2):
    raise ValueError(f"image_hw must be [B={batch}, 2] (height, width); got {image_hw.shape}")
  anchors = jax.lax.stop_gradient(jnp.broadcast_to(jnp.asarray(anchors, jnp.float32), (batch, num_anchors, 4)))

  cand_boxes, cand_scores, cand_levels = [], [], []
  for level, (start, stop) in enumerate(slices):
    logits = objectness[:, start:stop].astype(jnp.float32)
    logits = jnp.where(jnp.isfinite(logits), logits, -jnp.inf)   # NaN / +inf never win a slot
    k = min(pre_nms_topk, stop - start)
    top, idx = jax.lax.top_k(logits, k)                           # [B, k]
    idx = start + idx
    sel_deltas = jnp.take_along_axis(deltas, idx[..., None], axis=1).astype(jnp.float32)
    sel_anchors = jnp.take_along_axis(anchors, idx[..., None], axis=1)
    boxes = box_ops.decode(sel_deltas, sel_anchors, bbox_reg_weights, clamp=scale_clamp)
    boxes = box_ops.clip(boxes, image_hw[:, 0, None], image_hw[:, 1, None])
    finite = jnp.all(jnp.isfinite(boxes), axis=-1)
    boxes = jnp.where(finite[..., None], boxes, 0.0)
    big = (boxes[..., 2] - boxes[..., 0] > min_size) & (boxes[..., 3] - boxes[..., 1] > min_size)
    cand_boxes.append(boxes)
    cand_scores.append(jnp.where(finite & big, top, -jnp.inf))
    cand_levels.append(jnp.full((batch, k), level, jnp.int32))
  cand_boxes = jnp.concatenate(cand_boxes, axis=1)
  cand_scores = jnp.concatenate(cand_scores, axis=1)
  cand_levels = jnp.concatenate(cand_levels, axis=1)

  def one_image(b, s, lvl):
    keep, valid = nms_ops.batched_nms(b, s, lvl, iou_threshold=nms_iou, max_output=post_nms_topk)
    return (jnp.where(valid[:, None], b[keep], 0.0), jnp.where(valid, s[keep], 0.0),
            jnp.sum(valid).astype(jnp.int32))

  boxes, scores, num_valid = jax.vmap(one_image)(cand_boxes, cand_scores, cand_levels)
  return Proposals(boxes=boxes, scores=scores, num_valid=num_valid)
