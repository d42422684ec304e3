"""RoIAlign (He et al., Mask R-CNN, §3 "RoIAlign") with static shapes, FPN level assignment
(Lin et al., FPN, Eq. 1) and a crop-and-resize for MTGAN.

Definition (torchvision ``roi_align`` / detectron2 ``ROIAlign`` with ``aligned=True``):

* **Aligned coordinates.** Image pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)`` (box convention
  of :mod:`jaxdet.ops.boxes`), so the centre of feature cell ``(r, c)`` of a stride-``s`` map is at
  image point ``((c + 0.5) s, (r + 0.5) s)``. A box coordinate ``x`` becomes the continuous
  feature-index coordinate ``x * spatial_scale - 0.5`` (``spatial_scale = 1 / s``), in which cell
  ``c`` sits exactly at ``c``: the half-pixel offset that makes a box and its pooled features line
  up (Mask R-CNN's "avoid any quantization"; detectron2 "aligned"). ``aligned=False`` drops the
  offset and, as the original Caffe2 op, floors the RoI width and height at one cell.
* **Sampling grid.** The RoI is split into ``out_h x out_w`` equal bins; bin ``(i, j)`` is sampled
  at a regular ``n x n`` grid, ``n = sampling_ratio``, of points
  ``y = y0 + (i + (a + 0.5) / n) * h / out_h``, ``x = x0 + (j + (b + 0.5) / n) * w / out_w``
  (``a, b = 0..n-1``) and the output is the **mean** of the ``n^2`` bilinear samples ("sample four
  regular locations ... the result is not sensitive to the exact sampling locations", §3).
  detectron2's adaptive ``sampling_ratio=0`` (``n = ceil(h / out_h)`` per RoI) is a data-dependent
  shape and is not supported: ``n >= 1`` is fixed.
* **Border rules** (torchvision's bilinear): a sample with ``y < -1`` or ``y > H`` (likewise
  ``x < -1`` or ``x > W``) contributes 0 (it still counts in the mean); otherwise the coordinate is
  clamped to ``[0, H - 1]`` (``[0, W - 1]``) and interpolated from its 2 x 2 neighbours, so points
  within one cell outside the map take the edge value.

Both the border rule and the bilinear weights factor into a y part and an x part, so the pooled
value is ``out[i, j] = sum_{h, w} Wy[i, h] Wx[j, w] F[h, w]`` with 1-D weights ``Wy`` (``out_h x
H``, ``2 n`` non-zeros per row) and ``Wx`` -- RoIAlign with grid averaging is separable.

Implementation (``method``):

* ``"gather"`` (default): each bin needs the ``2n x 2n`` grid of taps (the 2 neighbours of each of
  the ``n`` y-samples times those of the ``n`` x-samples). The map is flattened to a ``[B*H*W, C]``
  table and all taps are fetched with one gather on flat indices, then reduced with the product
  of the 1-D weights (one elementwise multiply + sum, which XLA may fuse with the gather).
  Cost: ``4 n^2 out_h out_w`` rows of ``C`` read per RoI, independent of the map size; the
  gathered ``[B, R, out_h, n, 2, out_w, n, 2, C]`` taps are materialised if XLA does not fuse them
  (with n = 2, 7 x 7, C = 256, 512 RoIs: 100 M elements per image). The gradient is a scatter-add
  into the feature map (atomic adds on GPU: not bit-deterministic).
* ``"matmul"``: builds the dense ``Wy [out_h, H]`` and ``Wx [out_w, W]`` per RoI and contracts
  ``Wy F Wx^T`` with two einsums (float32, ``Precision.HIGHEST``), cheaper axis first. Cost:
  ``~2 C out_h H W`` flops per RoI (plus a smaller term), i.e. it grows with the map: good for
  small maps (coarse FPN levels, small crops) where matmul units beat gathers; too costly for P2
  of a large image (~120 GFLOP for 512 RoIs on a 200 x 334 map). Its gradient is matmuls too
  (no scatter, deterministic).

The costs above are operation counts, not timings; ``gather`` is the default because its cost
does not grow with the map size, which is what FPN's finest level (P2) needs.

Boxes are treated as constants (``stop_gradient``, as torchvision / detectron2 proposals);
gradients flow to the features only. Weights are computed in float32 and the taps accumulated in
float32; the output keeps the features' floating dtype (bf16 in, bf16 out; integer inputs give
float32).

FPN (``fpn_levels``, FPN Eq. 1; detectron2 ``assign_boxes_to_levels``): a box of size
``sqrt(w h)`` is pooled from level ``floor(k0 + log2(sqrt(w h) / 224 + 1e-8))`` clamped to the
pooled levels (k0 = 4). :func:`multilevel_roi_align` keeps shapes static without pooling every
RoI on every level: the levels are concatenated into one flat table and each RoI's taps are
offset into its own level (per-RoI height, width and scale are gathered from small per-level
constants), so the cost is that of one single-level RoIAlign (plus one copy of the pyramid).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops import boxes as box_ops

_LEVEL_EPS = 1e-8  # detectron2's eps inside the log2 of FPN Eq. 1
_METHODS = ("gather", "matmul")


# ---------------------------------------------------------------------------------------- checks
def _output_hw(output_size) -> tuple[int, int]:
  if isinstance(output_size, (int, np.integer)):
    output_size = (output_size, output_size)
  try:
    out_h, out_w = (int(s) for s in output_size)
  except (TypeError, ValueError):
    raise ValueError(f"output_size must be an int or (height, width), got {output_size!r}") \
        from None
  if out_h < 1 or out_w < 1:
    raise ValueError(f"output_size must be positive, got {output_size!r}")
  return out_h, out_w


def _check_args(boxes, batch: int | None, sampling_ratio, method: str):
  """``batch=None``: any leading size (boxes paired with a ``feature_index``)."""
  boxes = jnp.asarray(boxes)
  if boxes.ndim != 3 or boxes.shape[2] != 4 or (batch is not None and boxes.shape[0] != batch):
    lead = "B'" if batch is None else f"B={batch}"
    raise ValueError(f"boxes must be [{lead}, R, 4] xyxy, got shape {boxes.shape}")
  if not isinstance(sampling_ratio, (int, np.integer)) or sampling_ratio < 1:
    raise ValueError(f"sampling_ratio must be an int >= 1 (a fixed n x n grid per bin), got "
                     f"{sampling_ratio!r}; the adaptive sampling_ratio=0 of detectron2/torchvision "
                     "gives data-dependent shapes and is not supported")
  if method not in _METHODS:
    raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
  return jax.lax.stop_gradient(boxes.astype(jnp.float32))


def _check_features(features, name: str = "features"):
  features = jnp.asarray(features)
  if features.ndim != 4:
    raise ValueError(f"{name} must be NHWC [B, H, W, C], got shape {features.shape}")
  return features


def _check_feature_index(feature_index, rois_shape, num_maps: int, method: str):
  """``feature_index [B', R]`` integer -> int32 clamped to ``[0, num_maps - 1]``."""
  if method != "gather":
    raise ValueError(f"feature_index is only supported by method='gather' (the dense 'matmul' "
                     f"contraction pairs RoI row b with map b), got method={method!r}")
  feature_index = jnp.asarray(feature_index)
  if not jnp.issubdtype(feature_index.dtype, jnp.integer):
    raise ValueError(f"feature_index must be an integer array, got dtype {feature_index.dtype}")
  if feature_index.shape != tuple(rois_shape):
    raise ValueError(f"feature_index must be [B', R] = {tuple(rois_shape)} (one map index per "
                     f"RoI of boxes), got shape {feature_index.shape}")
  if num_maps == 0 and feature_index.size:
    raise ValueError("feature_index given with no feature map to pool from (features has B=0)")
  return jnp.clip(feature_index.astype(jnp.int32), 0, max(num_maps - 1, 0))


def _out_dtype(dtype):
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


# ---------------------------------------------------------------------------------------- weights
def _axis_taps(coord, size):
  """torchvision's 1-D bilinear rule at continuous index coordinates ``coord`` on an axis of
  ``size`` cells (an int or an array broadcastable to ``coord``).

  Returns ``(index [..., 2] int32, weight [..., 2] float32)`` of the low and high neighbour; both
  weights are 0 for a sample outside ``[-1, size]``.
  """
  size_f = jnp.asarray(size, jnp.float32)
  valid = (coord >= -1.0) & (coord <= size_f)
  c = jnp.clip(coord, 0.0, size_f)  # clip to size too: keeps far-away samples' indices in range
  low = jnp.floor(c).astype(jnp.int32)
  at_edge = low >= size - 1
  low = jnp.where(at_edge, size - 1, low)
  high = jnp.where(at_edge, size - 1, low + 1)
  frac = jnp.where(at_edge, 0.0, c - low.astype(jnp.float32))
  weight = jnp.stack([1.0 - frac, frac], axis=-1) * valid[..., None]
  return jnp.stack([low, high], axis=-1), weight


def _axis_samples(start, length, bins: int, n: int):
  """Sample coordinates ``[B, R, bins, n]`` of RoIs starting at ``start`` with extent ``length``."""
  pos = (np.arange(bins)[:, None] + (np.arange(n)[None, :] + 0.5) / n).astype(np.float32)
  return start[..., None, None] + pos * (length / bins)[..., None, None]


def _taps(boxes, spatial_scale, height, width, out_hw, n: int, aligned: bool):
  """Per-axis taps of every RoI: ``(iy, wy)`` ``[B, R, out_h, n, 2]`` and ``(ix, wx)``
  ``[B, R, out_w, n, 2]``; each weight already carries its axis' ``1/n`` share of the mean."""
  scale = jnp.asarray(spatial_scale, jnp.float32)
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (boxes[..., k] * scale - offset for k in range(4))
  w, h = x2 - x1, y2 - y1
  if not aligned:
    w, h = jnp.maximum(w, 1.0), jnp.maximum(h, 1.0)
  size_y = height if isinstance(height, int) else height[..., None, None]
  size_x = width if isinstance(width, int) else width[..., None, None]
  iy, wy = _axis_taps(_axis_samples(y1, h, out_hw[0], n), size_y)
  ix, wx = _axis_taps(_axis_samples(x1, w, out_hw[1], n), size_x)
  return iy, wy / n, ix, wx / n


# ---------------------------------------------------------------------------------------- pooling
def _per_roi(value):
  """A per-RoI ``[B, R]`` array broadcast against ``[B, R, out_h, n, 2, out_w, n, 2]``."""
  return value[..., None, None, None, None, None, None] if jnp.ndim(value) else value


def _pool_gather(table, base, width, iy, wy, ix, wx):
  """Gather-and-reduce from a flat ``[N, C]`` table; ``base`` / ``width`` per RoI ``[B, R]`` (or
  scalars). Returns float32 ``[B, R, out_h, out_w, C]``."""
  flat = (_per_roi(base) + iy[:, :, :, :, :, None, None, None] * _per_roi(width)
          + ix[:, :, None, None, None, :, :, :])      # [B, R, out_h, n, 2, out_w, n, 2]
  weight = wy[:, :, :, :, :, None, None, None] * wx[:, :, None, None, None, :, :, :]
  taps = table.at[flat].get(mode="promise_in_bounds")  # indices are in range by construction
  return jnp.sum(taps.astype(jnp.float32) * weight[..., None], axis=(3, 4, 6, 7))


def _dense_weights(index, weight, size: int):
  """``[B, R, out, n, 2]`` taps -> dense float32 interpolation matrix ``[B, R, out, size]``."""
  hot = index[..., None] == jnp.arange(size, dtype=jnp.int32)
  return jnp.sum(jnp.where(hot, weight[..., None], 0.0), axis=(3, 4))


def _pool_matmul(features, iy, wy, ix, wx):
  """``Wy F Wx^T`` per RoI with einsums -> float32 ``[B, R, out_h, out_w, C]``."""
  _, height, width, _ = features.shape
  out_h, out_w = iy.shape[2], ix.shape[2]
  mat_y, mat_x = _dense_weights(iy, wy, height), _dense_weights(ix, wx, width)
  feats = features.astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  if out_h * width * (height + out_w) <= out_w * height * (width + out_h):  # contract H first
    rows = jnp.einsum("brih,bhwc->briwc", mat_y, feats, precision=hi)
    return jnp.einsum("briwc,brjw->brijc", rows, mat_x, precision=hi)
  cols = jnp.einsum("brjw,bhwc->brhjc", mat_x, feats, precision=hi)
  return jnp.einsum("brih,brhjc->brijc", mat_y, cols, precision=hi)


# ---------------------------------------------------------------------------------------- RoIAlign
def roi_align(features, boxes, output_size, *, spatial_scale: float = 1.0, sampling_ratio: int = 2,
              aligned: bool = True, method: str = "gather", feature_index=None):
  """RoIAlign of ``boxes`` on ``features`` -> ``[B, R, out_h, out_w, C]`` (torchvision semantics).

  Args:
    features: NHWC ``[B, H, W, C]`` map of stride ``1 / spatial_scale``.
    boxes: ``[B, R, 4]`` xyxy in image pixels; RoI ``r`` of image ``b`` pools from ``features[b]``.
      Boxes may reach outside the map (border rules above); padding rows are harmless.
      With ``feature_index``, ``[B', R, 4]`` for any ``B'``.
    output_size: int or ``(out_h, out_w)`` (static).
    spatial_scale: feature cells per image pixel (``1 / stride``).
    sampling_ratio: fixed ``n >= 1`` (``n x n`` samples per bin); 0 (adaptive) raises ValueError.
    aligned: the half-pixel offset (True, detectron2 / Mask R-CNN) or the legacy False.
    method: ``"gather"`` or ``"matmul"``, see the module docstring (same result up to rounding).
    feature_index: optional integer ``[B', R]``: RoI ``r`` of row ``b`` pools from
      ``features[feature_index[b, r]]`` instead of ``features[b]`` (torchvision's per-RoI batch
      index; e.g. R RoIs each on its own small map out of N, without copying the maps per RoI).
      The result is ``[B', R, out_h, out_w, C]``. Indices are clamped to ``[0, B - 1]`` (no
      bounds error under jit). ``method="gather"`` only (ValueError otherwise): the gather
      offsets each RoI's taps by ``feature_index * H * W`` in the flat table.

  Under ``jax.jit`` pass ``output_size``, ``sampling_ratio``, ``aligned`` and ``method`` as static
  arguments. Gradients flow to ``features`` only.
  """
  features = _check_features(features)
  batch, height, width, channels = features.shape
  out_hw = _output_hw(output_size)
  boxes = _check_args(boxes, None if feature_index is not None else batch, sampling_ratio, method)
  if feature_index is not None:
    feature_index = _check_feature_index(feature_index, boxes.shape[:2], batch, method)
  iy, wy, ix, wx = _taps(boxes, spatial_scale, height, width, out_hw, int(sampling_ratio), aligned)
  if method == "matmul":
    out = _pool_matmul(features, iy, wy, ix, wx)
  else:
    table = features.reshape(batch * height * width, channels)
    if feature_index is None:
      base = jnp.arange(batch, dtype=jnp.int32)[:, None] * (height * width)
    else:
      base = feature_index * (height * width)
    out = _pool_gather(table, base, width, iy, wy, ix, wx)
  return out.astype(_out_dtype(features.dtype))


def crop_and_resize(images, boxes, size, *, sampling_ratio: int = 1, method: str = "gather"):
  """Bilinear crops ``[B, R, h, w, C]`` of ``boxes`` (image pixels) resized to ``size`` (int or
  ``(h, w)``): :func:`roi_align` at ``spatial_scale=1``, ``aligned=True``.

  With the default ``sampling_ratio=1`` output pixel ``(v, u)`` is the bilinear value of the image
  at ``(x1 + (u + 0.5) (x2 - x1) / w, y1 + (v + 0.5) (y2 - y1) / h)`` (pixel ``(r, c)`` centred on
  ``(c + 0.5, r + 0.5)``): the sample positions of ``jaxdet/data/roi_crops.py::crop_resize`` (the
  host-side numpy/PIL crop of the MTGAN RoI mining). The two agree (up to PIL's uint8 rounding)
  for RoIs no larger than the output and at least a pixel inside the image, and differ otherwise:

  * shrinking: ``crop_resize`` widens PIL's triangle filter by the shrink factor (antialiased
    average); this crop point-samples (``sampling_ratio=1``) or averages an ``n x n`` grid per
    output pixel -- raise ``sampling_ratio`` to approach the antialiased crop;
  * borders: ``crop_resize`` pads the image with zeros (black fades in within a pixel of the
    edge); here samples within one pixel outside the image take the edge value and samples
    further out are 0 (torchvision's rule).

  Integer (e.g. uint8) images give float32 crops (not rounded); float dtypes are kept.
  """
  return roi_align(images, boxes, size, spatial_scale=1.0, sampling_ratio=sampling_ratio,
                   aligned=True, method=method)


# ---------------------------------------------------------------------------------------- FPN
def fpn_levels(boxes, min_level: int = 2, max_level: int = 5, canonical_size: float = 224,
               canonical_level: int = 4):
  """FPN level of each ``[..., 4]`` xyxy box (FPN Eq. 1) -> int32 ``[...]``:
  ``floor(canonical_level + log2(sqrt(w h) / canonical_size + 1e-8))`` clamped to
  ``[min_level, max_level]``. Empty boxes go to ``min_level``."""
  if min_level > max_level:
    raise ValueError(f"need min_level <= max_level, got {min_level} > {max_level}")
  size = jnp.sqrt(box_ops.area(jax.lax.stop_gradient(jnp.asarray(boxes, jnp.float32))))
  level = jnp.floor(canonical_level + jnp.log2(size / canonical_size + _LEVEL_EPS))
  return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def _pyramid(features, min_level: int) -> tuple[list[int], list]:
  if isinstance(features, Mapping):
    levels = sorted(int(k) for k in features)
    maps = [features[k] for k in sorted(features, key=int)]
  elif isinstance(features, Sequence):
    levels = list(range(min_level, min_level + len(features)))
    maps = list(features)
  else:
    raise ValueError(f"features must be a dict {{level: [B, H, W, C]}} or a list of maps from "
                     f"min_level up, got {type(features).__name__}")
  if not maps or levels != list(range(levels[0], levels[0] + len(levels))):
    raise ValueError(f"features must cover consecutive FPN levels, got levels {levels}")
  maps = [_check_features(m, f"features[level {l}]") for l, m in zip(levels, maps)]
  batch, _, _, channels = maps[0].shape
  for level, m in zip(levels, maps):
    if m.shape[0] != batch or m.shape[3] != channels or m.dtype != maps[0].dtype:
      raise ValueError(f"every level must share batch, channels and dtype: level {levels[0]} is "
                       f"{maps[0].dtype} {maps[0].shape}, level {level} is {m.dtype} {m.shape}")
  return levels, maps


def multilevel_roi_align(features, boxes, output_size, *, min_level: int = 2,
                         sampling_ratio: int = 2, aligned: bool = True,
                         canonical_size: float = 224, canonical_level: int = 4,
                         method: str = "gather"):
  """RoIAlign of each RoI on its FPN level -> ``[B, R, out_h, out_w, C]`` (Mask R-CNN / FPN heads).

  Args:
    features: ``{level: [B, H_l, W_l, C]}`` (e.g. the output of ``jaxdet.models.fpn.FPN``,
      restricted to the pooled levels, typically 2..5) or a list of maps for levels
      ``min_level, min_level + 1, ...``. Levels must be consecutive; level ``l`` has stride
      ``2**l`` (``spatial_scale = 2**-l``).
    boxes: ``[B, R, 4]`` xyxy in image pixels.
    min_level: the level of ``features[0]`` when ``features`` is a list (ignored for a dict).
    canonical_size, canonical_level: of :func:`fpn_levels` (224, 4); the level range is the
      pooled levels.
    sampling_ratio, aligned, output_size: as :func:`roi_align`.
    method: ``"gather"``: one gather from the concatenated pyramid (cost of one RoIAlign);
      ``"matmul"``: :func:`roi_align` on every level, each RoI keeping its own level's result
      (``jnp.where``), so the cost is the sum over levels of the dense contraction.
  """
  levels, maps = _pyramid(features, min_level)
  batch, _, _, channels = maps[0].shape
  out_hw = _output_hw(output_size)
  boxes = _check_args(boxes, batch, sampling_ratio, method)
  level = fpn_levels(boxes, levels[0], levels[-1], canonical_size, canonical_level)
  if method == "matmul":
    out = None
    for lvl, m in zip(levels, maps):
      pooled = roi_align(m, boxes, out_hw, spatial_scale=2.0 ** -lvl, sampling_ratio=sampling_ratio,
                         aligned=aligned, method="matmul")
      out = pooled if out is None else jnp.where((level == lvl)[..., None, None, None], pooled, out)
    return out
  # One flat table [B * sum_l H_l W_l, C]: image b's level l starts at b * N + offset_l.
  sizes = np.array([m.shape[1] * m.shape[2] for m in maps], np.int64)
  per_image = int(sizes.sum())
  table = jnp.concatenate([m.reshape(batch, -1, channels) for m in maps], axis=1)
  table = table.reshape(batch * per_image, channels)
  k = level - levels[0]
  offsets = jnp.asarray(np.concatenate([[0], np.cumsum(sizes)[:-1]]), jnp.int32)[k]
  heights = jnp.asarray([m.shape[1] for m in maps], jnp.int32)[k]
  widths = jnp.asarray([m.shape[2] for m in maps], jnp.int32)[k]
  scales = jnp.asarray([2.0 ** -l for l in levels], jnp.float32)[k]
  base = jnp.arange(batch, dtype=jnp.int32)[:, None] * per_image + offsets
  iy, wy, ix, wx = _taps(boxes, scales, heights, widths, out_hw,
                         int(sampling_ratio), aligned)
  out = _pool_gather(table, base, widths, iy, wy, ix, wx)
  return out.astype(_out_dtype(maps[0].dtype))
