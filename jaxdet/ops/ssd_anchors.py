"""SSD default boxes (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016, §2.2
"Choosing scales and aspect ratios for default boxes").

Host-side numpy constants, in the conventions of :mod:`jaxdet.ops.anchors`: float32 ``[N, 4]``
boxes ``(x1, y1, x2, y2)`` in input-image pixels, so the shared matcher
(:func:`jaxdet.ops.matching.match_anchors`) and box coder (:mod:`jaxdet.ops.boxes`) work on them
unchanged.

Scales. The paper's Eq. 4 spaces the scales of the m source maps linearly,
``s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1)``, k = 1..m. The released configurations
(Caffe ``examples/ssd/ssd_pascal*.py`` / ``ssd_coco.py`` of github.com/weiliu89/caffe, branch
``ssd``) implement this with integer percentages, which :func:`sizes_from_ratio_rule` reproduces:
``step = floor((max_ratio - min_ratio) / (m - 2))``; for every ``r`` in
``range(min_ratio, max_ratio + 1, step)`` map k gets ``min_size = D * r / 100`` and
``max_size = D * (r + step) / 100`` (D = input size); the first map (conv4_3) is prepended with
its own smaller pair ``(D * first_min / 100, D * first_max / 100)``. ``max_size`` of map k is the
next map's ``min_size``, i.e. s_{k+1} in Eq. 4's notation.

  * :data:`SSD512_VOC`: ``ssd_pascal_512.py`` (min_ratio 15, max_ratio 90, step 15, conv4_3 at
    7 % / 15 %): min_sizes (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8), max_sizes (76.8,
    153.6, 230.4, 307.2, 384.0, 460.8, 537.6). The same numbers are in the released SSD512 VOC
    ``deploy.prototxt`` (``min_size: 35.84 max_size: 76.8`` on conv4_3) and in the ssd.pytorch
    SSD512 configs.
  * :data:`SSD512_COCO`: the same rule with COCO's smaller ratios (min_ratio 10, max_ratio 90,
    step 16, conv4_3 at 4 % / 10 %): min_sizes (20.48, 51.2, 133.12, 215.04, 296.96, 378.88,
    460.8), max_sizes (51.2, 133.12, ..., 542.72). mmdetection's ``ssd512_coco`` config
    (``basesize_ratio_range=(0.1, 0.9)``, ``SSDAnchorGenerator``) uses the same percentages but
    truncates each size to an int (20, 51, 133, 215, 296, 378, 460 / 51, 133, 215, 296, 378,
    460, 542), so its boxes are up to 1 px smaller than these.
  * :data:`SSD300_VOC`: ssd.pytorch's ``voc`` config (min_ratio 20, max_ratio 90, step 17,
    conv4_3 at 10 % / 20 %; exact integers): 8732 boxes.

Boxes at one location (Caffe ``PriorBoxLayer`` / ssd.pytorch ``PriorBox`` order, with
``flip=True``), for map k with ``min_size`` s, ``max_size`` s' and extra aspect ratios
``[r_1, r_2, ...]`` (r = width / height, the paper's a_r; note :mod:`jaxdet.ops.anchors` uses
r = height / width):

  0. s x s                              (ratio 1)
  1. sqrt(s s') x sqrt(s s')            (ratio 1, the paper's extra box s'_k)
  2. s sqrt(r_1) x s / sqrt(r_1)        (ratio r_1, wide)
  3. s / sqrt(r_1) x s sqrt(r_1)        (ratio 1 / r_1, tall)
  4. ... then r_2, 1 / r_2, and so on,

given as width x height, so ``K = 2 + 2 * len(ratios)`` boxes per location (4 for ``[2]``,
6 for ``[2, 3]``), centred at ``((j + 0.5) * step, (i + 0.5) * step)`` for row i, column j.

Order of the flat array (the SSD head must produce the same order): maps in the given order
(largest map, conv4_3, first); within a map row-major over (i, j) = (y, x); at each location the
K boxes above. This is what reshaping an NHWC head output ``[B, H, W, K * C]`` to
``[B, H * W * K, C]`` gives when the K * C channels are K-major (box k's C values contiguous),
i.e. ``anchors[map_slice].reshape(H, W, K, 4)[i, j, k]`` is box k at row i, column j.

Clipping (``clip``): ``True`` / ``"xyxy"`` clamps the corners to ``[0, W] x [0, H]`` (Caffe
PriorBox ``clip: true``); ``False`` keeps boxes that cross the border (the released Caffe
SSD512 models use ``clip: false``); ``"cxcywh"`` reproduces ssd.pytorch's ``PriorBox(clip=True)``,
which clamps the normalised (cx, cy, w, h) to [0, 1] (widths/heights capped at the image size,
centres kept, so such boxes may still cross the border).

SSD's "variances" (0.1, 0.1, 0.2, 0.2) divide the encoded offsets; with the Detectron-style coder
of :mod:`jaxdet.ops.boxes` that is ``weights = 1 / variances =`` :data:`SSD_BOX_WEIGHTS`
``= (10, 10, 5, 5)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)
SSD_BOX_WEIGHTS = tuple(1.0 / v for v in SSD_VARIANCES)  # (10, 10, 5, 5) for boxes.encode/decode


@dataclasses.dataclass(frozen=True)
class SSDAnchorConfig:
  """Default-box layout of one SSD variant (pixels of a square ``image_size`` input)."""
  image_size: int
  min_sizes: tuple[float, ...]
  max_sizes: tuple[float, ...]
  steps: tuple[float, ...]
  aspect_ratios: tuple[tuple[float, ...], ...]
  feature_sizes: tuple[int, ...]

  def anchors(self, clip=True) -> np.ndarray:
    """:func:`ssd_anchors` for this layout."""
    return ssd_anchors(self.image_size, self.min_sizes, self.max_sizes, self.steps,
                       self.aspect_ratios, self.feature_sizes, clip=clip)

  @property
  def num_anchors_per_location(self) -> tuple[int, ...]:
    return num_anchors_per_location(self.aspect_ratios)


_SSD512_STEPS = (8, 16, 32, 64, 128, 256, 512)
_SSD512_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
_SSD512_FEATURES = (64, 32, 16, 8, 4, 2, 1)

# Caffe ssd_pascal_512.py / released SSD512 VOC prototxt / ssd.pytorch SSD512.
SSD512_VOC = SSDAnchorConfig(
    image_size=512,
    min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    steps=_SSD512_STEPS, aspect_ratios=_SSD512_RATIOS, feature_sizes=_SSD512_FEATURES)

# Caffe ratio rule with COCO's ratios (min_ratio 10, max_ratio 90, conv4_3 4 % / 10 %);
# mmdetection ssd512_coco (basesize_ratio_range=(0.1, 0.9)) before its int() truncation.
SSD512_COCO = SSDAnchorConfig(
    image_size=512,
    min_sizes=(20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8),
    max_sizes=(51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72),
    steps=_SSD512_STEPS, aspect_ratios=_SSD512_RATIOS, feature_sizes=_SSD512_FEATURES)

# ssd.pytorch data/config.py ``voc`` (Caffe ssd_pascal.py: min_ratio 20, max_ratio 90, 10 % / 20 %).
SSD300_VOC = SSDAnchorConfig(
    image_size=300,
    min_sizes=(30.0, 60.0, 111.0, 162.0, 213.0, 264.0),
    max_sizes=(60.0, 111.0, 162.0, 213.0, 264.0, 315.0),
    steps=(8, 16, 32, 64, 100, 300),
    aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
    feature_sizes=(38, 19, 10, 5, 3, 1))


def sizes_from_ratio_rule(image_size: float, num_maps: int, min_ratio: int, max_ratio: int,
                          first_ratios: tuple[float, float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(min_sizes, max_sizes) of the Caffe SSD scripts' percentage rule (module docstring).

  ``min_ratio``/``max_ratio`` are integer percentages for maps 2..num_maps; ``first_ratios`` is
  the (min, max) percentage pair of the first map. E.g. SSD512 VOC is
  ``sizes_from_ratio_rule(512, 7, 15, 90, (7, 15))``, SSD512 COCO ``(512, 7, 10, 90, (4, 10))``.
  """
  if int(num_maps) != num_maps or num_maps < 3:
    raise ValueError(f"the ratio rule needs num_maps >= 3 (one first map + at least two more); got {num_maps!r}")
  if int(min_ratio) != min_ratio or int(max_ratio) != max_ratio or not 0 < min_ratio < max_ratio:
    raise ValueError(f"need integer percentages 0 < min_ratio < max_ratio; got {min_ratio!r}, {max_ratio!r}")
  step = (int(max_ratio) - int(min_ratio)) // (int(num_maps) - 2)
  if step <= 0:
    raise ValueError(f"max_ratio - min_ratio = {max_ratio - min_ratio} is too small for {num_maps} maps")
  ratios = list(range(int(min_ratio), int(max_ratio) + 1, step))
  mins = [image_size * first_ratios[0] / 100.0] + [image_size * r / 100.0 for r in ratios]
  maxs = [image_size * first_ratios[1] / 100.0] + [image_size * (r + step) / 100.0 for r in ratios]
  if len(mins) != num_maps:
    raise ValueError(f"the rule gives {len(mins)} maps, not {num_maps}: pick min_ratio/max_ratio so that "
                     f"(max_ratio - min_ratio) / (num_maps - 2) is (about) an integer")
  return tuple(mins), tuple(maxs)


def _check_ratios(aspect_ratios) -> tuple[tuple[float, ...], ...]:
  try:
    per_map = tuple(tuple(float(r) for r in rs) for rs in aspect_ratios)
  except TypeError:
    raise ValueError("aspect_ratios must be one sequence of extra ratios per map, e.g. [[2], [2, 3]]; "
                     f"got {aspect_ratios!r}") from None
  for rs in per_map:
    seen = []
    for r in rs:
      if not (r > 0 and math.isfinite(r)) or math.isclose(r, 1.0):
        raise ValueError(f"extra aspect ratios must be positive, finite and != 1 (ratio 1 is always present); "
                         f"got {rs!r}")
      if any(math.isclose(r, q) or math.isclose(r, 1.0 / q) for q in seen):
        raise ValueError(f"aspect ratio {r} repeats another ratio or its reciprocal in {rs!r}")
      seen.append(r)
  return per_map


def num_anchors_per_location(aspect_ratios) -> tuple[int, ...]:
  """K per map: ``2 + 2 * len(ratios)`` (two squares, then r and 1/r for each extra ratio)."""
  return tuple(2 + 2 * len(rs) for rs in _check_ratios(aspect_ratios))


def location_sizes(min_size: float, max_size: float, ratios: Sequence[float]) -> np.ndarray:
  """float64 ``[K, 2]`` (width, height) of the K boxes at one location, in the module's order."""
  if not 0 < min_size < max_size:
    raise ValueError(f"need 0 < min_size < max_size; got {min_size!r}, {max_size!r}")
  (ratios,) = _check_ratios([ratios])
  sizes = [(min_size, min_size), (math.sqrt(min_size * max_size),) * 2]
  for r in ratios:
    q = math.sqrt(r)
    sizes += [(min_size * q, min_size / q), (min_size / q, min_size * q)]
  return np.array(sizes, dtype=np.float64)


def _image_hw(image_size):
  if isinstance(image_size, (int, float, np.integer, np.floating)):
    image_size = (image_size, image_size)
  try:
    h, w = (float(s) for s in image_size)
  except (TypeError, ValueError):
    raise ValueError(f"image_size must be a number or a (height, width) pair; got {image_size!r}") from None
  if not (h > 0 and w > 0):
    raise ValueError(f"image_size must be positive; got {image_size!r}")
  return h, w


def feature_shapes(image_size, steps: Sequence[float], feature_sizes=None) -> list[tuple[int, int]]:
  """[(h, w)] per map: ``feature_sizes`` (ints for square maps or (h, w) pairs) if given, else
  ``(ceil(H / step), ceil(W / step))`` (64 ... 1 for SSD512, 38, 19, 10, 5, 3, 1 for SSD300)."""
  h, w = _image_hw(image_size)
  steps = tuple(float(s) for s in steps)
  if not steps or any(not s > 0 for s in steps):
    raise ValueError(f"steps must be a non-empty sequence of positive numbers; got {steps!r}")
  if feature_sizes is None:
    return [(math.ceil(h / s - 1e-9), math.ceil(w / s - 1e-9)) for s in steps]
  if len(feature_sizes) != len(steps):
    raise ValueError(f"feature_sizes has {len(feature_sizes)} maps but steps has {len(steps)}")
  out = []
  for f in feature_sizes:
    fh, fw = (f, f) if isinstance(f, (int, np.integer)) else tuple(f)
    if int(fh) != fh or int(fw) != fw or fh <= 0 or fw <= 0:
      raise ValueError(f"feature sizes must be positive integers; got {f!r}")
    out.append((int(fh), int(fw)))
  return out


def level_slices(image_size, steps: Sequence[float], aspect_ratios,
                 feature_sizes=None) -> list[tuple[int, int]]:
  """[(start, stop)] of each map's boxes in the flat array of :func:`ssd_anchors`."""
  ks = num_anchors_per_location(aspect_ratios)
  shapes = feature_shapes(image_size, steps, feature_sizes)
  if len(ks) != len(shapes):
    raise ValueError(f"aspect_ratios has {len(ks)} maps but steps has {len(shapes)}")
  out, start = [], 0
  for (fh, fw), k in zip(shapes, ks):
    out.append((start, start + fh * fw * k))
    start += fh * fw * k
  return out


def ssd_anchors(image_size=512, min_sizes: Sequence[float] = SSD512_VOC.min_sizes,
                max_sizes: Sequence[float] = SSD512_VOC.max_sizes,
                steps: Sequence[float] = SSD512_VOC.steps, aspect_ratios=SSD512_VOC.aspect_ratios,
                feature_sizes=None, clip=True) -> np.ndarray:
  """All default boxes as float32 ``[N, 4]`` xyxy pixels, in the order of the module docstring.

  ``image_size`` is an int or (height, width); sizes and steps are in pixels (the same step for
  x and y, as in the SSD configs). ``feature_sizes`` defaults to ``ceil(image / step)`` per map.
  ``clip``: True / "xyxy" (corners clamped to the image), False, or "cxcywh" (ssd.pytorch).
  """
  h, w = _image_hw(image_size)
  ratios = _check_ratios(aspect_ratios)
  n = len(ratios)
  if not (len(min_sizes) == len(max_sizes) == len(steps) == n):
    raise ValueError(f"min_sizes, max_sizes, steps and aspect_ratios need one entry per map; got lengths "
                     f"{len(min_sizes)}, {len(max_sizes)}, {len(steps)}, {n}")
  if clip is True:
    clip = "xyxy"
  if clip not in (False, None, "xyxy", "cxcywh"):
    raise ValueError(f"clip must be True, False, 'xyxy' or 'cxcywh'; got {clip!r}")
  shapes = feature_shapes((h, w), steps, feature_sizes)
  per_map = []
  for (fh, fw), step, smin, smax, rs in zip(shapes, steps, min_sizes, max_sizes, ratios):
    wh = location_sizes(float(smin), float(smax), rs)                           # [K, 2]
    cy, cx = np.meshgrid((np.arange(fh) + 0.5) * float(step), (np.arange(fw) + 0.5) * float(step),
                         indexing="ij")
    centres = np.broadcast_to(np.stack([cx, cy], -1).reshape(fh * fw, 1, 2), (fh * fw, len(wh), 2))
    sizes = np.broadcast_to(wh[None], centres.shape)
    if clip == "cxcywh":  # ssd.pytorch: clamp(cx/W, cy/H, w/W, h/H) to [0, 1]
      limit = np.array([w, h])
      centres = np.clip(centres, 0.0, limit)
      sizes = np.clip(sizes, 0.0, limit)
    boxes = np.concatenate([centres - 0.5 * sizes, centres + 0.5 * sizes], axis=-1)  # [h*w, K, 4]
    per_map.append(boxes.reshape(-1, 4))
  boxes = np.concatenate(per_map, axis=0)
  if clip == "xyxy":
    boxes = np.clip(boxes, 0.0, np.array([w, h, w, h]))
  return boxes.astype(np.float32)
