"""Landmark heatmaps: Gaussian encoding and sub-pixel decoding (low-resolution landmark paper, §3.2).

The heatmap generator G2 outputs ``N + 1`` maps for ``N`` landmarks plus one background map
(Fig. 5); the ground-truth map ``H_i`` is "constructed by placing Gaussian with sigma = 2 centered
at the keypoint location (x_i, y_i)" (§3.2.2, after Eq. 6), at the 32 x 32 resolution of the LR
input (so at the landmarks downsampled with the image).

Coordinates are the continuous pixel coordinates of ``jaxdet.data.face_records``: the map spans
``[0, W] x [0, H]`` and cell ``(row i, col j)`` holds the value at its centre
``(x, y) = (j + 0.5, i + 0.5)``. Everything here is ``jnp``, jit-able, with static shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_heatmaps(landmarks, visible, height: int, width: int, sigma: float = 2.0,
                      background: bool = True) -> jax.Array:
  """Ground-truth heatmaps of §3.2.2: one unnormalised Gaussian per landmark.

  ``H_i(x_c, y_c) = exp(-((x_c - x_i)^2 + (y_c - y_i)^2) / (2 sigma^2))`` at every cell centre
  ``(x_c, y_c) = (j + 0.5, i + 0.5)``, so the value is 1 exactly at the landmark and a landmark at
  a cell centre gives that cell the value 1. The Gaussian is neither truncated nor normalised
  (truncation would break the exact log-parabola refinement of ``decode_heatmaps``).

  Background channel (choice, the paper only says there are ``N + 1`` maps with one background
  map, Fig. 5): ``1 - max_i H_i``, i.e. 1 far from every landmark and 0 at a landmark. With
  ``N = 0`` it is all ones.

  Args:
    landmarks: ``[B, N, 2]`` ``(x, y)`` at the heatmap's resolution (scale them with the image
      first: LR truth of a 4x subsampled HR face is ``landmarks / 4``).
    visible: ``[B, N]`` bool; invisible points give all-zero maps (their coordinates may be
      anything, NaN included).
    height, width: static map size.
    sigma: Gaussian std in heatmap pixels (paper: 2 at 32 x 32).
    background: append the background map as channel ``N``.

  Returns:
    float32 ``[B, height, width, N (+ 1)]``.
  """
  landmarks = jnp.asarray(landmarks, jnp.float32)
  visible = jnp.asarray(visible, bool)
  if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
    raise ValueError(f"landmarks must be [B, N, 2], got shape {landmarks.shape}")
  if visible.shape != landmarks.shape[:2]:
    raise ValueError(f"visible must be [B, N] = {landmarks.shape[:2]}, got {visible.shape}")
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")
  # Invisible points: coordinates replaced by 0 so that NaN never reaches the product below.
  pts = jnp.where(visible[..., None], landmarks, 0.0)
  xs = jnp.arange(width, dtype=jnp.float32) + 0.5
  ys = jnp.arange(height, dtype=jnp.float32) + 0.5
  inv = 1.0 / (2.0 * float(sigma) ** 2)
  gx = jnp.exp(-((xs[None, None, :] - pts[..., 0:1]) ** 2) * inv)   # [B, N, W]
  gy = jnp.exp(-((ys[None, None, :] - pts[..., 1:2]) ** 2) * inv)   # [B, N, H]
  # exp(-(a + b)) = exp(-a) exp(-b): the 2-D Gaussian is the outer product of the 1-D ones.
  maps = gy[..., :, None] * gx[..., None, :]                          # [B, N, H, W]
  maps = jnp.where(visible[..., None, None], maps, 0.0)
  maps = jnp.transpose(maps, (0, 2, 3, 1))                            # [B, H, W, N]
  if background:
    if maps.shape[-1]:
      bg = 1.0 - jnp.max(maps, axis=-1, keepdims=True)
    else:
      bg = jnp.ones(maps.shape[:-1] + (1,), jnp.float32)
    maps = jnp.concatenate([maps, bg], axis=-1)
  return maps.astype(jnp.float32)


def _log_parabola_offset(left, centre, right, valid):
  """Vertex offset of the parabola through ``(-1, log left), (0, log centre), (1, log right)``.

  Exact for a sampled Gaussian: ``log g`` is a parabola in ``x`` with vertex at the mean. Returns
  0 where ``valid`` is false, a value is ``<= 0`` or the parabola is not concave; else the offset
  clamped to ``[-0.5, 0.5]``.
  """
  ok = valid & (left > 0) & (centre > 0) & (right > 0)
  tiny = jnp.finfo(jnp.float32).tiny
  ll = jnp.log(jnp.maximum(left, tiny))
  lc = jnp.log(jnp.maximum(centre, tiny))
  lr = jnp.log(jnp.maximum(right, tiny))
  curv = ll - 2.0 * lc + lr            # second difference; < 0 at a proper maximum
  ok = ok & (curv < 0)
  offset = 0.5 * (ll - lr) / jnp.where(ok, curv, -1.0)
  return jnp.where(ok, jnp.clip(offset, -0.5, 0.5), 0.0)


def decode_heatmaps(heatmaps, num_points: int | None = None):
  """Landmarks from heatmaps: per-channel argmax, then sub-pixel refinement.

  The refinement fits a parabola to the *log* of the three values around the argmax, separately
  in ``x`` (same row) and in ``y`` (same column); for the Gaussians of ``gaussian_heatmaps`` this
  recovers the landmark exactly (up to float32). The offset is clamped to +-0.5 px and falls back
  to the cell centre on the map border or when one of the three values is ``<= 0`` or the log
  values do not curve downwards (e.g. a flat or noisy prediction).

  Args:
    heatmaps: ``[B, H, W, K]`` (``K = N + 1`` with a background channel last).
    num_points: decode the first ``num_points`` channels (``N``; the background channel is then
      ignored); None: all ``K`` channels.

  Returns:
    ``points`` float32 ``[B, N, 2]`` ``(x, y)`` in continuous pixel coordinates of the map, and
    ``peak`` float32 ``[B, N]``, the map value at the argmax cell (a confidence).
  """
  heatmaps = jnp.asarray(heatmaps, jnp.float32)
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be [B, H, W, K], got shape {heatmaps.shape}")
  b, h, w, k = heatmaps.shape
  n = k if num_points is None else int(num_points)
  if not 0 <= n <= k:
    raise ValueError(f"num_points must be in [0, {k}] (channels of the heatmaps), got {num_points}")
  maps = jnp.transpose(heatmaps[..., :n], (0, 3, 1, 2)).reshape(b, n, h * w)   # [B, N, HW]
  flat = jnp.argmax(maps, axis=-1)                                              # [B, N]
  row, col = flat // w, flat % w

  def at(r, c):
    r = jnp.clip(r, 0, h - 1)
    c = jnp.clip(c, 0, w - 1)
    return jnp.take_along_axis(maps, (r * w + c)[..., None], axis=-1)[..., 0]

  centre = at(row, col)
  dx = _log_parabola_offset(at(row, col - 1), centre, at(row, col + 1), (col > 0) & (col < w - 1))
  dy = _log_parabola_offset(at(row - 1, col), centre, at(row + 1, col), (row > 0) & (row < h - 1))
  points = jnp.stack([col.astype(jnp.float32) + 0.5 + dx, row.astype(jnp.float32) + 0.5 + dy], -1)
  return points, centre
