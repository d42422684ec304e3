"""Tests of jaxdet.data.ssd_augment (SSD, Liu et al. 2016, §2.2 and §3.6).

References are independent of the module: boxes are located by painting them into the image and
finding the painted pixels after the transform; IoU, centre tests and the photometric reference
are plain Python (``colorsys`` for HSV); the hand cases are worked out in the comments.
"""
import colorsys

import numpy as np
import pytest

from jaxdet.data import ssd_augment as S
from jaxdet.data.records import DetectionExample

# Three well-separated integer boxes in a 60 x 80 (H x W) image; box k is painted in channel k.
H, W = 60, 80
BOXES = np.array([[5, 6, 30, 40], [40, 10, 52, 22], [55, 30, 78, 57]], np.float32)
LABELS = np.array([0, 1, 2], np.int32)
MEAN = (123.675, 116.28, 103.53)
MEAN_U8 = np.array([124, 116, 104], np.uint8)
PAINT_THRESH = 150  # midway between the paint (250) and the ring around it (50)


def _painted(seed=0, h=H, w=W, boxes=BOXES):
    """Noise in [0, 100]; box k: channel k = 250, the other channels 20, inside a 2-px ring of 50.

    The ring makes every box edge a step from 50 to 250, so a bilinear upscale crosses the
    threshold 150 exactly at the edge and the painted bounding box is within 1/2 output pixel of
    the true one (with noise next to the box the crossing would move with the noise).
    """
    img = np.random.default_rng(1000 + seed).integers(0, 101, (h, w, 3)).astype(np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes, int):
        img[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2] = 50
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, int)):
        img[y1:y2, x1:x2] = 20
        img[y1:y2, x1:x2, k] = 250
    return img


def _bbox_of_paint(img, k):
    """xyxy bounding box of the pixels painted for box k (pixel (r, c) = [c, c+1) x [r, r+1))."""
    ys, xs = np.nonzero(img[..., k] > PAINT_THRESH)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _iou_ref(box, patch):
    ix = max(0.0, min(box[2], patch[2]) - max(box[0], patch[0]))
    iy = max(0.0, min(box[3], patch[3]) - max(box[1], patch[1]))
    inter = ix * iy
    area_box = (box[2] - box[0]) * (box[3] - box[1])
    area_patch = (patch[2] - patch[0]) * (patch[3] - patch[1])
    union = area_box + area_patch - inter
    return inter / union


def _centre_in(box, patch):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return patch[0] < cx < patch[2] and patch[1] < cy < patch[3]


def _rng(seed):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------ expand
def test_expand_canvas_is_mean_and_boxes_move_exactly():
    img = _painted()
    ratios = []
    for seed in range(60):
        out, boxes, labels = S.expand(img, BOXES, LABELS, _rng(seed), mean=MEAN, prob=1.0)
        nh, nw = out.shape[:2]
        ratios.append(nw / W)
        assert 1 <= nh / H <= 4 and 1 <= nw / W <= 4
        assert abs(nh / H - nw / W) < 0.05  # one ratio for both sides (floor per side)
        # The offset, read from the painted box, places the whole image.
        left, top = int(boxes[0, 0] - BOXES[0, 0]), int(boxes[0, 1] - BOXES[0, 1])
        np.testing.assert_array_equal(boxes - BOXES, np.tile([left, top], 2)[None].repeat(3, 0))
        np.testing.assert_array_equal(out[top:top + H, left:left + W], img)
        outside = np.ones((nh, nw), bool)
        outside[top:top + H, left:left + W] = False
        assert (out[outside] == MEAN_U8).all()
        for k in range(3):
            np.testing.assert_array_equal(_bbox_of_paint(out, k), boxes[k])
        np.testing.assert_array_equal(labels, LABELS)
    ratios = np.array(ratios)  # r ~ U(1, 4): mean 2.5, sd 0.87 (sd of the mean of 60: 0.11)
    assert ratios.min() < 1.5 and ratios.max() > 3.5 and abs(ratios.mean() - 2.5) < 0.35


def test_expand_probability_and_identity():
    img = _painted()
    n = sum(S.expand(img, BOXES, LABELS, _rng(s))[0].shape != img.shape for s in range(200))
    assert 70 <= n <= 130  # p = 0.5: 100 +- 3.5 sigma
    out, boxes, labels = S.expand(img, BOXES, LABELS, _rng(0), prob=0.0)
    assert out is img and (boxes == BOXES).all()
    out, _, _ = S.expand(img, BOXES, LABELS, _rng(0), prob=1.0, max_ratio=1.0)
    np.testing.assert_array_equal(out, img)
    with pytest.raises(ValueError, match="mean"):
        S.expand(img, BOXES, LABELS, _rng(0), mean=(0.485, 0.456))


# ------------------------------------------------------------------------------ crop
def _coordinate_image(h, w, seed=0):
    """R = x, G = y, B = noise: any crop's origin is its top-left pixel (w, h <= 256)."""
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = np.random.default_rng(seed).integers(0, 256, (h, w))
    return img


def test_crop_respects_min_iou_and_keeps_boxes_by_centre():
    h, w = 120, 100
    boxes = np.array([[10, 12, 80, 100], [60, 70, 95, 115], [2, 100, 20, 118], [40, 5, 55, 20],
                      [0, 0, 100, 120]], np.float32)
    labels = np.arange(5)
    img = _coordinate_image(h, w)
    modes = {}
    for seed in range(300):
        sample = S.sample_min_iou_crop(boxes, h, w, _rng(seed))
        out, ob, ol = S.min_iou_random_crop(img, boxes, labels, _rng(seed))
        modes[sample.min_iou] = modes.get(sample.min_iou, 0) + 1
        if sample.patch is None:
            assert out is img and (ob == boxes).all() and (ol == labels).all()
            continue
        # The window, read from the pixels, is the sampler's patch.
        ph, pw = out.shape[:2]
        x1, y1 = int(out[0, 0, 0]), int(out[0, 0, 1])
        patch = (x1, y1, x1 + pw, y1 + ph)
        assert patch == tuple(sample.patch)
        np.testing.assert_array_equal(out, img[y1:y1 + ph, x1:x1 + pw])
        assert pw >= 0.3 * w and ph >= 0.3 * h and 0.5 <= ph / pw <= 2
        ious = [_iou_ref(b, patch) for b in boxes.tolist()]
        assert max(ious) >= sample.min_iou - 1e-9
        # Exactly the boxes whose centres are inside, clipped and translated.
        expect = [(k, [max(b[0], patch[0]) - x1, max(b[1], patch[1]) - y1,
                       min(b[2], patch[2]) - x1, min(b[3], patch[3]) - y1])
                  for k, b in enumerate(boxes.tolist()) if _centre_in(b, patch)]
        assert len(expect) >= 1
        assert ol.tolist() == [k for k, _ in expect]
        np.testing.assert_array_equal(ob, np.array([b for _, b in expect], np.float32))
    # Every mode of §2.2 is drawn: whole image (None), 0.1 .. 0.9, and unconstrained (0.0).
    assert set(modes) == {None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9}, modes


def test_crop_high_min_iou_is_satisfied():
    h, w = 120, 100
    boxes = np.array([[10, 12, 80, 100]], np.float32)  # large enough for IoU >= 0.9 patches
    seen = 0
    for seed in range(60):
        sample = S.sample_min_iou_crop(boxes, h, w, _rng(seed), min_ious=(0.9,), whole_image=False,
                                       unconstrained=False)
        if sample.patch is not None:
            seen += 1
            assert sample.min_iou == 0.9 and _iou_ref(boxes[0].tolist(), sample.patch) >= 0.9
    assert seen >= 50


def test_crop_crowd_boxes_do_not_satisfy_constraints():
    h, w = 120, 100
    boxes = np.array([[0, 0, 100, 120], [30, 30, 70, 80]], np.float32)  # crowd: the whole image
    crowd = np.array([True, False])
    labels = np.array([7, 8])
    img = _coordinate_image(h, w)
    found = 0
    for seed in range(40):
        sample = S.sample_min_iou_crop(boxes, h, w, _rng(seed), is_crowd=crowd, min_ious=(0.7,),
                                       whole_image=False, unconstrained=False)
        if sample.patch is not None:  # the non-crowd box has to reach IoU 0.7 by itself
            found += 1
            assert _iou_ref(boxes[1].tolist(), sample.patch) >= 0.7
        out = S.min_iou_random_crop(img, boxes, labels, _rng(seed), is_crowd=crowd)
        assert len(out) == 4
        _, ob, ol, oc = out
        np.testing.assert_array_equal(oc, ol == 7)  # flags follow their boxes
    assert found >= 30
    # Unreachable (a 10 x 10 box cannot have IoU 0.5 with a patch of at least 30 x 36 pixels,
    # 100 / 1080 < 0.5; the crowd box would): the whole image after max_rounds.
    small = np.array([[0, 0, 100, 120], [40, 50, 50, 60]], np.float32)
    sample = S.sample_min_iou_crop(small, h, w, _rng(0), is_crowd=crowd, min_ious=(0.5,),
                                   whole_image=False, unconstrained=False, max_rounds=20)
    assert sample == (None, None)
    sample = S.sample_min_iou_crop(small, h, w, _rng(0), min_ious=(0.5,),  # without the flag
                                   whole_image=False, unconstrained=False, max_rounds=20)
    assert sample.patch is not None and _iou_ref(small[0].tolist(), sample.patch) >= 0.5
    # Only crowd boxes (or none): the whole image is kept.
    for b, c in ((boxes[:1], crowd[:1]), (np.zeros((0, 4), np.float32), np.zeros(0, bool))):
        out, ob, ol, oc = S.min_iou_random_crop(img, b, labels[:len(b)], _rng(3), is_crowd=c)
        assert out is img and ob.shape == b.shape


def test_crop_finds_painted_boxes():
    img = _painted()
    cropped = 0
    for seed in range(150):
        out, boxes, labels = S.min_iou_random_crop(img, BOXES, LABELS, _rng(seed))
        cropped += out.shape != img.shape
        for b, k in zip(boxes, labels):
            np.testing.assert_array_equal(_bbox_of_paint(out, k), b, err_msg=f"seed {seed}")
    assert cropped > 50


# ------------------------------------------------------------------------------ flip, resize
def test_flip_hand_case_and_painted_boxes():
    img = _painted()
    out, boxes, labels = S.random_flip(img, BOXES, LABELS, _rng(0), prob=1.0)
    # [x1, y1, x2, y2] -> [W - x2, y1, W - x1, y2], W = 80
    np.testing.assert_array_equal(boxes[0], [50, 6, 75, 40])
    np.testing.assert_array_equal(boxes[2], [2, 30, 25, 57])
    for k in range(3):
        np.testing.assert_array_equal(_bbox_of_paint(out, k), boxes[k])
    out, boxes, _ = S.random_flip(img, BOXES, LABELS, _rng(0), prob=0.0)
    assert out is img and (boxes == BOXES).all()
    n = sum(S.random_flip(img, BOXES, LABELS, _rng(s))[1][0, 0] != BOXES[0, 0] for s in range(200))
    assert 70 <= n <= 130


@pytest.mark.parametrize("size", [512, (300, 200), (40, 50)])
def test_resize_scales_boxes_and_pixels(size):
    img = _painted()
    out, boxes, labels = S.resize(img, BOXES, LABELS, size)
    oh, ow = (size, size) if np.ndim(size) == 0 else size
    assert out.shape == (oh, ow, 3)
    np.testing.assert_allclose(boxes, BOXES * np.array([ow / W, oh / H] * 2), rtol=1e-6)
    for k in range(3):
        np.testing.assert_allclose(_bbox_of_paint(out, k), boxes[k], atol=1.0)


# ------------------------------------------------------------------------------ photometric
def _photometric_ref(pixel, p):
    """Plain-Python reference of one pixel (colorsys for HSV)."""
    clip = lambda v: min(max(v, 0.0), 255.0)  # noqa: E731
    x = [float(v) for v in pixel]
    if p.brightness is not None:
        x = [clip(v + p.brightness) for v in x]
    if p.contrast is not None and p.contrast_first:
        x = [clip(v * p.contrast) for v in x]
    if p.saturation is not None or p.hue is not None:
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in x))
        if p.saturation is not None:
            s = min(max(s * p.saturation, 0.0), 1.0)
        if p.hue is not None:
            h = (h + p.hue / 360) % 1.0
        x = [clip(c * 255) for c in colorsys.hsv_to_rgb(h, s, v)]
    if p.contrast is not None and not p.contrast_first:
        x = [clip(v * p.contrast) for v in x]
    if p.channel_perm is not None:
        x = [x[i] for i in p.channel_perm]
    return [round(v) for v in x]


def _params(**kw):
    base = dict(brightness=None, contrast=None, contrast_first=True, saturation=None, hue=None,
                channel_perm=None)
    base.update(kw)
    return S.PhotometricParams(**base)


def _px(pixel, **kw):
    return S.apply_photometric(np.array([[pixel]], np.uint8), _params(**kw))[0, 0].tolist()


def test_photometric_hand_values():
    # brightness +20 then contrast x1.2: (120, 70, 220) * 1.2 = (144, 84, 264 -> 255)
    assert _px((100, 50, 200), brightness=20.0, contrast=1.2) == [144, 84, 255]
    # brightness -32: (10 - 32 -> 0, 8, 223)
    assert _px((10, 40, 255), brightness=-32.0) == [0, 8, 223]
    # contrast x0.5
    assert _px((100, 50, 200), contrast=0.5) == [50, 25, 100]
    # hue on pure red (H = 0, S = 1, V = 255): +12 deg -> G = V * 12/60 = 51; -12 deg -> B = 51;
    # +120 deg -> pure green.
    assert _px((255, 0, 0), hue=12.0) == [255, 51, 0]
    assert _px((255, 0, 0), hue=-12.0) == [255, 0, 51]
    assert _px((255, 0, 0), hue=120.0) == [0, 255, 0]
    assert _px((128, 128, 128), hue=17.0) == [128, 128, 128]  # grey has no hue
    # saturation x0.4 on red: S = 0.4, min channel = V (1 - S) = 153
    assert _px((255, 0, 0), saturation=0.4) == [255, 153, 153]
    assert _px((255, 0, 0), saturation=1.7) == [255, 0, 0]  # S clipped to 1
    # contrast before vs after the HSV part: (200, 100, 50) x1.5 saturates R at 255 first.
    assert _px((200, 100, 50), contrast=1.5, contrast_first=True, hue=0.0) == [255, 150, 75]
    assert _px((200, 100, 50), contrast=1.5, contrast_first=False, saturation=1.0) == [255, 150, 75]
    assert _px((200, 100, 50), channel_perm=(2, 0, 1)) == [50, 200, 100]
    # ... where it matters (S clipped): before: (255, 150, 75) has H = 25 deg, S x2 -> 1, so
    # G = 255 (1 - (4 - (3 + 25/60))) = 106.25; after: (200, 100, 50) has H = 20 deg -> G = 200/3,
    # then x1.5 -> (255, 100, 0).
    assert _px((200, 100, 50), contrast=1.5, contrast_first=True, saturation=2.0) == [255, 106, 0]
    assert _px((200, 100, 50), contrast=1.5, contrast_first=False, saturation=2.0) == [255, 100, 0]


def test_photometric_matches_colorsys_reference():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    diffs = []
    for seed in range(40):
        p = S.sample_photometric_params(_rng(seed), prob=0.8, channel_swap=True)
        out = S.apply_photometric(img, p)
        ref = np.array([[_photometric_ref(px, p) for px in row] for row in img.tolist()])
        diffs.append(np.abs(out.astype(int) - ref))
    diffs = np.stack(diffs)
    assert diffs.max() <= 1 and (diffs == 0).mean() > 0.99


def test_photometric_hsv_round_trip():
    rgb = np.random.default_rng(0).uniform(0, 255, (1000, 3)).astype(np.float32)
    hsv = S.rgb_to_hsv(rgb)
    ref = np.array([colorsys.rgb_to_hsv(*(c / 255)) for c in rgb.astype(np.float64)])
    np.testing.assert_allclose(hsv[:, 0] / 360, ref[:, 0], atol=1e-5)
    np.testing.assert_allclose(hsv[:, 1:], ref[:, 1:] * [1, 255], atol=1e-4)
    np.testing.assert_allclose(S.hsv_to_rgb(hsv), rgb, atol=1e-3)


def test_photometric_sampling_ranges():
    only = dict(contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0, brightness_delta=0)
    flat = np.full((4, 4, 3), 128, np.uint8)
    deltas = []
    for seed in range(200):
        out, boxes, labels = S.photometric_distort(flat, BOXES, LABELS, _rng(seed),
                                                   **{**only, "brightness_delta": 32})
        assert (out == out[0, 0, 0]).all() and (boxes == BOXES).all()
        deltas.append(int(out[0, 0, 0]) - 128)
    deltas = np.array(deltas)
    assert np.abs(deltas).max() <= 32 and deltas.min() < -25 and deltas.max() > 25
    assert 70 <= (deltas == 0).sum() <= 130  # applied with probability 0.5
    flat = np.full((2, 2, 3), 100, np.uint8)
    factors = np.array([S.photometric_distort(flat, BOXES, LABELS, _rng(s),
                                              **{**only, "contrast_range": (0.5, 1.5)})[0][0, 0, 0]
                        for s in range(200)]) / 100
    assert factors.min() >= 0.5 and factors.max() <= 1.5
    assert factors.min() < 0.6 and factors.max() > 1.4
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    hues = []
    for s in range(200):
        px = S.photometric_distort(red, BOXES, LABELS, _rng(s),
                                   **{**only, "hue_delta": 18})[0][0, 0]
        h = colorsys.rgb_to_hsv(*(px / 255))[0] * 360
        hues.append(h if h < 180 else h - 360)
    hues = np.array(hues)
    assert np.abs(hues).max() <= 18.3 and hues.min() < -15 and hues.max() > 15
    # Each distortion fires with probability 1/2, the contrast comes first with probability 1/2.
    params = [S.sample_photometric_params(_rng(s)) for s in range(200)]
    for field in ("brightness", "contrast", "saturation", "hue"):
        assert 70 <= sum(getattr(p, field) is not None for p in params) <= 130, field
    assert 70 <= sum(p.contrast_first for p in params) <= 130
    # The channel swap is off by default (mmdetection) and permutes the channels when on.
    img = np.zeros((1, 1, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    none = dict(contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0, brightness_delta=0)
    assert all((S.photometric_distort(img, BOXES, LABELS, _rng(s), **none)[0] == img).all()
               for s in range(20))
    perms = {tuple(S.photometric_distort(img, BOXES, LABELS, _rng(s), channel_swap=True,
                                         **none)[0][0, 0]) for s in range(150)}
    assert len(perms) == 6 and all(sorted(p) == [10, 20, 30] for p in perms)


# ------------------------------------------------------------------------------ pipeline
def _example(seed=0, **kw):
    return DetectionExample(image=_painted(seed), boxes=BOXES, classes=LABELS, image_id=42,
                            file_name="x.jpg", **kw)


def test_pipeline_finds_painted_boxes():
    checked = 0
    for seed in range(40):
        out = S.ssd_augment(_example(seed), _rng(seed), size=512, mean=MEAN, photometric=False)
        assert out.image.shape == (512, 512, 3) and out.image_id == 42 and out.masks is None
        assert out.height == out.width == 512
        assert ((out.boxes >= 0) & (out.boxes <= 512)).all()
        for b, k in zip(out.boxes, out.classes):
            np.testing.assert_allclose(_bbox_of_paint(out.image, k), b, atol=1.0,
                                       err_msg=f"seed {seed}, box {k}")
            checked += 1
    assert checked >= 60


def test_pipeline_exact_before_resize():
    # With the resize an identity (size = the transformed image's size) every stage is exact.
    for seed in range(30):
        rngs = [np.random.default_rng(int(s)) for s in
                _rng(seed).integers(0, 2**63 - 1, size=4, dtype=np.int64)]
        img = _painted(seed)
        out = S.expand(img, BOXES, LABELS, rngs[1], mean=MEAN)
        out = S.min_iou_random_crop(*out, rngs[2])
        img2, boxes, labels = S.random_flip(*out, rngs[3])
        full = S.ssd_augment(_example(seed), _rng(seed), size=img2.shape[:2], mean=MEAN,
                             photometric=False)
        np.testing.assert_array_equal(full.image, img2)
        np.testing.assert_array_equal(full.boxes, boxes)
        for b, k in zip(boxes, labels):
            np.testing.assert_array_equal(_bbox_of_paint(img2, k), b, err_msg=f"seed {seed}")


def test_pipeline_reproducible_and_stages_independent():
    ex = _example(is_crowd=[False, True, False])
    a = S.ssd_augment(ex, _rng(7), size=300)
    b = S.ssd_augment(ex, _rng(7), size=300)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.is_crowd, a.classes == 1)  # flags follow their boxes
    images = {S.ssd_augment(ex, _rng(s), size=64).image.tobytes() for s in range(10)}
    assert len(images) >= 8
    # Switching the flip off leaves the other stages' draws alone: the result is the same image,
    # or its mirror.
    for s in range(10):
        on = S.ssd_augment(ex, _rng(s), size=96)
        off = S.ssd_augment(ex, _rng(s), size=96, flip=False)
        mirrored = np.stack([96 - off.boxes[:, 2], off.boxes[:, 1], 96 - off.boxes[:, 0],
                             off.boxes[:, 3]], 1)
        if (on.boxes == off.boxes).all():
            np.testing.assert_array_equal(on.image, off.image)
        else:  # PIL's resize of a mirror is the mirror of its resize up to rounding
            np.testing.assert_allclose(on.boxes, mirrored, atol=1e-4)
            assert np.abs(on.image.astype(int) - off.image[:, ::-1]).max() <= 1
    assert ex.image.shape == (H, W, 3) and (ex.boxes == BOXES).all()  # the input is not modified


# ------------------------------------------------------------------------------ in the loader
class _PaintedSource:
    """Painted examples (``_painted``: box k filled with colour k) for DetectionLoader."""

    def __init__(self, n=6):
        self.examples = [_example(seed) for seed in range(n)]
        for i, ex in enumerate(self.examples):
            ex.image_id = 100 + i

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def _loader(**kw):
    from jaxdet.data.detection_loader import DetectionLoader
    args = dict(batch_size=2, image_size=(96, 128), max_boxes=3, train=True, seed=3,
                num_workers=0, augment="ssd", fill_mean=MEAN, warp=True)
    args.update(kw)
    return DetectionLoader(_PaintedSource(), **args)


def test_loader_ssd_augmentation_is_step_indexed():
    import itertools
    loader = _loader()
    run = list(itertools.islice(loader.iterate(0), 4))
    resumed = list(itertools.islice(_loader().iterate(2), 2))   # resume at step 2: same batches
    for a, b in zip(run[2:], resumed):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(run[0]["images"], run[1]["images"])
    checked = 0
    for batch in run:
        assert batch["images"].shape == (2, 96, 128, 3)
        np.testing.assert_array_equal(batch["image_hw"], [[96, 128]] * 2)
        for boxes, valid in zip(batch["boxes"], batch["box_valid"]):
            for b in boxes[valid]:   # pixels vs boxes: the next test and the pipeline tests
                assert (b >= 0).all() and b[2] <= 128 and b[3] <= 96 and b[2] > b[0]
                checked += 1
    assert checked > 0


def test_loader_ssd_pipeline_equals_ssd_augment_with_the_loader_rng():
    """The loader calls ssd_augment with its step-indexed rng (tag 7004) and the config size."""
    from jaxdet.data.detection_loader import _SSD_TAG
    loader = _loader(batch_size=1)
    batch = next(iter(loader))
    index = loader.indices(0)[0]
    want = S.ssd_augment(_PaintedSource()[index], loader.example_rng(_SSD_TAG, 0), size=(96, 128),
                         mean=MEAN)
    np.testing.assert_array_equal(batch["images"][0], want.image)
    n = len(want.boxes)
    np.testing.assert_array_equal(batch["boxes"][0, :n], want.boxes)
    assert batch["box_valid"][0].sum() == n


def test_loader_warp_in_eval_maps_boxes_back_per_axis():
    from jaxdet.data.detection_loader import DetectionLoader
    src = _PaintedSource(3)
    loader = DetectionLoader(src, batch_size=3, image_size=(64, 96), max_boxes=3, train=False,
                             num_workers=0, warp=True)
    batch = next(iter(loader))
    for i, ex in enumerate(src.examples):
        h, w = ex.image.shape[:2]
        np.testing.assert_allclose(batch["scale_xy"][i], [96 / w, 64 / h], rtol=1e-6)
        back = batch["boxes"][i, :3] / np.tile(batch["scale_xy"][i], 2)
        np.testing.assert_allclose(back, ex.boxes, rtol=1e-5, atol=1e-4)
        # and the pixels: box k's paint, found in the warped image, lands on the warped box
        for b, k in zip(batch["boxes"][i], batch["classes"][i]):
            np.testing.assert_allclose(_bbox_of_paint(batch["images"][i], k), b, atol=1.5)
    with pytest.raises(ValueError, match="mask_size=0"):
        DetectionLoader(src, batch_size=1, image_size=(64, 64), max_boxes=3, train=False,
                        warp=True, mask_size=8)
