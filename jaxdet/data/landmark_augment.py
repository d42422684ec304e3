"""Geometric augmentation of face crops for landmark training (low-resolution landmark paper, §4.1).

"Data augmentation techniques such as random scaling (0.9, 1.1), random rotation (-30, 30) and
random translation upto 20 pixels are used" (§4.1). We draw one similarity transform per example
(scale, rotation about the image centre, translation) and apply it to the pixels with PIL and to
the landmarks with the same matrix, so that both move together exactly.

Conventions: ``jaxdet.data.face_records``'s continuous pixel coordinates (image spans
``[0, W] x [0, H]``, pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``). A matrix ``M`` is
``2 x 3`` and maps an input point ``p`` to the output point ``M[:, :2] @ p + M[:, 2]``.
PIL's ``Image.transform(..., Image.AFFINE, data)`` evaluates, for output pixel ``(x, y)``, the
input at ``data`` applied to the pixel *centre* ``(x + 0.5, y + 0.5)``, and its bilinear filter
places input samples at pixel centres too; so passing the inverse of ``M`` in continuous
coordinates is exact (the test checks a blob lands where ``M`` sends its centre, < 0.1 px).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _hw(size) -> tuple[int, int]:
  if np.ndim(size) == 0:
    return int(size), int(size)
  if len(size) != 2:
    raise ValueError(f"size must be an int or (height, width), got {size!r}")
  return int(size[0]), int(size[1])


def similarity_matrix(size, scale: float = 1.0, rotation_deg: float = 0.0, tx: float = 0.0,
                      ty: float = 0.0) -> np.ndarray:
  """``2 x 3`` matrix: rotate by ``rotation_deg`` and scale by ``scale`` about the image centre
  ``(W / 2, H / 2)``, then translate by ``(tx, ty)`` pixels.

  ``p' = s R (p - c) + c + t`` with ``R = [[cos, -sin], [sin, cos]]`` in image coordinates (y
  down, so a positive angle turns the face clockwise on screen). ``size``: int or (H, W).
  """
  h, w = _hw(size)
  a = math.radians(float(rotation_deg))
  sr = float(scale) * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  c = np.array([w / 2.0, h / 2.0])
  t = c - sr @ c + np.array([float(tx), float(ty)])
  return np.concatenate([sr, t[:, None]], axis=1)


def random_similarity(rng: np.random.Generator, size, *, scale=(0.9, 1.1),
                      rotation_deg: float = 30.0, translation_px: float = 20.0,
                      reference_size: int = 128) -> np.ndarray:
  """The §4.1 augmentation as a ``2 x 3`` matrix about the image centre.

  Scale ~ U(scale), angle ~ U(-rotation_deg, rotation_deg), and a translation with each axis
  ~ U(-T, T) independently, ``T = translation_px * side / reference_size`` ("up to 20 pixels" at
  the paper's 128 px HR crops; a 32 px LR crop gets 5 px, i.e. the same fraction of the face).

  Args:
    rng: numpy Generator (the loader's ``example_rng``); four draws, in the order scale, angle,
      tx, ty.
    size: the image size, int or (height, width).
  """
  h, w = _hw(size)
  lo, hi = float(scale[0]), float(scale[1])
  if not 0 < lo <= hi:
    raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
  if rotation_deg < 0 or translation_px < 0 or reference_size <= 0:
    raise ValueError("rotation_deg and translation_px must be >= 0 and reference_size > 0, got "
                     f"{rotation_deg}, {translation_px}, {reference_size}")
  s = rng.uniform(lo, hi)
  ang = rng.uniform(-rotation_deg, rotation_deg)
  tx = rng.uniform(-1.0, 1.0) * translation_px * w / reference_size
  ty = rng.uniform(-1.0, 1.0) * translation_px * h / reference_size
  return similarity_matrix((h, w), s, ang, tx, ty)


def transform_points(matrix, points):
  """``points [..., 2] -> matrix[:, :2] @ p + matrix[:, 2]`` (float32; None passes through)."""
  if points is None:
    return None
  m = np.asarray(matrix, np.float64)
  if m.shape != (2, 3):
    raise ValueError(f"matrix must be 2 x 3, got shape {m.shape}")
  p = np.asarray(points, np.float64)
  return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def invert(matrix) -> np.ndarray:
  """Inverse of a ``2 x 3`` affine matrix."""
  m = np.asarray(matrix, np.float64)
  a = m[:, :2]
  if abs(np.linalg.det(a)) < 1e-12:
    raise ValueError(f"affine matrix is singular: {m.tolist()}")
  ai = np.linalg.inv(a)
  return np.concatenate([ai, -(ai @ m[:, 2])[:, None]], axis=1)


def warp_face(image, landmarks, matrix, out_size=None, fill=0):
  """Warps ``image`` by ``matrix`` (PIL, bilinear) and moves ``landmarks`` the same way.

  Args:
    image: uint8 ``[H, W, 3]`` / ``[H, W]``, or float ``[H, W(, C)]`` (warped per channel in PIL
      mode 'F', returned as float32).
    landmarks: ``[N, 2]`` or None.
    matrix: ``2 x 3`` input -> output map (e.g. ``random_similarity``).
    out_size: output (height, width) or int; None: the input size.
    fill: value of pixels that come from outside the input (int, or an RGB triple for uint8).

  Returns:
    ``(warped image, transformed landmarks or None)``.
  """
  img = np.asarray(image)
  if img.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W] or [H, W, C], got shape {img.shape}")
  h, w = img.shape[:2]
  oh, ow = (h, w) if out_size is None else _hw(out_size)
  inv = invert(matrix)
  data = tuple(float(v) for v in inv.reshape(-1))   # (a, b, c, d, e, f): input = inv @ output
  kwargs = dict(resample=Image.BILINEAR)
  if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3)):
    pil = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img)
    out = np.asarray(pil.transform((ow, oh), Image.AFFINE, data, fillcolor=fill, **kwargs))
    if img.ndim == 3 and img.shape[2] == 1:
      out = out[..., None]
  else:
    chans = img[..., None] if img.ndim == 2 else img
    f = float(np.ravel(fill)[0]) if np.size(fill) else 0.0
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(chans[..., k], np.float32), "F")
                         .transform((ow, oh), Image.AFFINE, data, fillcolor=f, **kwargs))
              for k in range(chans.shape[2])]
    out = np.stack(planes, -1).astype(np.float32)
    if img.ndim == 2:
      out = out[..., 0]
  return out, transform_points(matrix, landmarks)


def transform_box(matrix, box):
  """A face box after a similarity: same centre mapping, width and height times the scale.

  Keeps ``sqrt(w h)`` (the AFLW normaliser) equal to the transformed face's size; a rotated box
  is not axis-aligned, so this is not the enclosing box of the corners. None passes through.
  """
  if box is None:
    return None
  m = np.asarray(matrix, np.float64)
  b = np.asarray(box, np.float64).reshape(4)
  s = math.sqrt(abs(np.linalg.det(m[:, :2])))
  c = transform_points(m, ((b[:2] + b[2:]) / 2.0)[None])[0].astype(np.float64)
  half = s * (b[2:] - b[:2]) / 2.0
  return np.concatenate([c - half, c + half]).astype(np.float32)
