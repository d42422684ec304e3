"""Axis-aligned box geometry: overlap measures and the anchor box coder.

Boxes are ``[..., 4]`` arrays in absolute pixels, ``(x1, y1, x2, y2)``, continuous
coordinates: width = x2 - x1 (no "+1"). Negative extents are treated as empty.

Overlap measures (aligned elementwise unless named ``pairwise_*``):
  * IoU  = |A n B| / |A u B|.
  * GIoU = IoU - |C \\ (A u B)| / |C|, C the smallest enclosing box
    (Rezatofighi et al., CVPR 2019, Alg. 1).
  * DIoU = IoU - rho^2(b, b_gt) / c^2, rho the centre distance and c the diagonal of C
    (Zheng et al., AAAI 2020, Eq. 6).
  * CIoU = DIoU - alpha * v, v = 4/pi^2 (atan(w_gt/h_gt) - atan(w/h))^2,
    alpha = v / ((1 - IoU) + v) (Zheng et al., Eqs. 8-11). alpha is a constant
    (``stop_gradient``), as the paper prescribes. The paper's extra trick of dropping the
    1/(w^2+h^2) factor from dv/dw (meant for [0,1]-normalised boxes) is NOT applied.

Degenerate inputs (zero area, all-zero padding, identical boxes) give finite values and finite
gradients: every division goes through ``_safe_div`` (a ``jnp.where`` on both the numerator
side and the denominator so the untaken branch never sees 0/0). By convention the IoU of two
empty boxes is 0.

Box coder (Girshick, Fast R-CNN Eq. in App. C / Detectron ``BoxCoder``):
  dx = wx (gx - ax) / aw, dy = wy (gy - ay) / ah, dw = ww log(gw / aw), dh = wh log(gh / ah),
  with (x, y) box centres.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

# Denominators below this are treated as 0 (boxes are in pixels, so 1e-9 px^2 is "empty").
_EPS = 1e-9
# Widths/heights are floored at this before log / atan so the coder stays finite.
_MIN_SIZE = 1e-6
DEFAULT_DECODE_CLAMP = math.log(1000.0 / 16.0)


def _safe_div(num, den, eps=_EPS):
  """num / den where den > eps, else 0; gradients stay finite on both branches."""
  ok = den > eps
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _split(boxes):
  boxes = jnp.asarray(boxes)
  if boxes.shape[-1:] != (4,):
    raise ValueError(f"boxes must have a trailing dimension of 4 (x1, y1, x2, y2); got shape {boxes.shape}")
  return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def area(boxes):
  """Area of ``[..., 4]`` xyxy boxes -> ``[...]``; negative widths/heights count as 0."""
  x1, y1, x2, y2 = _split(boxes)
  return jnp.maximum(x2 - x1, 0.0) * jnp.maximum(y2 - y1, 0.0)


def _intersection_union(b1, b2):
  """Intersection and union of broadcastable xyxy boxes."""
  ax1, ay1, ax2, ay2 = _split(b1)
  bx1, by1, bx2, by2 = _split(b2)
  iw = jnp.maximum(jnp.minimum(ax2, bx2) - jnp.maximum(ax1, bx1), 0.0)
  ih = jnp.maximum(jnp.minimum(ay2, by2) - jnp.maximum(ay1, by1), 0.0)
  inter = iw * ih
  union = area(b1) + area(b2) - inter
  return inter, union


def pairwise_iou(boxes1, boxes2):
  """IoU of every pair: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]`` (batch dims broadcast)."""
  boxes1 = jnp.asarray(boxes1)
  boxes2 = jnp.asarray(boxes2)
  if boxes1.ndim < 2 or boxes2.ndim < 2:
    raise ValueError(f"pairwise_iou needs boxes1 [..., N, 4] and boxes2 [..., M, 4]; got shapes "
                     f"{boxes1.shape} and {boxes2.shape}")
  inter, union = _intersection_union(boxes1[..., :, None, :], boxes2[..., None, :, :])
  return _safe_div(inter, union)


def iou(b1, b2):
  """Aligned IoU of broadcastable ``[..., 4]`` boxes -> ``[...]``."""
  inter, union = _intersection_union(b1, b2)
  return _safe_div(inter, union)


def _enclosing(b1, b2):
  ax1, ay1, ax2, ay2 = _split(b1)
  bx1, by1, bx2, by2 = _split(b2)
  cw = jnp.maximum(jnp.maximum(ax2, bx2) - jnp.minimum(ax1, bx1), 0.0)
  ch = jnp.maximum(jnp.maximum(ay2, by2) - jnp.minimum(ay1, by1), 0.0)
  return cw, ch


def giou(b1, b2):
  """Aligned generalized IoU (Rezatofighi et al. 2019) -> ``[...]`` in [-1, 1]."""
  inter, union = _intersection_union(b1, b2)
  cw, ch = _enclosing(b1, b2)
  c_area = cw * ch
  return _safe_div(inter, union) - _safe_div(c_area - union, c_area)


def _centre_penalty(b1, b2):
  """rho^2 / c^2 of DIoU (Zheng et al. 2020, Eq. 6)."""
  ax1, ay1, ax2, ay2 = _split(b1)
  bx1, by1, bx2, by2 = _split(b2)
  rho2 = ((ax1 + ax2 - bx1 - bx2) ** 2 + (ay1 + ay2 - by1 - by2) ** 2) * 0.25
  cw, ch = _enclosing(b1, b2)
  return _safe_div(rho2, cw * cw + ch * ch)


def diou(b1, b2):
  """Aligned distance IoU (Zheng et al. 2020, Eq. 6) -> ``[...]``."""
  return iou(b1, b2) - _centre_penalty(b1, b2)


def ciou(b1, b2):
  """Aligned complete IoU (Zheng et al. 2020, Eqs. 8-11); ``b2`` is the target box.

  v is symmetric in the two boxes; alpha = v / (1 - IoU + v) is a stop-gradient constant.
  """
  i = iou(b1, b2)
  ax1, ay1, ax2, ay2 = _split(b1)
  bx1, by1, bx2, by2 = _split(b2)
  w1 = jnp.maximum(ax2 - ax1, _MIN_SIZE)
  h1 = jnp.maximum(ay2 - ay1, _MIN_SIZE)
  w2 = jnp.maximum(bx2 - bx1, _MIN_SIZE)
  h2 = jnp.maximum(by2 - by1, _MIN_SIZE)
  v = (4.0 / math.pi ** 2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
  alpha = jax.lax.stop_gradient(_safe_div(v, (1.0 - i) + v))
  return i - _centre_penalty(b1, b2) - alpha * v


def _check_weights(weights):
  if len(weights) != 4 or any(float(w) <= 0 for w in weights):
    raise ValueError(f"weights must be 4 positive numbers (wx, wy, ww, wh); got {weights!r}")
  return tuple(float(w) for w in weights)


def _centre_size(boxes):
  x1, y1, x2, y2 = _split(boxes)
  w = x2 - x1
  h = y2 - y1
  return x1 + 0.5 * w, y1 + 0.5 * h, w, h


def encode(boxes, anchors, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
  """Encode xyxy ``boxes`` relative to ``anchors`` (broadcastable) as deltas (dx, dy, dw, dh).

  Detectron convention: dx = wx*(gx-ax)/aw, dy = wy*(gy-ay)/ah, dw = ww*log(gw/aw),
  dh = wh*log(gh/ah), centres and sizes with width = x2 - x1.
  SSD / AP-loss "variances (0.1, 0.1, 0.2, 0.2)" (targets divided by the variances) are
  ``weights=(10, 10, 5, 5)``.
  Widths/heights are floored at 1e-6 px, so empty (padded) boxes give finite deltas.
  """
  wx, wy, ww, wh = _check_weights(weights)
  gx, gy, gw, gh = _centre_size(boxes)
  ax, ay, aw, ah = _centre_size(anchors)
  aw = jnp.maximum(aw, _MIN_SIZE)
  ah = jnp.maximum(ah, _MIN_SIZE)
  gw = jnp.maximum(gw, _MIN_SIZE)
  gh = jnp.maximum(gh, _MIN_SIZE)
  return jnp.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                    ww * jnp.log(gw / aw), wh * jnp.log(gh / ah)], axis=-1)


def decode(deltas, anchors, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
           clamp: float | None = DEFAULT_DECODE_CLAMP):
  """Inverse of :func:`encode`: deltas ``[..., 4]`` + anchors (broadcastable) -> xyxy boxes.

  dw/wh and dh/wh are clamped from above at ``clamp`` (Detectron's bbox_xform_clip,
  log(1000/16)) before exp, so huge predictions cannot overflow; ``clamp=None`` disables it.
  """
  wx, wy, ww, wh = _check_weights(weights)
  deltas = jnp.asarray(deltas)
  if deltas.shape[-1:] != (4,):
    raise ValueError(f"deltas must have a trailing dimension of 4 (dx, dy, dw, dh); got shape {deltas.shape}")
  ax, ay, aw, ah = _centre_size(anchors)
  dx = deltas[..., 0] / wx
  dy = deltas[..., 1] / wy
  dw = deltas[..., 2] / ww
  dh = deltas[..., 3] / wh
  if clamp is not None:
    dw = jnp.minimum(dw, clamp)
    dh = jnp.minimum(dh, clamp)
  cx = dx * aw + ax
  cy = dy * ah + ay
  w = jnp.exp(dw) * aw
  h = jnp.exp(dh) * ah
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def clip(boxes, height, width):
  """Clip xyxy boxes to [0, width] x [0, height].

  ``height``/``width`` may be Python numbers, traced scalars, or arrays broadcastable to
  ``boxes.shape[:-1]`` (e.g. ``image_hw[:, 0, None]`` for per-image sizes of ``[B, N, 4]``).
  """
  x1, y1, x2, y2 = _split(boxes)
  height = jnp.asarray(height, dtype=x1.dtype)
  width = jnp.asarray(width, dtype=x1.dtype)
  x1 = jnp.clip(x1, 0.0, width)
  x2 = jnp.clip(x2, 0.0, width)
  y1 = jnp.clip(y1, 0.0, height)
  y2 = jnp.clip(y2, 0.0, height)
  return jnp.stack([x1, y1, x2, y2], axis=-1)


def xywh_to_xyxy(boxes):
  """COCO-style (x_min, y_min, width, height) -> (x1, y1, x2, y2)."""
  x, y, w, h = _split(boxes)
  return jnp.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_xywh(boxes):
  """(x1, y1, x2, y2) -> COCO-style (x_min, y_min, width, height)."""
  x1, y1, x2, y2 = _split(boxes)
  return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
