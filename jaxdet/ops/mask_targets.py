"""Mask R-CNN mask-head targets and loss (He et al., Mask R-CNN, ICCV 2017, §3), static shapes.

**Targets** (§3 "Mask Representation" / "Training": "The mask target is the intersection between
an RoI and its associated ground-truth mask"; an ``m x m`` target per RoI, m = 28 with FPN).
Ground-truth masks arrive as *box-frame masks*: ``gt_masks[b, g]`` is a ``{0, 1}`` ``M x M``
rasterisation of object ``g`` inside its frame box ``mask_boxes[b, g] = (fx1, fy1, fx2, fy2)``
(image pixels; mask cell ``(i, j)`` covers ``[fx1 + j fw / M, fx1 + (j + 1) fw / M) x [fy1 +
i fh / M, ...)``, ``fw = fx2 - fx1``, ``fh = fy2 - fy1``), detectron2's ``PolygonMasks`` /
``rasterize_polygons_within_box`` representation. The target of RoI ``r`` matched to gt ``g`` is

  ``t[r] = RoIAlign(mask_g, roi_r in mask-cell coordinates) >= 0.5``

with RoIAlign ``aligned=True`` (§3 "RoIAlign", :func:`jaxdet.ops.roi_align.roi_align`) on the
``M x M`` mask as a stride-1 map, the RoI mapped by ``x_m = (x - fx1) M / fw``,
``y_m = (y - fy1) M / fh`` (mask cell ``j`` covers ``[j, j + 1)``: the same pixel convention as
the image), and the binarisation at 0.5 of detectron2's ``BitMasks.crop_and_resize`` (torchvision's
``project_masks_on_boxes`` uses the same RoIAlign projection but keeps the soft values).

The mask is 0 outside its frame. RoIAlign's border rule gives samples within one cell outside a
map the edge value, which would smear the frame's edge row / column outwards; so the masks are
padded with a one-cell zero border on the device (``[M + 2, M + 2]``, coordinates shifted by one
cell) and then pooled: outside the frame the sampled mask is 0, and across the frame edge it
falls off bilinearly over half a cell exactly as the full-image mask (zero outside the object)
would. All RoIs are pooled with one gather through ``roi_align(..., feature_index=...)`` on the
flattened ``[B * G, M + 2, M + 2, 1]`` masks (no per-RoI copy of a mask). Targets carry no
gradient.

**Loss** (§3 "Multi-task loss": "L_mask is defined as the average binary cross-entropy loss", "for
an RoI associated with ground-truth class k, L_mask is only defined on the k-th mask"):
detectron2's ``mask_rcnn_loss``: per-pixel sigmoid BCE of the gt class' mask logits, averaged over
every pixel of every foreground RoI (``mean`` over ``n_fg x S x S``), 0 without foreground RoIs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.ops.roi_align import roi_align


def _shape_error(name, want, got):
  return ValueError(f"{name} must be {want}, got shape {tuple(got)}")


def mask_targets(gt_masks, mask_boxes, rois, gt_index, size: int, sampling_ratio: int = 2):
  """Binary ``size x size`` mask targets of ``rois`` (Mask R-CNN §3; rules in the module docstring).

  Args:
    gt_masks: ``[B, G, M, M]`` box-frame masks in ``{0, 1}`` (uint8 / bool / float); padded gts
      have zero masks.
    mask_boxes: ``[B, G, 4]`` xyxy frame boxes in image pixels (zeros for padded gts).
    rois: ``[B, R, 4]`` xyxy RoIs in image pixels (may be larger than the frame, reach outside it,
      or be padding).
    gt_index: integer ``[B, R]``: the gt each RoI is matched to (e.g.
      ``SampledRois.matched_gt_index``); clamped to ``[0, G - 1]``.
    size: the target side ``m`` (static; 28 in Mask R-CNN with FPN, 14 with C4).
    sampling_ratio: RoIAlign's fixed ``n x n`` samples per target cell (static, ``>= 1``).

  Returns:
    float32 ``[B, R, size, size]`` in ``{0., 1.}``. A frame with zero or negative width / height
    (padding) gives all-zero targets. Under ``jax.jit`` pass ``size`` and ``sampling_ratio`` as
    static arguments.
  """
  gt_masks = jnp.asarray(gt_masks)
  mask_boxes = jnp.asarray(mask_boxes)
  rois = jnp.asarray(rois)
  gt_index = jnp.asarray(gt_index)
  if gt_masks.ndim != 4:
    raise _shape_error("gt_masks", "[B, G, M, M] box-frame masks", gt_masks.shape)
  batch, num_gt, mask_h, mask_w = gt_masks.shape
  if mask_boxes.shape != (batch, num_gt, 4):
    raise _shape_error("mask_boxes", f"[B, G, 4] = {(batch, num_gt, 4)}", mask_boxes.shape)
  if rois.ndim != 3 or rois.shape[0] != batch or rois.shape[2] != 4:
    raise _shape_error("rois", f"[B={batch}, R, 4]", rois.shape)
  if gt_index.shape != rois.shape[:2]:
    raise _shape_error("gt_index", f"[B, R] = {rois.shape[:2]}", gt_index.shape)
  if not jnp.issubdtype(gt_index.dtype, jnp.integer):
    raise ValueError(f"gt_index must be an integer array, got dtype {gt_index.dtype}")
  if isinstance(size, bool) or int(size) != size or size < 1:
    raise ValueError(f"size must be a positive int (the m of the m x m targets), got {size!r}")
  size = int(size)
  num_rois = rois.shape[1]
  if num_gt == 0 or mask_h == 0 or mask_w == 0:
    return jnp.zeros((batch, num_rois, size, size), jnp.float32)

  masks = jax.lax.stop_gradient(gt_masks).astype(jnp.float32)
  masks = jnp.pad(masks, ((0, 0), (0, 0), (1, 1), (1, 1)))  # zero outside the frame
  masks = masks.reshape(batch * num_gt, mask_h + 2, mask_w + 2, 1)
  gi = jnp.clip(gt_index.astype(jnp.int32), 0, num_gt - 1)
  frame = jnp.take_along_axis(jax.lax.stop_gradient(mask_boxes).astype(jnp.float32),
                              gi[..., None], axis=1)            # [B, R, 4]
  fx1, fy1 = frame[..., 0], frame[..., 1]
  fw, fh = frame[..., 2] - fx1, frame[..., 3] - fy1
  ok = (fw > 0) & (fh > 0) & jnp.all(jnp.isfinite(frame), axis=-1)
  sx = mask_w / jnp.where(ok, fw, 1.0)
  sy = mask_h / jnp.where(ok, fh, 1.0)
  rois = jax.lax.stop_gradient(rois).astype(jnp.float32)
  # RoI -> cell coordinates of the padded mask (+1: the zero border shifts the cells by one).
  cell = jnp.stack([(rois[..., 0] - fx1) * sx, (rois[..., 1] - fy1) * sy,
                    (rois[..., 2] - fx1) * sx, (rois[..., 3] - fy1) * sy], axis=-1) + 1.0
  cell = jnp.where(ok[..., None], cell, 0.0)
  feature_index = jnp.arange(batch, dtype=jnp.int32)[:, None] * num_gt + gi
  pooled = roi_align(masks, cell, size, spatial_scale=1.0, sampling_ratio=sampling_ratio,
                     aligned=True, method="gather", feature_index=feature_index)[..., 0]
  return jnp.where(ok[..., None, None] & (pooled >= 0.5), 1.0, 0.0).astype(jnp.float32)


def mask_loss(mask_logits, classes, targets, fg):
  """L_mask (Mask R-CNN §3 "Multi-task loss"; detectron2 ``mask_rcnn_loss``) -> float32 scalar.

  Args:
    mask_logits: ``[B, R, S, S, K]`` per-class mask logits (K = 1: class-agnostic masks).
    classes: integer ``[B, R]`` gt class of each RoI in ``[0, K)`` (clamped to it, so the
      background / padding class of non-fg RoIs is harmless).
    targets: ``[B, R, S, S]`` binary targets (:func:`mask_targets`); no gradient.
    fg: bool ``[B, R]``: the foreground RoIs; only they contribute.

  Returns:
    ``sum_{fg r, pixels p} BCE(x[r, p, k_r], t[r, p]) / (n_fg * S * S)`` (0 when ``n_fg = 0``),
    with ``BCE(x, t) = max(x, 0) - x t + log(1 + exp(-|x|))`` (stable for any logit), computed in
    float32 whatever the logits' dtype.
  """
  mask_logits = jnp.asarray(mask_logits)
  classes = jnp.asarray(classes)
  targets = jnp.asarray(targets)
  fg = jnp.asarray(fg)
  if mask_logits.ndim != 5:
    raise _shape_error("mask_logits", "[B, R, S, S, K]", mask_logits.shape)
  batch, num_rois, side_h, side_w, num_classes = mask_logits.shape
  if targets.shape != (batch, num_rois, side_h, side_w):
    raise _shape_error("targets", f"[B, R, S, S] = {(batch, num_rois, side_h, side_w)}",
                       targets.shape)
  if classes.shape != (batch, num_rois) or fg.shape != (batch, num_rois):
    raise ValueError(f"classes and fg must be [B, R] = {(batch, num_rois)}, got {classes.shape} "
                     f"and {fg.shape}")
  if not jnp.issubdtype(classes.dtype, jnp.integer):
    raise ValueError(f"classes must be an integer array, got dtype {classes.dtype}")
  if num_classes == 0:
    raise ValueError("mask_logits has K = 0 mask channels")
  k = jnp.clip(classes.astype(jnp.int32), 0, num_classes - 1)
  logits = jnp.take_along_axis(mask_logits, k[:, :, None, None, None], axis=-1)[..., 0]
  logits = logits.astype(jnp.float32)
  t = jax.lax.stop_gradient(targets).astype(jnp.float32)
  bce = jnp.maximum(logits, 0.0) - logits * t + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  fg = fg.astype(bool)
  total = jnp.sum(jnp.where(fg[:, :, None, None], bce, 0.0))
  count = jnp.sum(fg).astype(jnp.float32) * (side_h * side_w)
  return total / jnp.maximum(count, 1.0)
