"""Pictures a researcher looks at: detections, landmarks and image grids.

All functions take and return host numpy images (or a PIL image for
``draw_detections``); none of them modifies its input. Coordinates are
continuous pixel coordinates as in ``jaxdet.ops.boxes``: pixel ``(row, col)``
covers ``[col, col + 1) x [row, row + 1)``, ``x`` runs along columns and ``y``
along rows.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def _as_rgb_uint8(image, what: str = "image") -> np.ndarray:
  """Checks ``image`` is uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``; returns ``[H, W, 3]``."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"{what} must be uint8 (0..255), got dtype {image.dtype}; "
                    f"convert with np.clip(x, 0, 255).astype(np.uint8) first.")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3):
    raise ValueError(f"{what} must be [H, W], [H, W, 1] or [H, W, 3], got shape {image.shape}.")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"{what} is empty (shape {image.shape}).")
  if image.shape[2] == 1:
    image = np.repeat(image, 3, axis=2)
  return image


def _rgb(color, what: str) -> tuple[int, int, int]:
  c = np.asarray(color)
  if c.shape != (3,) or not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c > 255) \
      or np.any(c != np.round(c)):
    raise ValueError(f"{what} must be three integers in 0..255 (R, G, B), got {color!r}.")
  return tuple(int(v) for v in c)


_MASK_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                 (70, 240, 240), (240, 50, 230), (210, 245, 60))


def draw_detections(image: np.ndarray, dets: Sequence[Mapping], names: Mapping,
                    threshold: float) -> Image.Image:
  """Draws COCO-style detections on a copy of ``image``.

  Args:
    image: uint8 ``[H, W, 3]`` (or ``[H, W]``, drawn on as grey RGB).
    dets: dicts with ``"bbox"`` (COCO ``[x, y, w, h]`` in pixels of ``image``),
      ``"score"`` and ``"category_id"``.
    names: category id -> name for the label; ids not in it are shown as the id.
    threshold: detections with ``score >= threshold`` are drawn, the rest skipped.

  Returns:
    An RGB PIL image: each kept box as a 2-pixel red (255, 40, 40) rectangle
    outline from ``(x, y)`` to ``(x + w, y + h)`` (PIL ``rectangle`` semantics, the
    outline lies inside those bounds), labelled ``"<name> <score:.2f>"`` in yellow
    at ``(x + 2, y + 1)``. A detection with a ``"segmentation"`` (COCO RLE, Mask R-CNN) first
    has its mask blended in at 50 % in a colour of its own.
  """
  rgb = _as_rgb_uint8(image)
  kept = [d for d in dets if d["score"] >= threshold and "segmentation" in d]
  if kept:
    from pycocotools import mask as mask_utils
    rgb = rgb.astype(np.float32)
    for i, d in enumerate(kept):
      m = mask_utils.decode(d["segmentation"]).astype(bool)
      if m.shape != rgb.shape[:2]:
        continue   # a mask of another image size (a resized preview): boxes only
      colour = np.array(_MASK_COLOURS[i % len(_MASK_COLOURS)], np.float32)
      rgb[m] = 0.5 * rgb[m] + 0.5 * colour
    rgb = rgb.round().astype(np.uint8)
  im = Image.fromarray(rgb)
  draw = ImageDraw.Draw(im)
  for d in dets:
    if d["score"] < threshold:
      continue
    x, y, w, h = d["bbox"]
    draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=2)
    draw.text((x + 2, y + 1), f"{names.get(d['category_id'], d['category_id'])} {d['score']:.2f}",
              fill=(255, 255, 0))
  return im


def _nearest_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Output pixel (r, c) = input pixel (r * h // height, c * w // width)."""
  h, w = image.shape[:2]
  rows = (np.arange(height) * h) // height
  cols = (np.arange(width) * w) // width
  return image[rows[:, None], cols[None, :]]


def image_grid(images: Sequence[np.ndarray], *, columns: int, pad: int = 2,
               pad_value=255) -> np.ndarray:
  """Tiles images row-major into one uint8 ``[H, W, 3]`` picture.

  Every tile is brought to ``(th, tw) = (max h, max w)`` over ``images`` by
  nearest-neighbour resizing: tile pixel ``(r, c)`` is source pixel
  ``(r * h // th, c * w // tw)``, so with an integer factor ``k`` each source
  pixel becomes a ``k x k`` block (a 16x16 LR image next to 64x64 SR/HR images
  shows as 4x4 blocks). Grey ``[H, W]`` / ``[H, W, 1]`` images are repeated over
  three channels.

  The grid has ``ncol = min(columns, len(images))`` tiles per row and
  ``nrow = ceil(len(images) / columns)`` rows; ``pad`` pixels of ``pad_value``
  separate the tiles and frame the grid, so the result is
  ``[nrow * th + (nrow + 1) * pad, ncol * tw + (ncol + 1) * pad, 3]``. Tile
  ``i`` starts at row ``pad + (i // ncol) * (th + pad)``, column
  ``pad + (i % ncol) * (tw + pad)``. Unused cells of the last row are
  ``pad_value``.

  Args:
    images: non-empty sequence of uint8 ``[h, w]``, ``[h, w, 1]`` or ``[h, w, 3]``
      (or one uint8 ``[N, h, w, C]`` / ``[N, h, w]`` batch array).
    columns: tiles per row, >= 1.
    pad: border width in pixels, >= 0.
    pad_value: an int in 0..255 (grey) or an ``(R, G, B)`` triple.
  """
  if isinstance(images, np.ndarray):
    if not (images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in (1, 3))):
      raise ValueError(f"image_grid takes a sequence of images or an [N, H, W(, C)] batch, got "
                       f"one array of shape {images.shape}; wrap a single image in a list.")
  images = list(images)
  if not images:
    raise ValueError("image_grid needs at least one image.")
  if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
    raise ValueError(f"columns must be an int >= 1, got {columns!r}.")
  if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
    raise ValueError(f"pad must be an int >= 0, got {pad!r}.")
  if np.ndim(pad_value) == 0:
    fill = _rgb((pad_value,) * 3, "pad_value")
  else:
    fill = _rgb(pad_value, "pad_value")
  tiles = [_as_rgb_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
  th = max(t.shape[0] for t in tiles)
  tw = max(t.shape[1] for t in tiles)
  ncol = min(int(columns), len(tiles))
  nrow = math.ceil(len(tiles) / ncol)
  grid = np.empty((nrow * th + (nrow + 1) * pad, ncol * tw + (ncol + 1) * pad, 3), np.uint8)
  grid[...] = np.asarray(fill, np.uint8)
  for i, t in enumerate(tiles):
    if t.shape[:2] != (th, tw):
      t = _nearest_resize(t, th, tw)
    r0 = pad + (i // ncol) * (th + pad)
    c0 = pad + (i % ncol) * (tw + pad)
    grid[r0:r0 + th, c0:c0 + tw] = t
  return grid


def draw_points(image: np.ndarray, points, *, color=(0, 255, 0), radius: int = 1,
                visible=None) -> np.ndarray:
  """Marks points (e.g. facial landmarks) as filled discs on a copy of ``image``.

  Point ``(x, y)`` lies in pixel ``(row, col) = (floor(y), floor(x))``; every
  pixel ``(row + dy, col + dx)`` with ``dx**2 + dy**2 <= radius**2`` that lies
  inside the image is set to ``color`` (``radius=0``: that one pixel). Points
  outside the image draw only the part of their disc that is inside. Points with
  a non-finite coordinate and points whose ``visible`` entry is false are not
  drawn.

  Args:
    image: uint8 ``[H, W, 3]``, ``[H, W, 1]`` or ``[H, W]``.
    points: ``[N, 2]`` array-like of ``(x, y)`` pixel coordinates (``N`` may be 0).
    color: ``(R, G, B)`` integers in 0..255.
    radius: disc radius in pixels, an int >= 0.
    visible: optional ``[N]`` booleans; ``None`` draws every point.

  Returns:
    A new uint8 ``[H, W, 3]`` image (grey input becomes RGB).
  """
  out = _as_rgb_uint8(image).copy()
  pts = np.asarray(points, dtype=np.float64) if np.size(points) else np.zeros((0, 2))
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ValueError(f"points must be [N, 2] (x, y), got shape {np.shape(points)}.")
  if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
    raise ValueError(f"radius must be an int >= 0, got {radius!r}.")
  rgb = np.asarray(_rgb(color, "color"), np.uint8)
  keep = np.all(np.isfinite(pts), axis=1)
  if visible is not None:
    vis = np.asarray(visible)
    if vis.shape != (pts.shape[0],):
      raise ValueError(f"visible must be [N] = [{pts.shape[0]}] booleans, got shape {vis.shape}.")
    if vis.dtype != np.bool_:
      raise TypeError(f"visible must be booleans, got dtype {vis.dtype}.")
    keep &= vis
  h, w = out.shape[:2]
  r = int(radius)
  dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
  disc = dx ** 2 + dy ** 2 <= r ** 2
  dy, dx = dy[disc], dx[disc]
  for x, y in pts[keep]:
    rows = int(math.floor(y)) + dy
    cols = int(math.floor(x)) + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out[rows[inside], cols[inside]] = rgb
  return out
