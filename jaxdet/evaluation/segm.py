"""Instance masks at inference: paste-back into the image and COCO RLE encoding (host side).

Mask R-CNN (He et al. 2017, §3 "Implementation Details", Inference): "The m x m floating-number
mask output is then resized to the RoI size, and binarized at a threshold of 0.5." The resize
follows detectron2's ``paste_masks_in_image`` (``_do_paste_mask``): image pixel ``(y, x)`` (centre
``(x + 0.5, y + 0.5)``, the box convention of :mod:`jaxdet.ops.boxes`) reads the ``S x S``
probability map at

  ``u = (x + 0.5 - bx1) / bw * S - 0.5``,  ``v = (y + 0.5 - by1) / bh * S - 0.5``

by bilinear interpolation with zeros outside the map (``grid_sample``, ``align_corners=False``,
``padding_mode='zeros'``), then ``>= threshold``. The interpolation is separable,
``P_img = Wy P Wx^T`` with 1-D hat weights ``max(0, 1 - |v - i|)`` (``i = 0..S-1``; a tap outside
the map simply has no row), so each detection costs two small matrix products over its box's pixel
range only (pixels further out read 0).

Results are COCO RLEs (``pycocotools.mask.encode``, counts as ``str`` so they are JSON-ready), to
be evaluated with ``evaluate_coco(..., iou_type="segm")``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _hat_weights(coord, size: int):
  """Bilinear weights ``[len(coord), size]`` of continuous index coordinates over ``size`` cells,
  zero outside the map (``grid_sample`` zero padding)."""
  return np.maximum(0.0, 1.0 - np.abs(coord[:, None] - np.arange(size)[None, :]))


def paste_masks(probs, boxes, height: int, width: int, threshold: float = 0.5):
  """Pastes ``S x S`` mask probabilities into the image (rule in the module docstring).

  Args:
    probs: ``[D, S, S]`` (or ``[D, S_h, S_w]``) mask probabilities of each detection's class.
    boxes: ``[D, 4]`` xyxy detection boxes in the pixels of the ``height x width`` image; may be
      fractional, reach outside the image or be degenerate (non-positive width / height or not
      finite: an empty mask).
    height, width: the image size (original image pixels, like the boxes).
    threshold: binarisation threshold (> 0; 0.5 in Mask R-CNN).
  Returns:
    ``bool [D, height, width]``.
  """
  probs = np.asarray(probs, np.float64)
  boxes = np.asarray(boxes, np.float64)
  if probs.ndim != 3:
    raise ValueError(f"probs must be [D, S, S] mask probabilities, got shape {probs.shape}")
  num, side_h, side_w = probs.shape
  if boxes.shape != (num, 4):
    raise ValueError(f"boxes must be [D={num}, 4] xyxy, got shape {boxes.shape}")
  height, width = int(height), int(width)
  if height < 0 or width < 0:
    raise ValueError(f"image size must be non-negative, got {height} x {width}")
  if not threshold > 0:
    raise ValueError(f"threshold must be > 0 (pixels away from the box read 0), got {threshold}")
  out = np.zeros((num, height, width), bool)
  for d in range(num):
    x1, y1, x2, y2 = boxes[d]
    bw, bh = x2 - x1, y2 - y1
    if not (np.all(np.isfinite(boxes[d])) and bw > 0 and bh > 0):
      continue
    # Pixels whose centre reads the map at u in (-1, S): x + 0.5 in (x1 - bw / 2S, x2 + bw / 2S).
    c0 = max(int(np.floor(x1 - 0.5 * bw / side_w)) - 1, 0)
    c1 = min(int(np.ceil(x2 + 0.5 * bw / side_w)) + 1, width)
    r0 = max(int(np.floor(y1 - 0.5 * bh / side_h)) - 1, 0)
    r1 = min(int(np.ceil(y2 + 0.5 * bh / side_h)) + 1, height)
    if c0 >= c1 or r0 >= r1:
      continue
    u = (np.arange(c0, c1) + 0.5 - x1) / bw * side_w - 0.5
    v = (np.arange(r0, r1) + 0.5 - y1) / bh * side_h - 0.5
    pasted = _hat_weights(v, side_h) @ probs[d] @ _hat_weights(u, side_w).T
    out[d, r0:r1, c0:c1] = pasted >= threshold
  return out


def encode_masks(masks) -> list[dict]:
  """``bool [D, H, W]`` masks -> COCO RLEs ``[{'size': [H, W], 'counts': str}, ...]``
  (``pycocotools.mask.encode`` on a Fortran-ordered ``uint8 [H, W, D]``)."""
  from pycocotools import mask as mask_utils

  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise ValueError(f"masks must be [D, H, W], got shape {masks.shape}")
  if len(masks) == 0:
    return []
  rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
  for rle in rles:
    rle["counts"] = rle["counts"].decode("ascii")
  return rles


def attach_segmentations(results: Sequence[dict], rles: Sequence[dict]) -> list[dict]:
  """Copies of COCO result dicts (``detections_to_coco``) with ``'segmentation'`` set to the RLE of
  the same detection (one RLE per result, same order)."""
  results, rles = list(results), list(rles)
  if len(results) != len(rles):
    raise ValueError(f"need one segmentation per result: {len(results)} results, {len(rles)} RLEs")
  return [dict(r, segmentation=s) for r, s in zip(results, rles)]
