"""Tests of jaxdet.data.transforms against plain-numpy references and drawn rectangles."""
import numpy as np
import pytest

from jaxdet.data import transforms as T


def _canvas_with_rects(h, w, boxes):
    """Dark image with one bright filled rectangle per integer xyxy box (pixels [x1,x2) x [y1,y2))."""
    img = np.full((h, w, 3), 10, np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes, int):
        img[y1:y2, x1:x2] = 240
    return img


def _bright_bbox(img, thresh=125):
    ys, xs = np.nonzero(img[..., 0] > thresh)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_horizontal_flip_matches_reference_and_pixels():
    boxes = np.array([[3, 4, 10, 9], [0, 0, 5, 20], [15, 2, 22, 6]], np.float32)
    img = _canvas_with_rects(20, 22, boxes[:1])
    out, fb = T.horizontal_flip(img, boxes)
    ref = np.empty_like(boxes)
    for i, (x1, y1, x2, y2) in enumerate(boxes):  # x1' = W - x2, x2' = W - x1
        ref[i] = [22 - x2, y1, 22 - x1, y2]
    np.testing.assert_array_equal(fb, ref)
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(_bright_bbox(out), fb[0])
    # flipping twice is the identity
    img2, b2 = T.horizontal_flip(out, fb)
    np.testing.assert_array_equal(img2, img)
    np.testing.assert_array_equal(b2, boxes)
    # every pixel and channel, also of a non-contiguous view
    noise = np.random.default_rng(0).integers(0, 256, (9, 14, 3), dtype=np.uint8)[1:8, 2:13]
    np.testing.assert_array_equal(T.horizontal_flip(noise, boxes)[0], noise[:, ::-1])


def test_horizontal_flip_empty_boxes():
    img = np.zeros((5, 7, 3), np.uint8)
    out, fb = T.horizontal_flip(img, np.zeros((0, 4)))
    assert fb.shape == (0, 4) and fb.dtype == np.float32 and out.shape == img.shape


@pytest.mark.parametrize("hw,short,max_side", [((40, 60), 20, 100), ((40, 60), 50, 60), ((61, 30), 15, 24)])
def test_resize_to_fit_scale_shape_boxes(hw, short, max_side):
    h, w = hw
    boxes = np.array([[4, 6, 20, 30], [0, 0, w, h]], np.float32)
    out, ob, scale = T.resize_to_fit(_canvas_with_rects(h, w, boxes[:1]), boxes, short, max_side)
    ref_scale = min(short / min(h, w), max_side / max(h, w))
    assert scale == pytest.approx(ref_scale)
    assert out.shape == (round(h * ref_scale), round(w * ref_scale), 3)
    np.testing.assert_allclose(ob, boxes * ref_scale, rtol=1e-6)
    assert min(out.shape[:2]) <= short + 0.5 and max(out.shape[:2]) <= max_side + 0.5


def test_resize_moves_drawn_rectangle_to_scaled_box():
    box = np.array([[8, 12, 24, 28]], np.float32)
    img = _canvas_with_rects(40, 48, box)
    for size in (96, 24, 36):  # up x2, down x0.5, down x0.75
        out, ob, scale = T.resize_to_square(img, box, size)
        assert max(out.shape[:2]) == size
        assert scale == pytest.approx(size / 48)
        np.testing.assert_allclose(_bright_bbox(out), ob[0], atol=1.0)


def test_pad_to_reference_and_error():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = T.pad_to(img, 4, 5)
    ref = np.zeros((4, 5, 3), np.uint8)
    for r in range(2):
        for c in range(3):
            ref[r, c] = img[r, c]
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="cannot pad"):
        T.pad_to(img, 1, 5)


def test_bad_image_rejected():
    with pytest.raises(ValueError, match="uint8"):
        T.horizontal_flip(np.zeros((4, 4, 3), np.float32), np.zeros((0, 4)))


def test_scale_jitter_identity_when_range_is_one():
    boxes = np.array([[2, 3, 9, 12]], np.float32)
    img = _canvas_with_rects(16, 16, boxes)
    res = T.random_scale_jitter(img, boxes, np.random.default_rng(0), (16, 16), (1.0, 1.0))
    np.testing.assert_array_equal(res.image, img)
    np.testing.assert_array_equal(res.boxes, boxes)
    assert res.keep.tolist() == [True] and res.scale == 1.0 and res.image_hw == (16, 16)


@pytest.mark.parametrize("seed", range(6))
def test_scale_jitter_crop_matches_window_of_scaled_image(seed):
    boxes = np.array([[2, 2, 10, 10], [12, 4, 30, 14], [20, 20, 31, 31], [0, 25, 3, 32]], np.float32)
    img = _canvas_with_rects(32, 32, boxes)
    img[..., 1] = np.arange(32, dtype=np.uint8)[None, :] * 7  # texture so the window is unique
    img[..., 2] = np.arange(32, dtype=np.uint8)[:, None] * 7
    out_size = (24, 24)
    res = T.random_scale_jitter(img, boxes, np.random.default_rng(seed), out_size, (1.5, 2.0))
    assert res.image.shape == (24, 24, 3)
    big, bb = T.resize_by_scale(img, boxes, res.scale)
    # independent search for the crop offset
    hits = [(oy, ox) for oy in range(big.shape[0] - 24 + 1) for ox in range(big.shape[1] - 24 + 1)
            if np.array_equal(big[oy:oy + 24, ox:ox + 24], res.image)]
    assert hits, "output is not a window of the scaled image"
    oy, ox = hits[0]
    assert (oy, ox) in hits and tuple(res.offset) in [(x, y) for y, x in hits]  # reported offset
    for i, (x1, y1, x2, y2) in enumerate(bb):
        cx1, cy1 = min(max(x1 - ox, 0), 24), min(max(y1 - oy, 0), 24)
        cx2, cy2 = min(max(x2 - ox, 0), 24), min(max(y2 - oy, 0), 24)
        np.testing.assert_allclose(res.boxes[i], [cx1, cy1, cx2, cy2], atol=1e-4)
        before = (x2 - x1) * (y2 - y1)
        after = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
        assert res.keep[i] == (after >= 0.5 * before and after > 0)


def test_scale_jitter_shrink_pads_and_keeps_everything():
    boxes = np.array([[4, 4, 20, 12]], np.float32)
    img = _canvas_with_rects(32, 64, boxes)
    res = T.random_scale_jitter(img, boxes, np.random.default_rng(3), (40, 40), (0.5, 0.5))
    # fit scale = min(40/32, 40/64) = 0.625, times 0.5
    assert res.scale == pytest.approx(0.3125)
    assert res.image_hw == (10, 20)
    assert (res.image[10:] == 0).all() and (res.image[:, 20:] == 0).all()
    np.testing.assert_allclose(res.boxes, boxes * 0.3125, rtol=1e-6)
    assert res.keep.all()


def test_scale_jitter_bad_range():
    with pytest.raises(ValueError, match="scale_range"):
        T.random_scale_jitter(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4)), np.random.default_rng(0),
                              (8, 8), (1.2, 0.8))
