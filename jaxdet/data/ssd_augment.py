"""SSD's training-time data augmentation, in numpy on the host (Liu et al. 2016, "SSD: Single Shot
MultiBox Detector").

The recipe, in the order ``ssd_augment`` applies it (the order of the public SSD
implementations: the authors' Caffe ``ssd_pascal.py``, ssd.pytorch's ``SSDAugmentation`` and
mmdetection's SSD pipeline):

1. ``photometric_distort``: "photo-metric distortions similar to those described in [14]"
   (§2.2, [14] = Howard 2013). The values are the SSD implementations': brightness
   ``+ U(-32, 32)``, contrast ``x U(0.5, 1.5)``, saturation ``x U(0.5, 1.5)`` and hue
   ``+ U(-18, 18)`` degrees, each with probability 0.5, the contrast before or after the HSV part
   with probability 0.5; an optional random channel permutation (ssd.pytorch's
   ``RandomLightingNoise``; off by default, as in mmdetection's ``PhotoMetricDistortion``).
2. ``expand``, the "zoom out" of §3.6 "Data Augmentation for Small Object Accuracy": "randomly
   place an image on a canvas of 16x of the original image size filled with mean values before we
   do any random crop operation" -- up to 16x the area, i.e. a side ratio ``r ~ U(1, 4)``, with
   probability 0.5 (as the implementations do).
3. ``min_iou_random_crop``, §2.2 "Data augmentation": each image is either used whole, or a patch
   is sampled "so that the minimum jaccard overlap with the objects is 0.1, 0.3, 0.5, 0.7, or
   0.9", or a patch is sampled at random (no constraint). The paper gives patch sizes "[0.1, 1] of
   the original image size" and aspect ratios "between 1/2 and 2"; we use the released
   implementations' values, as ssd.pytorch / mmdetection draw them: sides ``U(0.3, 1)`` times the
   image's (Caffe ``ssd_pascal.py``: ``min_scale: 0.3``) and ``h / w`` in ``[1/2, 2]``. "We keep
   the overlapped part of the ground truth box if the center of it is in the sampled patch".
4. ``random_flip``: "horizontally flipped with probability of 0.5" (§2.2).
5. ``resize``: "each sampled patch is resized to fixed size" (§2.2), 300x300 or 512x512 (SSD300 /
   SSD512), not aspect-preserving.

Conventions are those of ``jaxdet.data.transforms``: images ``uint8 [H, W, 3]`` RGB; boxes
absolute-pixel ``xyxy`` float32 where pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``. The
expand offset and the crop window are whole pixels, so up to the resize every box transform is
exact (a box drawn into the image is found at the transformed box, pixel for pixel). Every
function is a pure function of its inputs and of the ``np.random.Generator`` it is given (the
loader derives one per example from ``(seed, tag, position)``, ``loader.StepLoader.example_rng``),
so a resumed run sees exactly the same augmentations.

Per-box arrays: ``labels`` (any array with one row per box) follows the boxes; so does the
optional keyword ``is_crowd`` (``DetectionExample.is_crowd``, crowd / "difficult" objects). A
function called with ``is_crowd`` returns it as a fourth element: ``(image, boxes, labels,
is_crowd)``; without, it returns ``(image, boxes, labels)``. Crowd boxes are moved, clipped and
dropped like the others but never satisfy the crop's IoU / centre constraints (they are regions
to ignore, not objects to keep in view).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image

from jaxdet.data import transforms
from jaxdet.data.records import DetectionExample

# ``config.data.pixel_mean`` (ImageNet, RGB, 0..1; jaxdet.experiments.defaults) times 255: the
# canvas fill of ``expand``. (SSD's Caffe models use (104, 117, 123) BGR = (123, 117, 104) RGB.)
IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
SSD_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)  # §2.2


def _check(image: np.ndarray, boxes, labels, is_crowd):
  transforms._check_image(image)  # pylint: disable=protected-access
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels)
  if len(labels) != len(boxes):
    raise ValueError(f"labels must have one row per box: {len(labels)} labels, {len(boxes)} boxes")
  if is_crowd is not None:
    is_crowd = np.asarray(is_crowd, bool).reshape(-1)
    if len(is_crowd) != len(boxes):
      raise ValueError(f"is_crowd must have one entry per box: {len(is_crowd)} vs {len(boxes)}")
  return boxes, labels, is_crowd


def _out(image, boxes, labels, is_crowd):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  return (image, boxes, labels) if is_crowd is None else (image, boxes, labels, is_crowd)


# --------------------------------------------------------------------------------------------
# 1. Photometric distortion
# --------------------------------------------------------------------------------------------
def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """``float [..., 3]`` RGB in ``[0, 255]`` -> HSV with H in degrees ``[0, 360)``, S in
  ``[0, 1]``, V in ``[0, 255]`` (the float convention of OpenCV's ``cvtColor`` that ssd.pytorch /
  mmdetection distort in). ``V = max``, ``C = max - min``, ``S = C / V``; ``H = 60 ((G - B) / C
  mod 6)``, ``60 ((B - R) / C + 2)`` or ``60 ((R - G) / C + 4)`` where R, G or B is the max."""
  r, g, b = np.ascontiguousarray(np.moveaxis(np.asarray(rgb, np.float32), -1, 0))
  v = np.maximum(np.maximum(r, g), b)
  c = v - np.minimum(np.minimum(r, g), b)
  s = c / np.maximum(v, np.float32(1e-20))  # 0 where V = 0 (then C = 0)
  cs = np.maximum(c, np.float32(1e-20))  # where C = 0 all the differences below are 0: H = 0
  hr = (g - b) / cs
  hr += np.where(hr < 0, np.float32(6), np.float32(0))
  h = np.where(v == r, hr, np.where(v == g, (b - r) / cs + 2, (r - g) / cs + 4))
  h *= np.float32(60)
  h[h >= 360] -= 360
  return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """Inverse of ``rgb_to_hsv``: ``f(n) = V - V S max(0, min(k, 4 - k, 1))``, ``k = (n + H / 60)
  mod 6`` for ``n = 5, 3, 1`` (R, G, B)."""
  h, s, v = np.ascontiguousarray(np.moveaxis(np.asarray(hsv, np.float32), -1, 0))
  hp = np.mod(h, np.float32(360)) / np.float32(60)
  vs = v * s
  out = []
  for n in (5.0, 3.0, 1.0):
    k = hp + np.float32(n)
    k[k >= 6] -= 6
    out.append(v - vs * np.clip(np.minimum(k, 4 - k), 0, 1))
  return np.stack(out, axis=-1)


class PhotometricParams(NamedTuple):
  """One draw of ``photometric_distort``; ``None``: that distortion is not applied."""
  brightness: float | None  # delta added to every channel
  contrast: float | None  # factor every channel is multiplied by
  contrast_first: bool  # contrast before (True) or after (False) saturation / hue
  saturation: float | None  # factor on S
  hue: float | None  # degrees added to H (mod 360)
  channel_perm: tuple[int, int, int] | None  # output channel c = input channel perm[c]


def sample_photometric_params(rng: np.random.Generator, *, brightness_delta: float = 32.0,
                              contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                              hue_delta: float = 18.0, prob: float = 0.5,
                              channel_swap: bool = False) -> PhotometricParams:
  """Draws ``PhotometricParams`` (the SSD implementations' ranges, see the module docstring).

  Always consumes the same draws from ``rng`` (6 coins, 4 values, 1 permutation), whichever
  distortions fire. A range whose ends are equal (or a delta of 0) switches that distortion off.
  """
  coins = rng.random(6)
  delta = float(rng.uniform(-brightness_delta, brightness_delta))
  alpha = float(rng.uniform(*contrast_range))
  sat = float(rng.uniform(*saturation_range))
  hue = float(rng.uniform(-hue_delta, hue_delta))
  perm = tuple(int(i) for i in rng.permutation(3))
  on = coins < prob
  return PhotometricParams(
      brightness=delta if on[0] and brightness_delta > 0 else None,
      contrast=alpha if on[1] and contrast_range[0] != contrast_range[1] else None,
      contrast_first=bool(coins[2] < 0.5),
      saturation=sat if on[3] and saturation_range[0] != saturation_range[1] else None,
      hue=hue if on[4] and hue_delta > 0 else None,
      channel_perm=perm if channel_swap and on[5] else None)


def apply_photometric(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
  """Applies ``params`` to a ``uint8`` image; returns ``uint8``.

  In float32, clipping to ``[0, 255]`` after every step (the authors' Caffe implementation works
  on 8-bit images and saturates at every step; ssd.pytorch / mmdetection skip the clips):
  ``x + brightness``; ``x * contrast`` (if ``contrast_first``); to HSV, ``S * saturation``
  clipped to ``[0, 1]``, ``H + hue`` mod 360, back to RGB; ``x * contrast`` (otherwise); the
  channel permutation; rounded to the nearest integer.
  """
  transforms._check_image(image)  # pylint: disable=protected-access
  p = params
  if p.brightness is None and p.contrast is None and p.saturation is None and p.hue is None \
          and p.channel_perm is None:
    return image
  x = image.astype(np.float32)
  if p.brightness is not None:
    x = np.clip(x + np.float32(p.brightness), 0, 255)
  if p.contrast is not None and p.contrast_first:
    x = np.clip(x * np.float32(p.contrast), 0, 255)
  if p.saturation is not None or p.hue is not None:
    hsv = rgb_to_hsv(x)
    if p.saturation is not None:
      hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(p.saturation), 0, 1)
    if p.hue is not None:
      hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(p.hue), 360)
    x = np.clip(hsv_to_rgb(hsv), 0, 255)
  if p.contrast is not None and not p.contrast_first:
    x = np.clip(x * np.float32(p.contrast), 0, 255)
  if p.channel_perm is not None:
    x = x[..., list(p.channel_perm)]
  return np.rint(x).astype(np.uint8)


def photometric_distort(image: np.ndarray, boxes, labels, rng: np.random.Generator, *,
                        is_crowd=None, **kwargs):
  """SSD's photometric distortion (§2.2; values of the module docstring). Boxes are unchanged.

  ``kwargs`` go to ``sample_photometric_params`` (``brightness_delta=32``,
  ``contrast_range=(0.5, 1.5)``, ``saturation_range=(0.5, 1.5)``, ``hue_delta=18``, ``prob=0.5``,
  ``channel_swap=False``); ``apply_photometric`` says how they are applied.
  """
  boxes, labels, is_crowd = _check(image, boxes, labels, is_crowd)
  image = apply_photometric(image, sample_photometric_params(rng, **kwargs))
  return _out(image, boxes, labels, is_crowd)


# --------------------------------------------------------------------------------------------
# 2. Expand (zoom out)
# --------------------------------------------------------------------------------------------
def _fill(mean) -> np.ndarray:
  mean = np.asarray(mean, np.float64).reshape(-1)
  if mean.shape != (3,) or np.any(mean < 0) or np.any(mean > 255):
    raise ValueError(f"mean must be 3 values in [0, 255] (pixel_mean * 255), got {mean}")
  return np.rint(mean).astype(np.uint8)


def expand(image: np.ndarray, boxes, labels, rng: np.random.Generator, *,
           mean=IMAGENET_MEAN_255, max_ratio: float = 4.0, prob: float = 0.5, is_crowd=None):
  """SSD's "zoom out" (§3.6): with probability ``prob``, paste the image on a larger canvas.

  The side ratio is ``r ~ U(1, max_ratio)`` (``max_ratio = 4``: the paper's "16x of the original
  image size" in area); the canvas is ``floor(r H) x floor(r W)`` pixels of ``mean`` (RGB, in
  0..255, rounded; ``config.data.pixel_mean * 255``), and the image's top-left corner goes to a
  uniformly random whole-pixel offset ``(left, top)``, ``0 <= left <= floor(r W) - W``; the
  boxes move by exactly ``(left, top)``.
  """
  boxes, labels, is_crowd = _check(image, boxes, labels, is_crowd)
  if max_ratio < 1:
    raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
  fill = _fill(mean)
  coin, ratio, u_left, u_top = rng.random(4)
  if coin >= prob:
    return _out(image, boxes, labels, is_crowd)
  ratio = 1.0 + (float(max_ratio) - 1.0) * float(ratio)
  h, w = image.shape[:2]
  nh, nw = max(h, int(ratio * h)), max(w, int(ratio * w))
  left = min(int(u_left * (nw - w + 1)), nw - w)
  top = min(int(u_top * (nh - h + 1)), nh - h)
  canvas = np.empty((nh, nw, 3), np.uint8)
  canvas[...] = fill
  canvas[top:top + h, left:left + w] = image
  boxes = boxes + np.array([left, top, left, top], np.float32)
  return _out(canvas, boxes, labels, is_crowd)


# --------------------------------------------------------------------------------------------
# 3. Min-IoU random crop
# --------------------------------------------------------------------------------------------
def _iou_matrix(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU ``[t, n]`` of ``xyxy`` patches ``[t, 4]`` with ``xyxy`` boxes ``[n, 4]`` (float64)."""
  p = np.asarray(patches, np.float64).reshape(-1, 1, 4)
  b = np.asarray(boxes, np.float64).reshape(1, -1, 4)
  iw = np.clip(np.minimum(p[..., 2], b[..., 2]) - np.maximum(p[..., 0], b[..., 0]), 0, None)
  ih = np.clip(np.minimum(p[..., 3], b[..., 3]) - np.maximum(p[..., 1], b[..., 1]), 0, None)
  inter = iw * ih
  union = ((p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
           + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _centres_in(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """``bool [t, n]``: box centre strictly inside the patch (ssd.pytorch, mmdetection)."""
  p = np.asarray(patches, np.float64).reshape(-1, 1, 4)
  b = np.asarray(boxes, np.float64).reshape(1, -1, 4)
  cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
  return (cx > p[..., 0]) & (cx < p[..., 2]) & (cy > p[..., 1]) & (cy < p[..., 3])


def box_iou(boxes, patch) -> np.ndarray:
  """IoU of every ``xyxy`` box ``[n, 4]`` with one ``xyxy`` patch: ``[n]``."""
  return _iou_matrix(np.asarray(patch, np.float64).reshape(1, 4), boxes)[0]


def centres_inside(boxes, patch) -> np.ndarray:
  """``bool [n]``: the box centre lies strictly inside the patch."""
  return _centres_in(np.asarray(patch, np.float64).reshape(1, 4), boxes)[0]


class CropSample(NamedTuple):
  min_iou: float | None  # the mode drawn: None = keep the whole image (also when sampling failed)
  patch: tuple[int, int, int, int] | None  # integer xyxy window, None = whole image


def sample_min_iou_crop(boxes, height: int, width: int, rng: np.random.Generator, *,
                        is_crowd=None, min_ious: Sequence[float] = SSD_MIN_IOUS,
                        whole_image: bool = True, unconstrained: bool = True,
                        min_scale: float = 0.3, aspect_range=(0.5, 2.0), max_trials: int = 50,
                        max_rounds: int = 100) -> CropSample:
  """SSD's patch sampler (§2.2), without touching pixels.

  A mode is drawn uniformly from ``[None] + min_ious + [0.0]`` (``None``: keep the whole image,
  §2.2's first option, left out with ``whole_image=False``; ``0.0``: §2.2's "randomly sample a
  patch", left out with ``unconstrained=False``). For a min-IoU mode up to ``max_trials`` patches
  are tried: integer sides ``w ~ U{ceil(min_scale W), .., W}``, ``h`` likewise, rejected unless
  ``aspect_range[0] <= h / w <= aspect_range[1]``, and a whole-pixel origin uniform over the
  positions inside the image (the trials of one mode are drawn as one batch). A patch is
  accepted when *some* (non-crowd) box has IoU ``>= min_iou`` with it -- as the authors' Caffe
  ``SatisfySampleConstraint`` (mmdetection requires all boxes) -- and some (non-crowd) box centre
  lies inside it. If all trials fail a new mode is
  drawn (as ssd.pytorch / mmdetection); after ``max_rounds`` modes, or when there is no
  (non-crowd) box, the whole image is kept.
  """
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  crowd = np.zeros(len(boxes), bool) if is_crowd is None else np.asarray(is_crowd, bool)
  objects = boxes[~crowd]
  modes: list[float | None] = ([None] if whole_image else []) + [float(m) for m in min_ious]
  if unconstrained:
    modes.append(0.0)
  if not modes:
    raise ValueError("no crop mode: give min_ious, whole_image=True or unconstrained=True")
  if not 0 < min_scale <= 1:
    raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
  if len(objects) == 0:
    return CropSample(None, None)
  lo_ar, hi_ar = float(aspect_range[0]), float(aspect_range[1])
  min_w, min_h = max(1, math.ceil(min_scale * width)), max(1, math.ceil(min_scale * height))
  for _ in range(max_rounds):
    mode = modes[int(rng.integers(len(modes)))]
    if mode is None:
      return CropSample(None, None)
    # The ``max_trials`` candidates are drawn at once and the first acceptable one is taken: the
    # same distribution as trying them one after the other.
    w = rng.integers(min_w, width + 1, size=max_trials)
    h = rng.integers(min_h, height + 1, size=max_trials)
    u = rng.random((2, max_trials))
    left = np.minimum((u[0] * (width - w + 1)).astype(np.int64), width - w)
    top = np.minimum((u[1] * (height - h + 1)).astype(np.int64), height - h)
    patches = np.stack([left, top, left + w, top + h], axis=1)
    ok = (h / w >= lo_ar) & (h / w <= hi_ar)
    ok &= _iou_matrix(patches, objects).max(axis=1) >= mode
    ok &= _centres_in(patches, objects).any(axis=1)
    if ok.any():
      return CropSample(mode, tuple(int(v) for v in patches[int(np.argmax(ok))]))
  return CropSample(None, None)


def crop_to_patch(image: np.ndarray, boxes, labels, patch, *, is_crowd=None):
  """Crops to the integer ``xyxy`` ``patch``: keeps the boxes whose centres are strictly inside,
  clips them to the patch and translates them by ``-(x1, y1)``."""
  boxes, labels, is_crowd = _check(image, boxes, labels, is_crowd)
  x1, y1, x2, y2 = (int(v) for v in patch)
  h, w = image.shape[:2]
  if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
    raise ValueError(f"patch {patch} is not a non-empty window of the {h}x{w} image")
  keep = centres_inside(boxes, (x1, y1, x2, y2))
  lo = np.array([x1, y1, x1, y1], np.float32)
  hi = np.array([x2, y2, x2, y2], np.float32)
  out = np.clip(boxes[keep], lo, hi) - lo
  image = np.ascontiguousarray(image[y1:y2, x1:x2])
  return _out(image, out, labels[keep], None if is_crowd is None else is_crowd[keep])


def min_iou_random_crop(image: np.ndarray, boxes, labels, rng: np.random.Generator, *,
                        is_crowd=None, **kwargs):
  """SSD's random crop (§2.2): ``sample_min_iou_crop`` (``kwargs`` go there) then
  ``crop_to_patch``; the image is returned unchanged when the whole image is kept."""
  boxes, labels, is_crowd = _check(image, boxes, labels, is_crowd)
  sample = sample_min_iou_crop(boxes, image.shape[0], image.shape[1], rng, is_crowd=is_crowd,
                               **kwargs)
  if sample.patch is None:
    return _out(image, boxes, labels, is_crowd)
  return crop_to_patch(image, boxes, labels, sample.patch, is_crowd=is_crowd)


# --------------------------------------------------------------------------------------------
# 4. Flip, 5. resize
# --------------------------------------------------------------------------------------------
def random_flip(image: np.ndarray, boxes, labels, rng: np.random.Generator, *, prob: float = 0.5,
                is_crowd=None):
  """Horizontal flip with probability ``prob`` (§2.2): ``[x1, y1, x2, y2] -> [W - x2, y1, W - x1,
  y2]`` (``transforms.horizontal_flip``)."""
  boxes, labels, is_crowd = _check(image, boxes, labels, is_crowd)
  if rng.random() < prob:
    image, boxes = transforms.horizontal_flip(image, boxes)
  return _out(image, boxes, labels, is_crowd)


def _size(size) -> tuple[int, int]:
  if np.ndim(size) == 0:
    size = (size, size)
  if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
    raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
  return int(size[0]), int(size[1])


def resize(image: np.ndarray, boxes, labels, size=512, *, is_crowd=None):
  """Resizes to ``size`` (int: square; or ``(height, width)``), not aspect-preserving (§2.2: "each
  sampled patch is resized to fixed size"), PIL bilinear; boxes times ``(out_w / W, out_h / H)``.
  """
  boxes, labels, is_crowd = _check(image, boxes, labels, is_crowd)
  out_h, out_w = _size(size)
  h, w = image.shape[:2]
  if (h, w) != (out_h, out_w):
    image = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR), np.uint8)
  sx, sy = np.float32(out_w / w), np.float32(out_h / h)
  boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
  return _out(image, boxes, labels, is_crowd)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------
def ssd_augment(example: DetectionExample, rng: np.random.Generator, *, size=512,
                mean=IMAGENET_MEAN_255, photometric: bool = True, zoom_out: bool = True,
                crop: bool = True, flip: bool = True, max_ratio: float = 4.0,
                photometric_kwargs: dict | None = None,
                crop_kwargs: dict | None = None) -> DetectionExample:
  """SSD's training augmentation (§2.2, §3.6): photometric -> expand -> crop -> flip -> resize.

  Args:
    example: a ``DetectionExample`` with its image.
    rng: the example's Generator. Four independent child generators are drawn from it first
      (one per random stage, in the order above), so switching a stage off leaves the others'
      draws unchanged.
    size: output size, int (square; 300 for SSD300, 512 for SSD512) or ``(height, width)``.
    mean: the ``expand`` canvas colour, RGB in 0..255 (``config.data.pixel_mean * 255``).
    photometric, zoom_out, crop, flip: switch each stage off (the resize always runs).
    max_ratio: ``expand``'s largest side ratio (4: the paper's 16x area).
    photometric_kwargs, crop_kwargs: extra arguments for ``sample_photometric_params`` /
      ``sample_min_iou_crop``.

  Returns:
    A ``DetectionExample`` with the ``size`` image and the surviving objects' ``boxes``
    (output pixels, clipped to the crop), ``classes`` and ``is_crowd``; ``image_id`` and
    ``file_name`` are kept, ``masks`` is None (instance masks are not transformed).
  """
  if example.image is None:
    raise ValueError(f"ssd_augment needs the image (image_id={example.image_id})")
  seeds = rng.integers(0, 2**63 - 1, size=4, dtype=np.int64)
  rngs = [np.random.default_rng(int(s)) for s in seeds]
  out = (example.image, example.boxes, example.classes, example.is_crowd)
  if photometric:
    out = photometric_distort(*out[:3], rngs[0], is_crowd=out[3], **(photometric_kwargs or {}))
  if zoom_out:
    out = expand(*out[:3], rngs[1], is_crowd=out[3], mean=mean, max_ratio=max_ratio)
  if crop:
    out = min_iou_random_crop(*out[:3], rngs[2], is_crowd=out[3], **(crop_kwargs or {}))
  if flip:
    out = random_flip(*out[:3], rngs[3], is_crowd=out[3])
  image, boxes, classes, is_crowd = resize(*out[:3], size, is_crowd=out[3])
  return dataclasses.replace(example, image=image, boxes=boxes, classes=classes,
                             is_crowd=is_crowd, masks=None)
