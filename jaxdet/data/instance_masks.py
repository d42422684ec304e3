"""Instance segmentations rasterised into box frames: the host side of Mask R-CNN mask targets.

Mask R-CNN (He et al. 2017, §3) predicts for every RoI an ``m x m`` mask and trains it against
"the intersection between an RoI and its associated ground-truth mask". With static shapes on
the device (the Cloud TPU Mask R-CNN recipe), the host does not ship full-image masks: for every
ground-truth object it ships a fixed-size ``M x M`` *box-frame mask*, the object's segmentation
sampled inside its ground-truth box (the *frame*), together with the frame box. The device then
crops / resamples a frame mask to a sampled RoI. Only this rasterisation is here (numpy +
``pycocotools.mask``).

Conventions (``jaxdet.data.records``): boxes are absolute-pixel ``xyxy`` float32 and pixel
``(r, c)`` covers ``[c, c+1) x [r, r+1)``. Frame cell ``(i, j)`` of an ``M x M`` frame mask over
the box ``(x1, y1, x2, y2)`` covers ``[x1 + j * (x2 - x1) / M, x1 + (j + 1) * (x2 - x1) / M)``
horizontally (the same vertically), so its centre is ``x1 + (j + 0.5) * (x2 - x1) / M``.

Segmentations are COCO ``segmentation`` values in original image pixels:

* polygons ``[[x1, y1, x2, y2, ...], ...]`` (each at least 3 points): mapped into the frame
  (``x' = (x - x1) * M / (x2 - x1)``, the same for ``y``) and rasterised there by pycocotools, i.e.
  exactly at frame resolution (pycocotools' rasteriser fills a pixel when its centre is inside,
  which is the cell-centre rule below for a polygon);
* RLE ``{"size": [h, w], "counts": str | bytes | list}`` (compressed, or uncompressed as in
  crowd / LVIS annotations): decoded to the full ``h x w`` image mask, then sampled at the frame's
  ``M x M`` cell centres (the pixel that contains the centre point; 0 outside the image).
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def _is_rle(segmentation) -> bool:
  return isinstance(segmentation, dict)


def _check_polygons(segmentation) -> list[list[float]]:
  if not isinstance(segmentation, (list, tuple)):
    raise ValueError(f"segmentation must be a COCO polygon list [[x1, y1, x2, y2, ...], ...] or "
                     f"an RLE dict {{'size': [h, w], 'counts': ...}}, got "
                     f"{type(segmentation).__name__}.")
  polys = []
  for k, p in enumerate(segmentation):
    if not isinstance(p, (list, tuple, np.ndarray)) or len(p) < 6 or len(p) % 2:
      raise ValueError(f"segmentation polygon #{k} must be a flat list of an even number (>= 6) "
                       f"of coordinates [x1, y1, x2, y2, x3, y3, ...], got {p!r:.80}.")
    polys.append(np.asarray(p, np.float64).reshape(-1))
  return polys


def _rle_full_mask(segmentation: dict, height: int, width: int) -> np.ndarray:
  """Decodes a compressed or uncompressed COCO RLE to ``uint8 [height, width]``."""
  size = segmentation.get("size")
  counts = segmentation.get("counts")
  if not isinstance(size, (list, tuple)) or len(size) != 2 or counts is None:
    raise ValueError(f"RLE segmentation must be {{'size': [h, w], 'counts': str | list}}, got "
                     f"keys {sorted(segmentation)}.")
  if (int(size[0]), int(size[1])) != (int(height), int(width)):
    raise ValueError(f"RLE segmentation has size {list(size)} (h, w) but the image is "
                     f"{height}x{width} (h x w); the RLE must cover the whole original image.")
  if isinstance(counts, list):  # uncompressed: frPyObjects compresses it
    rle = mask_utils.frPyObjects(segmentation, int(height), int(width))
  else:
    rle = {"size": [int(height), int(width)],
           "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
  return mask_utils.decode(rle)


def box_frame_mask(segmentation, box, height: int, width: int, size: int) -> np.ndarray:
  """The ``uint8 [size, size]`` (0 / 1) mask of ``segmentation`` inside its frame ``box``.

  Args:
    segmentation: one COCO segmentation (polygon list or RLE dict, module docstring), in the
      pixels of the original ``height x width`` image.
    box: the frame, ``xyxy`` in the same pixels (usually the object's ground-truth box).
    height, width: the original image size (an RLE must have this size).
    size: ``M``, the side of the frame mask.

  A degenerate box (``x2 - x1 <= 0`` or ``y2 - y1 <= 0``) gives all zeros.
  """
  size = int(size)
  if size < 1:
    raise ValueError(f"frame mask size must be >= 1, got {size}")
  x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
  bw, bh = x2 - x1, y2 - y1
  out = np.zeros((size, size), np.uint8)
  if not (bw > 0 and bh > 0):
    return out
  if _is_rle(segmentation):
    full = _rle_full_mask(segmentation, height, width)
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    cols = np.floor(x1 + centres * bw).astype(np.int64)
    rows = np.floor(y1 + centres * bh).astype(np.int64)
    inside = ((rows[:, None] >= 0) & (rows[:, None] < height)
              & (cols[None] >= 0) & (cols[None] < width))
    vals = full[np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None]]
    return np.where(inside, vals, 0).astype(np.uint8)
  polys = _check_polygons(segmentation)
  if not polys:
    return out
  sx, sy = size / bw, size / bh
  framed = []
  for p in polys:
    q = p.reshape(-1, 2).copy()
    q[:, 0] = (q[:, 0] - x1) * sx
    q[:, 1] = (q[:, 1] - y1) * sy
    framed.append(q.reshape(-1).tolist())
  rles = mask_utils.frPyObjects(framed, size, size)
  return np.ascontiguousarray(mask_utils.decode(mask_utils.merge(rles)), np.uint8)


def box_frame_masks(segmentations, boxes, height: int, width: int, size: int) -> np.ndarray:
  """``uint8 [n, size, size]``: ``box_frame_mask`` of each ``(segmentation, box)`` pair."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  segmentations = list(segmentations)
  if len(segmentations) != len(boxes):
    raise ValueError(f"box_frame_masks: {len(segmentations)} segmentations but {len(boxes)} boxes; "
                     "need one segmentation per box.")
  out = np.zeros((len(boxes), int(size), int(size)), np.uint8)
  for k, (seg, box) in enumerate(zip(segmentations, boxes)):
    out[k] = box_frame_mask(seg, box, height, width, size)
  return out


def flip_box_frame_masks(masks) -> np.ndarray:
  """Left-right mirror of frame masks ``[n, M, M]`` (for a horizontally flipped image).

  A horizontal flip maps the box ``(x1, y1, x2, y2)`` to ``(W - x2, y1, W - x1, y2)``
  (``transforms.horizontal_flip``), the mirror image of the box, and the object's pixels inside it
  are mirrored the same way: image column ``x1 + u`` of the box goes to ``W - x1 - u = x2' - u``.
  So frame cell ``j`` of the flipped frame is cell ``M - 1 - j`` of the original one: the flipped
  frame mask is ``masks[:, :, ::-1]``, with no resampling.
  """
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise ValueError(f"flip_box_frame_masks expects [n, M, M] frame masks, got shape {masks.shape}")
  return np.ascontiguousarray(masks[:, :, ::-1])


def mask_to_rle(mask) -> dict:
  """A full-image binary mask ``[H, W]`` as a COCO RLE ``{"size": [H, W], "counts": str}``.

  ``pycocotools.mask.encode`` (column-major run lengths, compressed); ``counts`` is decoded to
  ``str`` so the dict can go into a JSON file (COCO results / ground truth).
  """
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"mask_to_rle expects a 2-D [H, W] mask, got shape {mask.shape}")
  rle = mask_utils.encode(np.asfortranarray((mask != 0).astype(np.uint8)))
  return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
