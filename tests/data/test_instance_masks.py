"""Tests of jaxdet.data.instance_masks against pycocotools full-image rasterisation.

The reference of a frame mask is independent of the code under test: pycocotools rasterises the
*whole image* (what ``COCO.annToMask`` does), then a slow Python loop samples it at the frame's
cell centres (cell ``(i, j)`` centre ``x1 + (j + 0.5) * w / M``, the pixel containing it).
"""
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jaxdet.data import instance_masks as im

H, W = 60, 80


def ann_to_mask(segmentation, height, width, factor=1):
  """``COCO.annToMask`` of an image ``factor`` times larger (polygons scaled by ``factor``)."""
  if isinstance(segmentation, dict):
    assert factor == 1
    rle = segmentation
    if isinstance(rle["counts"], list):
      rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(rle["counts"], str):
      rle = dict(rle, counts=rle["counts"].encode())
    return mask_utils.decode(rle)
  polys = [[v * factor for v in p] for p in segmentation]
  return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, height * factor,
                                                                   width * factor)))


def sample_cell_centres(full, box, m, factor=1):
  """Slow loop: ``full`` (an image ``factor`` times the original) at the frame's cell centres."""
  x1, y1, x2, y2 = box
  out = np.zeros((m, m), np.uint8)
  for i in range(m):
    for j in range(m):
      x = (x1 + (j + 0.5) * (x2 - x1) / m) * factor
      y = (y1 + (i + 0.5) * (y2 - y1) / m) * factor
      r, c = math.floor(y), math.floor(x)
      if 0 <= r < full.shape[0] and 0 <= c < full.shape[1]:
        out[i, j] = full[r, c]
  return out


def star_polygon(rng, cx, cy, radius, points=9):
  ang = np.sort(rng.uniform(0, 2 * np.pi, points))
  rad = radius * rng.uniform(0.45, 1.0, points)
  return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).reshape(-1).tolist()


def tight_box(segmentation):
  xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in segmentation])
  (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
  return [float(x1), float(y1), float(x2), float(y2)]


def uncompressed_rle(full):
  """Column-major run lengths starting with a run of zeros (the COCO uncompressed format)."""
  flat = full.T.reshape(-1).astype(np.uint8)
  counts, value, run = [], 0, 0
  for v in flat.tolist():
    if v == value:
      run += 1
    else:
      counts.append(run)
      value, run = v, 1
  counts.append(run)
  return {"size": list(full.shape), "counts": counts}


# (polygon seed, box mode, M): tight boxes, wide / tall frames larger than the object, frames cut
# through the object; M below, near and above the box side.
# (At least 10 x 10 cells: with fewer, one cell is more than the 3% tolerance.)
CASES = [(0, "tight", 10), (1, "tight", 14), (2, "tight", 28), (3, "wide", 14), (4, "tall", 28),
         (5, "cut", 14), (6, "tight", 56), (7, "wide", 28), (9, "tight", 10), (11, "wide", 12),
         (14, "cut", 10)]


def make_case(seed, mode):
  rng = np.random.default_rng(seed)
  seg = [star_polygon(rng, rng.uniform(25, 55), rng.uniform(20, 40), rng.uniform(8, 18))]
  if seed % 2:  # a second part, as for an occluded object
    seg.append(star_polygon(rng, rng.uniform(25, 55), rng.uniform(20, 40), rng.uniform(4, 8), 5))
  x1, y1, x2, y2 = tight_box(seg)
  if mode == "wide":
    x1, x2 = x1 - 6.3, x2 + 9.1
  elif mode == "tall":
    y1, y2 = y1 - 7.7, y2 + 4.2
  elif mode == "cut":
    x1, y2 = x1 + 0.3 * (x2 - x1), y2 - 0.25 * (y2 - y1)
  return seg, [x1, y1, x2, y2]


@pytest.mark.parametrize("seed, mode, m", CASES)
def test_polygon_frame_matches_full_image_rasterisation(seed, mode, m):
  seg, box = make_case(seed, mode)
  got = im.box_frame_mask(seg, box, H, W, m)
  assert got.shape == (m, m) and got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
  # A 4x finer full-image rasterisation so that frames finer than the pixels are judged fairly.
  ref = sample_cell_centres(ann_to_mask(seg, H, W, factor=4), box, m, factor=4)
  assert ref.sum() > 0.2 * m * m  # the case is not trivially empty
  assert (got == ref).mean() >= 0.97, (got != ref).sum()
  # Against the plain annToMask (1x), a cell may differ only where the pixel quantisation does:
  # the pixel under its centre must touch the object's boundary (mixed 3x3 neighbourhood).
  full = ann_to_mask(seg, H, W)
  ref1 = sample_cell_centres(full, box, m)
  for i, j in np.argwhere(got != ref1):
    r = math.floor(box[1] + (i + 0.5) * (box[3] - box[1]) / m)
    c = math.floor(box[0] + (j + 0.5) * (box[2] - box[0]) / m)
    hood = full[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
    assert hood.min() == 0 and hood.max() == 1, (i, j)


@pytest.mark.parametrize("seed, mode, m", CASES)
def test_rle_frame_is_exactly_the_sampled_full_mask(seed, mode, m):
  seg, box = make_case(seed, mode)
  full = ann_to_mask(seg, H, W)
  want = sample_cell_centres(full, box, m)
  compressed = im.mask_to_rle(full)
  for rle in (compressed, dict(compressed, counts=compressed["counts"].encode()),
              uncompressed_rle(full)):
    np.testing.assert_array_equal(im.box_frame_mask(rle, box, H, W, m), want)


def test_hand_made_rectangle_is_known_exactly():
  # The object is [10, 30] x [20, 50]; its frame is the larger box [10, 40] x [20, 60], M = 8.
  # Frame x' = (x - 10) * 8 / 30 -> the object spans [0, 5.33): cells j = 0..4 (centres 0.5..4.5);
  # y' = (y - 20) * 8 / 40 -> [0, 6): rows i = 0..5.
  rect = [[10, 20, 30, 20, 30, 50, 10, 50]]
  box = [10, 20, 40, 60]
  want = np.zeros((8, 8), np.uint8)
  want[0:6, 0:5] = 1
  np.testing.assert_array_equal(im.box_frame_mask(rect, box, H, W, 8), want)
  full = np.zeros((H, W), np.uint8)
  full[20:50, 10:30] = 1
  np.testing.assert_array_equal(im.box_frame_mask(im.mask_to_rle(full), box, H, W, 8), want)
  # The tight box: every cell is inside.
  assert im.box_frame_mask(rect, [10, 20, 30, 50], H, W, 5).all()


def test_flip_is_the_mirrored_frame_of_the_flipped_object():
  for seed, mode, m in CASES[:5]:
    seg, box = make_case(seed, mode)
    frames = im.box_frame_masks([seg], [box], H, W, m)
    flipped_seg = [[W - v if k % 2 == 0 else v for k, v in enumerate(p)] for p in seg]
    flipped_box = [W - box[2], box[1], W - box[0], box[3]]  # transforms.horizontal_flip
    want = im.box_frame_mask(flipped_seg, flipped_box, H, W, m)
    got = im.flip_box_frame_masks(frames)[0]
    assert (got == want).mean() >= 0.97
    ref = sample_cell_centres(ann_to_mask(flipped_seg, H, W, factor=4), flipped_box, m, factor=4)
    assert (got == ref).mean() >= 0.97
    assert not np.array_equal(got, frames[0])  # the star polygons are not symmetric
  masks = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  np.testing.assert_array_equal(im.flip_box_frame_masks(masks)[1, 0], [11, 10, 9])


def test_degenerate_box_gives_zeros_and_batch_shapes():
  seg, _ = make_case(0, "tight")
  rle = im.mask_to_rle(ann_to_mask(seg, H, W))
  for box in ([10, 10, 10, 30], [10, 30, 20, 30], [30, 10, 20, 40]):
    for s in (seg, rle):
      out = im.box_frame_mask(s, box, H, W, 6)
      assert out.shape == (6, 6) and not out.any()
  assert im.box_frame_masks([], np.zeros((0, 4)), H, W, 4).shape == (0, 4, 4)
  boxes = [tight_box(seg), [0, 0, 80, 60]]
  both = im.box_frame_masks([seg, rle], boxes, H, W, 12)
  assert both.shape == (2, 12, 12) and both.dtype == np.uint8
  np.testing.assert_array_equal(both[0], im.box_frame_mask(seg, boxes[0], H, W, 12))
  np.testing.assert_array_equal(both[1], sample_cell_centres(ann_to_mask(seg, H, W), boxes[1], 12))


def test_mask_to_rle_round_trip_and_json():
  rng = np.random.default_rng(3)
  full = (rng.random((H, W)) < 0.3).astype(np.uint8)
  rle = im.mask_to_rle(full.astype(bool))
  assert isinstance(rle["counts"], str) and rle["size"] == [H, W]
  rle = json.loads(json.dumps(rle))
  np.testing.assert_array_equal(mask_utils.decode(dict(rle, counts=rle["counts"].encode())), full)
  assert mask_utils.area(dict(rle, counts=rle["counts"].encode())) == full.sum()


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"RLE segmentation has size \[10, 10\].*60x80"):
    im.box_frame_mask(im.mask_to_rle(np.ones((10, 10))), [0, 0, 5, 5], H, W, 4)
  with pytest.raises(ValueError, match=r"polygon #1.*>= 6"):
    im.box_frame_mask([[0, 0, 5, 0, 5, 5], [1, 2, 3, 4]], [0, 0, 5, 5], H, W, 4)
  with pytest.raises(ValueError, match="frame mask size"):
    im.box_frame_mask([[0, 0, 5, 0, 5, 5]], [0, 0, 5, 5], H, W, 0)
  with pytest.raises(ValueError, match="one segmentation per box"):
    im.box_frame_masks([[[0, 0, 5, 0, 5, 5]]], np.zeros((2, 4)), H, W, 4)
