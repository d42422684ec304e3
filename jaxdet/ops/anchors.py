"""RetinaNet anchor grid (Lin et al., "Focal Loss for Dense Object Detection", §4 "Anchors").

Host-side numpy constants. On pyramid level l (stride 2**l) the base anchor size is
``anchor_size * 2**l`` (32 px at P3 ... 512 px at P7 for anchor_size=4); each location holds
``len(scales) * len(aspect_ratios)`` anchors of size ``base * scale`` and aspect ratio
r = h / w: ``w = base*scale/sqrt(r)``, ``h = base*scale*sqrt(r)``, centred at
``((x + 0.5) * stride, (y + 0.5) * stride)``. AP-loss uses scales {2^0, 2^0.5} ("2 sub-octave
scales", Chen et al., AP-loss §4.1.1); RetinaNet uses {2^0, 2^(1/3), 2^(2/3)}.

Order of the flat ``[A, 4]`` array (the detection head must produce the same order):
levels ascending (min_level first); within a level row-major over (y, x); at each location
scales outer, aspect ratios inner, i.e. anchor k = scale_index * len(aspect_ratios) + ratio_index.
This equals reshaping a head output ``[B, h, w, K*C]`` to ``[B, h*w*K, C]`` when the K*C channels
are laid out K-major (anchor k's C values contiguous).

Feature map size at level l is ``ceil(H / 2**l)``, which is what a chain of stride-2 'SAME'
convolutions produces.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DEFAULT_SCALES = (2.0 ** 0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _image_hw(image_size):
  if isinstance(image_size, (int, np.integer)):
    image_size = (int(image_size), int(image_size))
  try:
    h, w = (int(s) for s in image_size)
  except (TypeError, ValueError):
    raise ValueError(f"image_size must be an int or a (height, width) pair; got {image_size!r}") from None
  if h <= 0 or w <= 0:
    raise ValueError(f"image_size must be positive; got {image_size!r}")
  return h, w


def _check_levels(min_level, max_level):
  if int(min_level) != min_level or int(max_level) != max_level or min_level < 0 or max_level < min_level:
    raise ValueError(f"need integer levels with 0 <= min_level <= max_level; got min_level={min_level}, "
                     f"max_level={max_level}")


def feature_shapes(image_size, min_level: int, max_level: int) -> list[tuple[int, int]]:
  """[(h, w)] per level, h = ceil(H / 2**level), w = ceil(W / 2**level)."""
  h, w = _image_hw(image_size)
  _check_levels(min_level, max_level)
  return [(-(-h // 2 ** l), -(-w // 2 ** l)) for l in range(int(min_level), int(max_level) + 1)]


def num_anchors_per_location(scales: Sequence[float] = DEFAULT_SCALES,
                             aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS) -> int:
  """K = len(scales) * len(aspect_ratios)."""
  _check_positive("scales", scales)
  _check_positive("aspect_ratios", aspect_ratios)
  return len(scales) * len(aspect_ratios)


def _check_positive(name, values):
  values = tuple(values)
  if not values or any(not (float(v) > 0) for v in values):
    raise ValueError(f"{name} must be a non-empty sequence of positive numbers; got {values!r}")


def level_slices(image_size, min_level: int, max_level: int, num_per_loc: int) -> list[tuple[int, int]]:
  """[(start, stop)] of each level's anchors in the flat array of :func:`generate_anchors`."""
  if int(num_per_loc) != num_per_loc or num_per_loc <= 0:
    raise ValueError(f"num_per_loc must be a positive integer; got {num_per_loc!r}")
  out, start = [], 0
  for h, w in feature_shapes(image_size, min_level, max_level):
    stop = start + h * w * int(num_per_loc)
    out.append((start, stop))
    start = stop
  return out


def generate_anchors(image_size, min_level: int = 3, max_level: int = 7, anchor_size: float = 4.0,
                     scales: Sequence[float] = DEFAULT_SCALES,
                     aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS) -> np.ndarray:
  """All anchors as float32 ``[A, 4]`` xyxy, in the order described in the module docstring."""
  _check_positive("scales", scales)
  _check_positive("aspect_ratios", aspect_ratios)
  if not anchor_size > 0:
    raise ValueError(f"anchor_size must be positive; got {anchor_size!r}")
  # Per-location sizes, scales outer / ratios inner.
  sizes = np.array([(s / math.sqrt(r), s * math.sqrt(r)) for s in scales for r in aspect_ratios],
                   dtype=np.float64)  # [K, 2] = (w, h) relative to base
  per_level = []
  for level, (fh, fw) in zip(range(int(min_level), int(max_level) + 1),
                             feature_shapes(image_size, min_level, max_level)):
    stride = 2.0 ** level
    base = anchor_size * stride
    cy, cx = np.meshgrid((np.arange(fh) + 0.5) * stride, (np.arange(fw) + 0.5) * stride, indexing="ij")
    centres = np.stack([cx, cy], axis=-1).reshape(fh * fw, 1, 2)  # [h*w, 1, 2]
    half = 0.5 * base * sizes[None]  # [1, K, 2]
    boxes = np.concatenate([centres - half, centres + half], axis=-1)  # [h*w, K, 4]
    per_level.append(boxes.reshape(-1, 4))
  return np.concatenate(per_level, axis=0).astype(np.float32)
