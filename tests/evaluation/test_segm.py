"""jaxdet.evaluation.segm: mask paste-back vs a slow per-pixel grid_sample loop, RLE round trip."""
import math

import numpy as np
import pytest

from jaxdet.evaluation.segm import attach_segmentations, encode_masks, paste_masks

mask_utils = pytest.importorskip("pycocotools.mask")


def ref_paste(probs, box, height, width):
  """detectron2 _do_paste_mask written out per pixel: the pixel centre mapped to grid_sample's
  normalised coordinate (align_corners=False), then to the map's index coordinate, bilinear with
  zero padding. Returns the interpolated values [height, width] (float64)."""
  side_h, side_w = probs.shape
  x1, y1, x2, y2 = (float(v) for v in box)
  out = np.zeros((height, width))
  if not (x2 - x1 > 0 and y2 - y1 > 0):
    return out
  for y in range(height):
    gy = (y + 0.5 - y1) / (y2 - y1) * 2 - 1          # in [-1, 1] over the box
    v = ((gy + 1) * side_h - 1) / 2                   # grid_sample unnormalise, align_corners=False
    for x in range(width):
      gx = (x + 0.5 - x1) / (x2 - x1) * 2 - 1
      u = ((gx + 1) * side_w - 1) / 2
      r0, c0 = math.floor(v), math.floor(u)
      acc = 0.0
      for r, wr in ((r0, 1 - (v - r0)), (r0 + 1, v - r0)):
        for c, wc in ((c0, 1 - (u - c0)), (c0 + 1, u - c0)):
          if 0 <= r < side_h and 0 <= c < side_w:     # padding_mode='zeros'
            acc += wr * wc * probs[r, c]
      out[y, x] = acc
  return out


def test_paste_masks_matches_per_pixel_grid_sample():
  rng = np.random.default_rng(0)
  height, width, side = 37, 45, 7
  boxes = [[3.3, 4.7, 20.2, 30.9],       # fractional, inside
           [-6.5, -3.2, 12.4, 9.8],      # over the top-left corner
           [30.1, 20.6, 52.3, 44.0],     # past the bottom-right
           [10.0, 10.0, 11.2, 10.7],     # smaller than a pixel / than the mask
           [0.0, 0.0, 45.0, 37.0],       # the whole image
           [15.0, 5.0, 15.0, 25.0],      # zero width: empty
           [20.0, 20.0, 10.0, 30.0],     # negative width: empty
           [50.0, 40.0, 70.0, 60.0],     # outside the image
           [-20.0, 2.0, -0.2, 15.0],     # left of the image, its border ramp reaches inside
           [10.05, 8.05, 39.95, 33.95]]  # 4.3 px cells: the ramp reaches pixels 9 and 40
  boxes = np.asarray(boxes)
  probs = rng.uniform(size=(len(boxes), side, side))
  probs[4] = rng.uniform(0.3, 0.7, (side, side))
  probs[9] = rng.uniform(0.9, 1.0, (side, side))
  for threshold in (0.5, 0.3):
    got = paste_masks(probs, boxes, height, width, threshold=threshold)
    assert got.shape == (len(boxes), height, width) and got.dtype == bool
    for d in range(len(boxes)):
      value = ref_paste(probs[d], boxes[d], height, width)
      clear = np.abs(value - threshold) > 1e-6
      np.testing.assert_array_equal(got[d][clear], (value >= threshold)[clear], err_msg=str(d))
    assert got[0].sum() > 50 and got[1].sum() > 0 and got[2].sum() > 0
    assert not got[5].any() and not got[6].any() and not got[7].any()
    # pixel centres outside the box read u < -0.5 (weight < 1/2): kept only below threshold 0.5
    outside = got[9][:, 9].any() or got[9][:, 40].any() or got[9][7].any() or got[9][34].any()
    assert outside == (threshold < 0.5)


def test_paste_masks_by_hand():
  """A uniform 0.8 map on box [2, 3, 6, 5] (4 x 2 px, 2 x 2 cells of 2 x 1 px): columns 2 and 5
  read u = -0.25 and 1.25 (0.8 * 0.75 = 0.6, kept), columns 1 and 6 read u = -0.75 and 1.75
  (0.2); rows 3, 4 read v = 0, 1 (0.8) and rows 2, 5 read v = -1, 2 (0)."""
  got = paste_masks(np.full((1, 2, 2), 0.8), np.array([[2.0, 3.0, 6.0, 5.0]]), 8, 9)
  want = np.zeros((8, 9), bool)
  want[3:5, 2:6] = True
  np.testing.assert_array_equal(got[0], want)
  # pixel (0, 0) centred on the box corner: u = v = -0.5 -> 0.8 * 0.5 * 0.5 = 0.2
  assert not paste_masks(np.full((1, 2, 2), 0.8), np.array([[0.5, 0.5, 4.0, 4.0]]), 4, 4)[0, 0, 0]
  assert paste_masks(np.zeros((0, 4, 4)), np.zeros((0, 4)), 5, 6).shape == (0, 5, 6)
  with pytest.raises(ValueError, match="boxes"):
    paste_masks(np.zeros((2, 4, 4)), np.zeros((1, 4)), 5, 6)
  with pytest.raises(ValueError, match="probs"):
    paste_masks(np.zeros((4, 4)), np.zeros((1, 4)), 5, 6)
  with pytest.raises(ValueError, match="threshold"):
    paste_masks(np.zeros((1, 4, 4)), np.zeros((1, 4)), 5, 6, threshold=0.0)


def test_encode_masks_round_trip():
  rng = np.random.default_rng(1)
  masks = rng.uniform(size=(4, 23, 31)) < 0.4
  masks[1] = False
  masks[2] = True
  rles = encode_masks(masks)
  assert len(rles) == 4
  for rle, mask in zip(rles, masks):
    assert rle["size"] == [23, 31] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    assert int(mask_utils.area(rle)) == int(mask.sum())
  assert encode_masks(np.zeros((0, 5, 6), bool)) == []
  results = [{"image_id": 1, "score": 0.5}, {"image_id": 2, "score": 0.4}]
  out = attach_segmentations(results, rles[:2])
  assert out[1]["segmentation"] is rles[1] and "segmentation" not in results[0]
  with pytest.raises(ValueError, match="one segmentation per result"):
    attach_segmentations(results, rles)
