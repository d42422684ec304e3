"""Instance masks through the data pipeline: COCO JSON ``segmentation`` -> box-frame masks in
``DetectionLoader`` batches (Mask R-CNN targets), checked against pycocotools.

The reference never uses the code under test: pycocotools rasterises each object on the whole
original image (``COCO.annToMask``), the geometry of an output image (flip, crop offset) is found
from its *pixels* (the original resized by ``batch['scale']`` must match it), the full mask is
carried into the output image by nearest sampling, and the batch's frame mask is sampled back
into the output image by a separate numpy sampler.
"""
import contextlib
import io
import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from jaxdet.data import transforms as T
from jaxdet.data.coco_json import CocoJsonSource
from jaxdet.data.detection_loader import DetectionLoader
from jaxdet.data.factory import Subset
from jaxdet.data.records import DetectionExample

M = 28


def star(cx, cy, r, seed, points=10):
  rng = np.random.default_rng(seed)
  ang = np.sort(rng.uniform(0, 2 * np.pi, points))
  rad = r * rng.uniform(0.55, 1.0, points)
  xy = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
  return np.round(xy, 2).reshape(-1).tolist()


def bbox_of_polygons(polys):
  xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys])
  x1, y1 = xy.min(0)
  x2, y2 = xy.max(0)
  return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def disk_rle(h, w, cx, cy, rx, ry):
  yy, xx = np.mgrid[0:h, 0:w]
  m = (((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1).astype(np.uint8)
  rle = mask_utils.encode(np.asfortranarray(m))
  ys, xs = np.nonzero(m)
  x0, y0 = float(xs.min()), float(ys.min())
  box = [x0, y0, float(xs.max() + 1) - x0, float(ys.max() + 1) - y0]
  return {"size": [h, w], "counts": rle["counts"].decode()}, box


def uncompressed(rle):
  m = mask_utils.decode(dict(rle, counts=rle["counts"].encode()))
  flat = m.T.reshape(-1)
  change = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], change, [len(flat)]])
  counts = np.diff(bounds).tolist()
  if flat[0] == 1:
    counts = [0] + counts
  return {"size": rle["size"], "counts": counts}


def write_fixture(root, *, drop_segmentation_of=None):
  """Three noise images; per image every object has its own category (the class names it).

  Objects are 25-80 px: large enough that the ~1 px band where two nearest-neighbour
  resamplings (frame, then output image) may disagree stays well under 5% of a frame."""
  img_dir = root / "images"
  img_dir.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  sizes = {1: (128, 160), 2: (100, 140), 3: (144, 120)}
  images = []
  for iid, (h, w) in sizes.items():
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / f"{iid}.png")
    images.append({"id": iid, "file_name": f"{iid}.png", "width": w, "height": h})
  anns = []

  def add(iid, cat, seg, bbox=None, crowd=0):
    bbox = bbox if bbox is not None else bbox_of_polygons(seg)
    anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat, "bbox": bbox,
                 "area": bbox[2] * bbox[3], "iscrowd": crowd, "segmentation": seg})

  add(1, 1, [star(60, 56, 34, 1)])
  add(1, 2, [[100, 16, 152, 16, 152, 80, 100, 80]])  # a rectangle
  rle, box = disk_rle(128, 160, 44, 100, 30, 20)
  add(1, 3, rle, box)
  crowd, cbox = disk_rle(128, 160, 130, 104, 20, 16)
  add(1, 4, uncompressed(crowd), cbox, crowd=1)  # LVIS / crowd style, dropped from training
  add(2, 1, [star(110, 50, 40, 2)])  # reaches past the right edge: the box gets clipped
  add(2, 2, [star(36, 40, 24, 3), star(48, 76, 16, 4, points=6)])  # two parts
  add(2, 3, [[6, 2, 4, 2, 4, 4]], [4, 2, 0.5, 2])  # degenerate box: dropped with its mask
  rle, box = disk_rle(144, 120, 60, 80, 40, 48)
  add(3, 1, uncompressed(rle), box)
  add(3, 2, [[10, 10, 50, 10, 50, 40, 10, 40]])
  if drop_segmentation_of is not None:
    del anns[drop_segmentation_of]["segmentation"]
  data = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 4)]}
  path = root / "instances.json"
  path.write_text(json.dumps(data))
  return path, img_dir, data


@pytest.fixture
def fixture(tmp_path):
  return write_fixture(tmp_path)


def ann_to_mask(seg, h, w):
  """``COCO.annToMask``: the object's full-image mask."""
  if isinstance(seg, list):
    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
  elif isinstance(seg["counts"], list):
    rle = mask_utils.frPyObjects(seg, h, w)
  else:
    rle = dict(seg, counts=seg["counts"].encode())
  return mask_utils.decode(rle).astype(bool)


# ---------------------------------------------------------------------- records / COCO JSON source
def test_example_masks_are_validated_and_follow_without_crowd():
  poly = [[0, 0, 4, 0, 4, 4]]
  rle = {"size": [8, 8], "counts": "0"}
  ex = DetectionExample(None, [[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], [0, 1, 0], 5,
                        is_crowd=[False, True, False], masks=(poly, rle, poly), height=8, width=8)
  assert ex.masks == [poly, rle, poly]
  kept = ex.without_crowd()
  assert kept.masks == [poly, poly] and kept.num_objects == 2
  assert DetectionExample(None, [[0, 0, 4, 4]], [0], 5).without_crowd().masks is None
  with pytest.raises(ValueError, match=r"image_id=5.*masks \(1\).*\(3 boxes\)"):
    DetectionExample(None, ex.boxes, ex.classes, 5, masks=[poly])
  with pytest.raises(ValueError, match=r"image_id=5.*masks must be None or a list"):
    DetectionExample(None, ex.boxes, ex.classes, 5, masks="x")


def test_source_reads_segmentations_of_the_kept_objects(fixture):
  path, img_dir, data = fixture
  src = CocoJsonSource(path, img_dir)
  assert src.has_masks
  segs = {a["id"]: a["segmentation"] for a in data["annotations"]}
  want = {1: [1, 2, 3], 2: [5, 6], 3: [8, 9]}  # annotation ids of the training objects
  for i, iid in enumerate(src.image_ids):
    ex = src[i]
    assert ex.masks == [segs[k] for k in want[iid]]
    assert len(ex.masks) == ex.num_objects
    ann = src.annotation(i)
    assert len(ann.masks) == ann.num_objects
    if iid == 1:  # annotation() keeps the crowd object, its mask too
      assert ann.masks[3] == segs[4] and ann.is_crowd.tolist() == [False] * 3 + [True]
  sub = Subset(src, indices=[2, 0])
  assert sub.has_masks and sub[0].masks == src[2].masks
  assert sub.annotation(1).masks == src.annotation(0).masks


def test_coco_ground_truth_keeps_segmentations_for_segm_eval(fixture):
  path, img_dir, _ = fixture
  gt = CocoJsonSource(path, img_dir).coco
  results = []
  for a in gt.loadAnns(gt.getAnnIds()):
    if not a["iscrowd"]:
      rle = mask_utils.encode(np.asfortranarray(gt.annToMask(a)))
      results.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                      "segmentation": dict(rle, counts=rle["counts"].decode())})
  with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(gt, gt.loadRes(results), iouType="segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  assert ev.stats[0] == pytest.approx(1.0)


def test_missing_segmentation_means_no_masks(tmp_path):
  path, img_dir, _ = write_fixture(tmp_path, drop_segmentation_of=6)  # the degenerate one
  src = CocoJsonSource(path, img_dir)
  assert not src.has_masks
  assert all(src[i].masks is None and src.annotation(i).masks is None for i in range(len(src)))
  assert not Subset(src, 2).has_masks
  with pytest.raises(ValueError, match=r"image id=1 \('1.png'\).*no instance masks.*segmentation"):
    next(iter(DetectionLoader(src, batch_size=2, image_size=(64, 64), max_boxes=4, train=False,
                              mask_size=M)))
  batch = next(iter(DetectionLoader(src, batch_size=2, image_size=(64, 64), max_boxes=4,
                                    train=False)))
  assert "masks" not in batch and "mask_boxes" not in batch


@pytest.mark.parametrize("seg, masks_missing, polygons_dropped", [
    ([], 1, 0),                                   # what VOC-to-COCO converters write
    (None, 1, 0),
    ([[1, 2, 3, 4]], 1, 1),                       # no usable polygon left: no mask
    ([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4]], 1, 2),
])
def test_box_only_annotations_load_without_masks(tmp_path, seg, masks_missing, polygons_dropped):
  """A box-only COCO JSON (empty / null segmentations) is a valid detection dataset: it loads,
  with has_masks False, and the unusable polygons are counted, not an error."""
  path, img_dir, data = write_fixture(tmp_path)
  data["annotations"][1]["segmentation"] = seg
  path.write_text(json.dumps(data))
  src = CocoJsonSource(path, img_dir)
  assert not src.has_masks and src.masks_missing == masks_missing
  assert src.polygons_dropped == polygons_dropped
  assert all(src[i].masks is None for i in range(len(src)))


def test_short_polygons_are_dropped_and_the_rest_of_the_mask_kept(tmp_path):
  path, img_dir, data = write_fixture(tmp_path)
  good = data["annotations"][0]["segmentation"]       # image 1's star polygon
  data["annotations"][0]["segmentation"] = good + [[1, 2, 3, 4]]
  path.write_text(json.dumps(data))
  src = CocoJsonSource(path, img_dir)
  assert src.polygons_dropped == 1 and src.has_masks
  assert src.annotation(0).masks[0] == good


@pytest.mark.parametrize("seg, pattern", [
    ([[1, 2, 3, 4, 5, "x"]], r"polygon #0.*finite numbers"),
    ("abc", r"polygon list.*or an RLE dict.*got str"),
    ({"size": [128, 160]}, r"RLE 'counts'"),
    ({"size": [10, 10], "counts": "abc"}, r"RLE 'size' \[10, 10\] differs.*\[128, 160\]"),
])
def test_malformed_segmentation_names_file_and_annotation(tmp_path, seg, pattern):
  path, img_dir, data = write_fixture(tmp_path)
  data["annotations"][1]["segmentation"] = seg
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r"annotation id=2 \(image id=1\): field 'segmentation' .*"
                     + pattern) as e:
    CocoJsonSource(path, img_dir)
  assert str(path) in str(e.value)


# ---------------------------------------------------------------------- loader geometry
def find_geometry(out_image, hw, original, scale):
  """(flipped, ox, oy): the flip and crop offset under which the resized original is the output."""
  ch, cw = hw
  found = []
  for flipped in (False, True):
    base = np.ascontiguousarray(original[:, ::-1]) if flipped else original
    resized, _ = T.resize_by_scale(base, np.zeros((0, 4)), scale)
    nh, nw = resized.shape[:2]
    target = out_image[:ch, :cw]
    first = (resized[:nh - ch + 1, :nw - cw + 1] == target[0, 0]).all(-1)  # noise: few candidates
    for oy, ox in np.argwhere(first):
      if np.array_equal(resized[oy:oy + ch, ox:ox + cw], target):
        found.append((flipped, int(ox), int(oy)))
  assert len(found) == 1, found
  return found[0]


def full_mask_in_output(full, geometry, scale, hw, out_size):
  """The original full mask carried into the output image by nearest sampling."""
  flipped, ox, oy = geometry
  h, w = full.shape
  out = np.zeros(out_size, bool)
  for r in range(hw[0]):
    for c in range(hw[1]):
      x, y = (c + ox + 0.5) / scale, (r + oy + 0.5) / scale
      if flipped:
        x = w - x
      rr, cc = math.floor(y), math.floor(x)
      if 0 <= rr < h and 0 <= cc < w:
        out[r, c] = full[rr, cc]
  return out


def frame_mask_in_output(frame, box, out_size):
  """Output pixel ``(r, c)`` takes the frame cell that contains its centre (0 outside the box)."""
  m = frame.shape[0]
  x1, y1, x2, y2 = (float(v) for v in box)
  out = np.zeros(out_size, bool)
  for r in range(out_size[0]):
    for c in range(out_size[1]):
      u, v = (c + 0.5 - x1) / (x2 - x1) * m, (r + 0.5 - y1) / (y2 - y1) * m
      if 0 <= u < m and 0 <= v < m:
        out[r, c] = frame[int(v), int(u)]
  return out


def check_batch(batch, src, data, out_size, train):
  """Every valid object: frame box = the transformed original box (unclipped); frame mask sampled
  back agrees >= 0.95 with the transformed pycocotools mask. Returns what the batch exercised."""
  seen = {"flips": 0, "crops": 0, "unclipped": 0, "dropped": 0, "objects": 0}
  index_of = {iid: i for i, iid in enumerate(src.image_ids)}
  segs = {a["id"]: a for a in data["annotations"]}
  for j in np.flatnonzero(batch["example_valid"]):
    i = index_of[int(batch["image_id"][j])]
    ex = src[i]
    h, w = ex.image.shape[:2]
    scale = float(batch["scale"][j])
    hw = tuple(int(v) for v in batch["image_hw"][j])
    geo = find_geometry(batch["images"][j], hw, ex.image, scale)
    flipped, ox, oy = geo
    seen["flips"] += flipped
    seen["crops"] += (ox > 0 or oy > 0)
    valid = batch["box_valid"][j]
    assert not batch["masks"][j][~valid].any() and not batch["mask_boxes"][j][~valid].any()
    classes = batch["classes"][j][valid].tolist()
    assert len(set(classes)) == len(classes)
    dropped = set(ex.classes.tolist()) - set(classes)
    seen["dropped"] += len(dropped)
    for t, cls in enumerate(classes):
      k = ex.classes.tolist().index(cls)
      x1, y1, x2, y2 = ex.boxes[k].astype(np.float64)
      if flipped:
        x1, x2 = w - x2, w - x1
      want_box = np.array([x1, y1, x2, y2]) * scale - [ox, oy, ox, oy]
      mbox = batch["mask_boxes"][j, t]
      np.testing.assert_allclose(mbox, want_box, atol=1e-3)
      lim = np.array([hw[1], hw[0]] * 2)
      if train:
        np.testing.assert_allclose(batch["boxes"][j, t], np.clip(mbox, 0, lim), atol=1e-4)
      seen["unclipped"] += bool((mbox < -1e-3).any() or (mbox > lim + 1e-3).any())
      ann = next(a for a in segs.values() if a["image_id"] == ex.image_id
                 and a["category_id"] == src.category_ids[cls])
      full = ann_to_mask(ann["segmentation"], h, w)
      ref = full_mask_in_output(full, geo, scale, hw, out_size)
      got = frame_mask_in_output(batch["masks"][j, t], mbox, out_size)
      region = np.zeros(out_size, bool)  # the frame box inside the content
      region[max(0, math.floor(mbox[1])):min(hw[0], math.ceil(mbox[3])),
             max(0, math.floor(mbox[0])):min(hw[1], math.ceil(mbox[2]))] = True
      assert ref[region].sum() > 20
      agreement = (got[region] == ref[region]).mean()
      assert agreement >= 0.95, (ex.image_id, cls, agreement)
      assert ref[~region].sum() <= 0.02 * ref.sum()  # the frame holds the (visible) object
      seen["objects"] += 1
    for cls in dropped:  # jitter drops exactly what has less than min_visible of its box left
      k = ex.classes.tolist().index(cls)
      x1, y1, x2, y2 = ex.boxes[k].astype(np.float64)
      if flipped:
        x1, x2 = w - x2, w - x1
      b = np.array([x1, y1, x2, y2]) * scale - [ox, oy, ox, oy]
      c = np.clip(b, 0, [hw[1], hw[0]] * 2)
      assert (c[2] - c[0]) * (c[3] - c[1]) < 0.5 * (b[2] - b[0]) * (b[3] - b[1]) + 1e-3
  return seen


def run(src, steps, **kw):
  loader = DetectionLoader(src, **kw)
  return list(itertools.islice(loader.iterate(0), steps))


def test_eval_resize_frames(fixture):
  path, img_dir, data = fixture
  src = CocoJsonSource(path, img_dir)
  for size in ((96, 96), (160, 200)):
    (batch,) = run(src, 1, batch_size=4, image_size=size, max_boxes=4, train=False, mask_size=M)
    assert batch["masks"].shape == (4, 4, M, M) and batch["masks"].dtype == np.uint8
    assert batch["mask_boxes"].shape == (4, 4, 4) and batch["mask_boxes"].dtype == np.float32
    assert set(np.unique(batch["masks"])) <= {0, 1}
    seen = check_batch(batch, src, data, size, train=False)
    assert seen["objects"] == 7 and seen["dropped"] == 0
    np.testing.assert_array_equal(batch["mask_boxes"], batch["boxes"])  # eval: no clipping at all


def test_train_flip_and_resize_frames(fixture):
  path, img_dir, data = fixture
  src = CocoJsonSource(path, img_dir)
  total = {"flips": 0, "objects": 0, "dropped": 0}
  for batch in run(src, 4, batch_size=3, image_size=(112, 144), max_boxes=4, train=True, seed=3,
                   hflip=True, scale_jitter=None, mask_size=M):
    seen = check_batch(batch, src, data, (112, 144), train=True)
    total = {k: total[k] + seen[k] for k in total}
  assert 0 < total["flips"] < 12 and total["objects"] > 0 and total["dropped"] == 0


def test_train_scale_jitter_frames_are_shifted_not_clipped(fixture):
  path, img_dir, data = fixture
  src = CocoJsonSource(path, img_dir)
  total = {"flips": 0, "crops": 0, "unclipped": 0, "dropped": 0, "objects": 0}
  for batch in run(src, 6, batch_size=3, image_size=(96, 96), max_boxes=4, train=True, seed=11,
                   hflip=True, scale_jitter=(0.9, 1.8), mask_size=M, num_workers=0):
    seen = check_batch(batch, src, data, (96, 96), train=True)
    total = {k: total[k] + seen[k] for k in total}
  assert total["flips"] > 0 and total["crops"] > 0 and total["objects"] > 0
  assert total["unclipped"] > 0  # some frames reach outside the crop: kept whole
  assert total["dropped"] > 0  # and some objects were dropped (with their masks)


def test_masks_leave_everything_else_unchanged_and_resume_exactly(fixture):
  path, img_dir, _ = fixture
  src = CocoJsonSource(path, img_dir)
  kw = dict(batch_size=2, image_size=(96, 96), max_boxes=4, train=True, seed=2, hflip=True,
            scale_jitter=(0.8, 1.6))
  plain = run(src, 5, **kw)
  full = run(src, 5, **kw, mask_size=M)
  for a, b in zip(plain, full):
    assert set(b) == set(a) | {"masks", "mask_boxes"}
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  resumed = list(itertools.islice(iter(DetectionLoader(src, **kw, mask_size=M, start_step=3)), 2))
  for a, b in zip(full[3:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_mask_size_argument_is_checked(fixture):
  path, img_dir, _ = fixture
  src = CocoJsonSource(path, img_dir)
  for bad in (-1, 2.5, True):
    with pytest.raises(ValueError, match="mask_size"):
      DetectionLoader(src, batch_size=1, image_size=(8, 8), max_boxes=4, train=False, mask_size=bad)
