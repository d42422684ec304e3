"""jaxdet.ops.ssd_anchors vs hand-computed tables and a slow loop reference (Caffe PriorBox order)."""
import math

import numpy as np
import pytest

from jaxdet.ops import ssd_anchors as S

VOC, COCO = S.SSD512_VOC, S.SSD512_COCO

# Box widths / heights at one location of each SSD512 VOC map (s, sqrt(s s'), s*sqrt2, s/sqrt2,
# s*sqrt3, s/sqrt3), evaluated by hand (awk) from the ssd_pascal_512.py sizes, 4 decimals.
VOC_WIDTHS = [
    (35.84, 52.4644, 50.6854, 25.3427),
    (76.8, 108.6116, 108.6116, 54.3058, 133.0215, 44.3405),
    (153.6, 188.1208, 217.2232, 108.6116, 266.0430, 88.6810),
    (230.4, 266.0430, 325.8348, 162.9174, 399.0645, 133.0215),
    (307.2, 343.4600, 434.4464, 217.2232, 532.0860, 177.3620),
    (384.0, 420.6509, 543.0580, 271.5290),
    (460.8, 497.7209, 651.6696, 325.8348),
]
VOC_HEIGHTS = [
    (35.84, 52.4644, 25.3427, 50.6854),
    (76.8, 108.6116, 54.3058, 108.6116, 44.3405, 133.0215),
    (153.6, 188.1208, 108.6116, 217.2232, 88.6810, 266.0430),
    (230.4, 266.0430, 162.9174, 325.8348, 133.0215, 399.0645),
    (307.2, 343.4600, 217.2232, 434.4464, 177.3620, 532.0860),
    (384.0, 420.6509, 271.5290, 543.0580),
    (460.8, 497.7209, 325.8348, 651.6696),
]


def ref_default_boxes(image_hw, feature_hw, steps, min_sizes, max_sizes, aspect_ratios, clip):
  """Slow reference written after Caffe's PriorBoxLayer::Forward (normalised coordinates, flip=True):
  for each map, for each row, for each column: min box, sqrt(min*max) box, then r, 1/r per ratio."""
  img_h, img_w = image_hw
  out = []
  for (fh, fw), step, smin, smax, ratios in zip(feature_hw, steps, min_sizes, max_sizes, aspect_ratios):
    for i in range(fh):
      for j in range(fw):
        cx = (j + 0.5) * step
        cy = (i + 0.5) * step
        wh = [(smin, smin), (math.sqrt(smin * smax), math.sqrt(smin * smax))]
        for ar in ratios:
          for a in (ar, 1.0 / ar):
            wh.append((smin * math.sqrt(a), smin / math.sqrt(a)))
        for bw, bh in wh:
          box = [(cx - bw / 2.0) / img_w, (cy - bh / 2.0) / img_h,
                 (cx + bw / 2.0) / img_w, (cy + bh / 2.0) / img_h]
          if clip:
            box = [min(max(v, 0.0), 1.0) for v in box]
          out.append([box[0] * img_w, box[1] * img_h, box[2] * img_w, box[3] * img_h])
  return np.array(out)


def test_ssd512_counts():
  for cfg in (VOC, COCO):
    assert cfg.num_anchors_per_location == (4, 6, 6, 6, 6, 4, 4)
    a = cfg.anchors()
    assert a.shape == (64 ** 2 * 4 + 32 ** 2 * 6 + 16 ** 2 * 6 + 8 ** 2 * 6 + 4 ** 2 * 6 + 2 ** 2 * 4 + 4, 4)
    assert a.shape[0] == 24564 and a.dtype == np.float32
  sl = S.level_slices(512, VOC.steps, VOC.aspect_ratios)
  assert [b - a for a, b in sl] == [16384, 6144, 1536, 384, 96, 16, 4]
  assert sl[0][0] == 0 and sl[-1][1] == 24564 and all(p[1] == q[0] for p, q in zip(sl, sl[1:]))
  # Default feature sizes (ceil(512 / step)) are SSD512's 64 ... 1; SSD300's 8732 boxes (paper, Fig. 2).
  assert S.feature_shapes(512, VOC.steps) == [(f, f) for f in (64, 32, 16, 8, 4, 2, 1)]
  assert S.feature_shapes(300, S.SSD300_VOC.steps) == [(f, f) for f in (38, 19, 10, 5, 3, 1)]
  assert S.SSD300_VOC.anchors().shape == (8732, 4)
  assert S.num_anchors_per_location([[2], [2, 3], []]) == (4, 6, 2)


@pytest.mark.parametrize("k", range(7))
def test_voc_sizes_per_location_match_table(k):
  start, stop = S.level_slices(512, VOC.steps, VOC.aspect_ratios)[k]
  f, step, kk = VOC.feature_sizes[k], VOC.steps[k], len(VOC_WIDTHS[k])
  grid = VOC.anchors(clip=False)[start:stop].reshape(f, f, kk, 4)  # [H, W, K, 4], as the head reshapes
  for i, j in {(0, 0), (f // 2, f - 1), (f - 1, f // 3)}:
    boxes = grid[i, j]
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], VOC_WIDTHS[k], rtol=2e-6, atol=1e-4)
    np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1], VOC_HEIGHTS[k], rtol=2e-6, atol=1e-4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_allclose(centres, np.tile([(j + 0.5) * step, (i + 0.5) * step], (kk, 1)), atol=1e-4)
  np.testing.assert_allclose(S.location_sizes(VOC.min_sizes[k], VOC.max_sizes[k], VOC.aspect_ratios[k]),
                             np.stack([VOC_WIDTHS[k], VOC_HEIGHTS[k]], 1), rtol=2e-6, atol=1e-4)


def test_coco_and_ssd300_sizes_by_hand():
  w = lambda b: b[:, 2] - b[:, 0]
  coco = COCO.anchors(clip=False)
  np.testing.assert_allclose(w(coco[:4]), [20.48, 32.381723, 28.963094, 14.481547], rtol=1e-6)
  np.testing.assert_allclose(w(coco[-4:]), [460.8, 500.085369, 651.669610, 651.669610 / 2], rtol=1e-6)
  ssd300 = S.SSD300_VOC.anchors(clip=False)
  np.testing.assert_allclose(w(ssd300[:4]), [30.0, 42.426407, 42.426407, 21.213203], rtol=1e-6)
  np.testing.assert_allclose(ssd300[0], [4 - 15, 4 - 15, 4 + 15, 4 + 15], atol=1e-5)


@pytest.mark.parametrize("cfg", [VOC, COCO], ids=["voc", "coco"])
@pytest.mark.parametrize("clip", [True, False])
def test_matches_loop_reference(cfg, clip):
  fs = [(f, f) for f in cfg.feature_sizes]
  want = ref_default_boxes((512, 512), fs, cfg.steps, cfg.min_sizes, cfg.max_sizes, cfg.aspect_ratios, clip)
  got = cfg.anchors(clip=clip)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_non_square_image_matches_loop_reference():
  steps, ratios = (8, 16, 32), ((2.0,), (2.0, 3.0), (3.0,))
  mins, maxs = (20.0, 50.0, 90.0), (50.0, 90.0, 130.0)
  got = S.ssd_anchors((70, 45), mins, maxs, steps, ratios)
  fs = [(9, 6), (5, 3), (3, 2)]  # ceil(70 / s), ceil(45 / s)
  assert S.feature_shapes((70, 45), steps) == fs
  want = ref_default_boxes((70, 45), fs, steps, mins, maxs, ratios, clip=True)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
  assert got[:, [0, 2]].max() <= 45 and got[:, [1, 3]].max() <= 70
  # Explicit feature sizes override ceil(image / step).
  got2 = S.ssd_anchors((70, 45), mins, maxs, steps, ratios, feature_sizes=[(8, 5), 2, (1, 1)], clip=False)
  want2 = ref_default_boxes((70, 45), [(8, 5), (2, 2), (1, 1)], steps, mins, maxs, ratios, clip=False)
  np.testing.assert_allclose(got2, want2, rtol=1e-6, atol=1e-4)


def test_clipping():
  raw, clipped = VOC.anchors(clip=False), VOC.anchors(clip=True)
  assert raw.min() < -100 and raw.max() > 600  # the big boxes do cross the border
  assert clipped.min() >= 0.0 and clipped.max() <= 512.0
  np.testing.assert_array_equal(clipped, np.clip(raw, 0.0, 512.0))
  inside = np.all((raw >= 0) & (raw <= 512), axis=1)
  assert 0 < inside.sum() < len(raw)
  np.testing.assert_array_equal(clipped[inside], raw[inside])
  # By hand: first box (map 0, row 0, col 0, 35.84 square at (4, 4)); last box (1x1 map, ratio 1/2:
  # w = 460.8/sqrt2 = 325.8348, h = 460.8*sqrt2 = 651.6696, centred at (256, 256)).
  np.testing.assert_allclose(raw[0], [-13.92, -13.92, 21.92, 21.92], atol=1e-5)
  np.testing.assert_allclose(clipped[0], [0.0, 0.0, 21.92, 21.92], atol=1e-5)
  np.testing.assert_allclose(raw[-1], [93.082598, -69.834805, 418.917402, 581.834805], atol=1e-4)
  np.testing.assert_allclose(clipped[-1], [93.082598, 0.0, 418.917402, 512.0], atol=1e-4)


def test_cxcywh_clip_is_ssd_pytorch():
  # ssd.pytorch clamps (cx, cy, w, h) / 512 to [0, 1]: a small box at the border is kept whole, a
  # box wider than the image is shrunk to the image width about its own centre.
  a = VOC.anchors(clip="cxcywh")
  np.testing.assert_allclose(a[0], [-13.92, -13.92, 21.92, 21.92], atol=1e-5)
  np.testing.assert_allclose(a[-2], [0.0, 256 - 325.834805 / 2, 512.0, 256 + 325.834805 / 2], atol=1e-4)
  np.testing.assert_allclose(a[-1], [93.082598, 0.0, 418.917402, 512.0], atol=1e-4)
  wh = a[:, 2:] - a[:, :2]
  assert wh.max() <= 512.0 + 1e-4


def test_sizes_from_ratio_rule():
  # SSD512 VOC (Caffe ssd_pascal_512.py): step = floor((90 - 15) / 5) = 15, conv4_3 at 7 % / 15 %.
  voc = S.sizes_from_ratio_rule(512, 7, 15, 90, (7, 15))
  np.testing.assert_allclose(voc[0], 512 * np.array([7, 15, 30, 45, 60, 75, 90]) / 100)
  np.testing.assert_allclose(voc[1], 512 * np.array([15, 30, 45, 60, 75, 90, 105]) / 100)
  # SSD512 COCO: step = floor((90 - 10) / 5) = 16 -> 10, 26, 42, 58, 74, 90 %, conv4_3 at 4 % / 10 %.
  coco = S.sizes_from_ratio_rule(512, 7, 10, 90, (4, 10))
  np.testing.assert_allclose(coco[0], 512 * np.array([4, 10, 26, 42, 58, 74, 90]) / 100)
  np.testing.assert_allclose(coco[1], 512 * np.array([10, 26, 42, 58, 74, 90, 106]) / 100)
  # The constants are the rule's values (as written in the configs) ...
  assert VOC.min_sizes == pytest.approx(voc[0], abs=1e-9) and VOC.max_sizes == pytest.approx(voc[1], abs=1e-9)
  assert COCO.min_sizes == pytest.approx(coco[0], abs=1e-9) and COCO.max_sizes == pytest.approx(coco[1], abs=1e-9)
  assert COCO.min_sizes[:3] == (20.48, 51.2, 133.12) and COCO.max_sizes[-1] == 542.72
  # ... and mmdetection's ssd512_coco truncates the same values to ints.
  assert [int(v) for v in coco[0]] == [20, 51, 133, 215, 296, 378, 460]
  assert [int(v) for v in coco[1]] == [51, 133, 215, 296, 378, 460, 542]
  # SSD300 VOC: step = floor(70 / 4) = 17 -> ssd.pytorch's exact integers.
  ssd300 = S.sizes_from_ratio_rule(300, 6, 20, 90, (10, 20))
  assert ssd300[0] == pytest.approx(S.SSD300_VOC.min_sizes) and ssd300[1] == pytest.approx(S.SSD300_VOC.max_sizes)
  with pytest.raises(ValueError):
    S.sizes_from_ratio_rule(512, 7, 88, 90, (4, 10))


def test_box_weights_are_inverse_variances():
  from jaxdet.ops import boxes as B
  assert S.SSD_BOX_WEIGHTS == (10.0, 10.0, 5.0, 5.0)
  # ssd.pytorch encode: ((g_c - a_c) / (0.1 a_wh), log(g_wh / a_wh) / 0.2); anchor centre (5, 10),
  # size 10 x 20; gt centre (7, 12), size 10 x 16.
  d = np.asarray(B.encode(np.array([2.0, 4.0, 12.0, 20.0]), np.array([0.0, 0.0, 10.0, 20.0]), S.SSD_BOX_WEIGHTS))
  np.testing.assert_allclose(d, [2.0, 1.0, 0.0, 5 * math.log(0.8)], rtol=1e-5, atol=1e-6)


def test_invalid_arguments():
  with pytest.raises(ValueError):
    S.ssd_anchors(512, VOC.min_sizes[:6])  # one size short
  with pytest.raises(ValueError):
    S.num_anchors_per_location([[1.0]])  # ratio 1 is implicit
  with pytest.raises(ValueError):
    S.num_anchors_per_location([[2.0, 0.5]])  # 0.5 is 2's flip
  with pytest.raises(ValueError):
    S.location_sizes(50.0, 40.0, [2.0])
  with pytest.raises(ValueError):
    S.ssd_anchors(clip="yes")
  with pytest.raises(ValueError):
    S.feature_shapes(512, (8, 16), feature_sizes=[64])
