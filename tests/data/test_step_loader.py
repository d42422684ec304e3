"""Tests of jaxdet.data.loader.StepLoader on a non-box dataset (crops + landmark points), and of
DetectionLoader (built on it) against a plain reimplementation of the detection pipeline.

The detection check compares with a slow reference written out here rather than with stored
sha256 hashes: Generator method streams (``permutation``, ``integers``, ``uniform``) and PIL's
bilinear resize are not promised to stay bit-stable across numpy / Pillow versions, whereas the
reference uses the same RNG derivation (seed, tag 7001/7002/7003, position) and draw order, so it
fails exactly when the loader's order, RNG tags, draw order or collation change.
"""
import itertools

import numpy as np
import pytest
from test_loader import ListSource, assert_batches_equal

from jaxdet.data import transforms as T
from jaxdet.data.detection_loader import DetectionLoader
from jaxdet.data.loader import StepLoader

CROP, SHIFT, SHIFT_TAG = 6, 2, 11


class LandmarkSource:
    """n grayscale 10x10 images with 3 landmark points (x, y) each."""

    def __init__(self, n=7, seed=0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 255, (n, CROP + 2 * SHIFT, CROP + 2 * SHIFT), dtype=np.uint8)
        self.points = rng.uniform(SHIFT, CROP + SHIFT, (n, 3, 2)).astype(np.float32)

    def __len__(self):
        return len(self.images)


class CropLoader(StepLoader):
    """CROP x CROP crops; train shifts the window by up to +-SHIFT px (per-position RNG)."""

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        self.collated = []  # the examples lists collate saw, to check the eval padding

    def prepare(self, position, index):
        dx, dy = SHIFT, SHIFT  # eval: the centre crop
        if self.train:
            dx, dy = self.example_rng(SHIFT_TAG, position).integers(0, 2 * SHIFT + 1, 2)
        crop = self.source.images[index, dy:dy + CROP, dx:dx + CROP]
        return dict(crop=crop, points=self.source.points[index] - np.float32([dx, dy]), index=index)

    def collate(self, examples):
        self.collated.append(examples)
        b = len(examples)
        batch = {"crops": np.zeros((b, CROP, CROP), np.uint8), "points": np.zeros((b, 3, 2), np.float32),
                 "index": np.full((b,), -1, np.int64), "example_valid": np.zeros((b,), bool)}
        for i, ex in enumerate(examples):
            if ex is not None:
                batch["crops"][i], batch["points"][i], batch["index"][i] = ex["crop"], ex["points"], ex["index"]
                batch["example_valid"][i] = True
        return batch


TRAIN = dict(batch_size=3, train=True, seed=3)


def take(loader, n, start=0):
    return list(itertools.islice(loader.iterate(start), n))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_the_batches_of_the_uninterrupted_run(num_workers):
    src = LandmarkSource(n=7)
    full = take(CropLoader(src, **TRAIN, num_workers=0), 9)  # 27 positions: into the 4th epoch
    for k in (1, 4, 7):
        resumed = CropLoader(src, **TRAIN, num_workers=num_workers, start_step=k, prefetch=3)
        assert_batches_equal(full[k:], list(itertools.islice(iter(resumed), 9 - k)))
    # The augmentation is live: the same image at two positions gets different crops.
    crops = {}
    for b in full:
        for c, i in zip(b["crops"], b["index"]):
            crops.setdefault(int(i), set()).add(c.tobytes())
    assert sorted(crops) == list(range(7)) and max(len(v) for v in crops.values()) > 1
    other_seed = take(CropLoader(src, **dict(TRAIN, seed=4)), 2)
    assert any(not np.array_equal(a[k], b[k]) for a, b in zip(full, other_seed) for k in a)


def test_landmarks_follow_the_shift():
    src = LandmarkSource(n=4)
    batch = take(CropLoader(src, batch_size=4, train=True, seed=0), 1)[0]
    for crop, pts, i in zip(batch["crops"], batch["points"], batch["index"]):
        window = np.lib.stride_tricks.sliding_window_view(src.images[i], (CROP, CROP))
        (dy,), (dx,) = np.nonzero((window == crop).all(axis=(2, 3)))[:2]
        np.testing.assert_array_equal(pts, src.points[i] - np.float32([dx, dy]))


def test_union_of_processes_equals_the_single_process_batch():
    src = LandmarkSource(n=9)
    single = take(CropLoader(src, batch_size=4, train=True, seed=1), 5)
    parts = [take(CropLoader(src, batch_size=2, train=True, seed=1, num_workers=w, process_index=p,
                             process_count=2), 5) for p, w in ((0, 0), (1, 2))]
    for s, (a, b) in enumerate(zip(*parts)):
        for k in single[s]:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), single[s][k], err_msg=k)


def test_eval_is_one_ordered_pass_padded_with_none():
    src = LandmarkSource(n=7)
    loaders = [CropLoader(src, batch_size=3, train=False, process_index=p, process_count=2) for p in range(2)]
    assert loaders[0].steps_per_epoch == 2
    assert loaders[1].indices(1) == [None, None, None] and loaders[0].indices(1) == [6, None, None]
    batches = [list(ld) for ld in loaders]
    assert [len(b) for b in batches] == [2, 2]
    valid = [b["example_valid"].tolist() for b in batches[0] + batches[1]]
    assert valid == [[True] * 3, [True, False, False], [True] * 3, [False] * 3]
    assert [[e is None for e in ex] for ex in loaders[0].collated] == [[False] * 3, [False, True, True]]
    assert [i for bs in batches for b in bs for i in b["index"].tolist() if i >= 0] == [0, 1, 2, 6, 3, 4, 5]
    b = batches[0][0]
    np.testing.assert_array_equal(b["crops"], src.images[:3, SHIFT:SHIFT + CROP, SHIFT:SHIFT + CROP])


def test_argument_errors_and_example_rng():
    src = LandmarkSource(n=3)
    with pytest.raises(TypeError):
        StepLoader(src, batch_size=1, train=True)  # prepare / collate are abstract
    for kw, match in [(dict(batch_size=0), "batch_size"), (dict(process_index=2, process_count=2), "process_index"),
                      (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(prefetch=0), "prefetch"),
                      (dict(num_workers=-1), "num_workers"), (dict(start_step=-1), "start_step")]:
        with pytest.raises(ValueError, match=match):
            CropLoader(src, **dict(TRAIN, **kw))
    with pytest.raises(ValueError, match="empty"):
        CropLoader(LandmarkSource(n=0), **TRAIN)
    loader = CropLoader(src, **TRAIN)
    assert loader.example_rng(5, 9).random() == np.random.default_rng([3, 5, 9]).random()
    with pytest.raises(ValueError, match="reserved"):
        loader.example_rng(7001, 0)


# ---------------------------------------------------------------------- DetectionLoader reference
def reference_detection_batch(src, step, *, batch_size, image_size, max_boxes, train, seed=0, hflip=True,
                              scale_jitter=None, process_index=0, process_count=1, image_transform=None,
                              **_):
    """DetectionLoader's batch ``step``, one position after the other, without StepLoader."""
    n, (out_h, out_w) = len(src), image_size
    rows = []
    start = step * batch_size * process_count + process_index * batch_size
    for p in range(start, start + batch_size):
        if not train and p >= n:
            rows.append((np.zeros((out_h, out_w, 3), np.uint8), np.zeros((0, 4)), [], -1, 1.0, (0, 0), False,
                         (0, 0)))
            continue
        ex = src[int(np.random.default_rng([seed, 7001, p // n]).permutation(n)[p % n]) if train else p]
        image, boxes, classes = ex.image, ex.boxes, ex.classes
        orig_hw = image.shape[:2]
        if image_transform is not None:
            image = image_transform(image, boxes.copy(), np.random.default_rng([seed, 7003, p]))
        scale = T.fit_scale(image.shape[0], image.shape[1], image_size)
        rng = np.random.default_rng([seed, 7002, p])
        if train and hflip and rng.random() < 0.5:
            image, boxes = T.horizontal_flip(image, boxes)
        if train and scale_jitter is not None:
            res = T.random_scale_jitter(image, boxes, rng, image_size, scale_jitter, 0.5, base_scale=scale)
            image, boxes, classes, scale, hw = res.image, res.boxes[res.keep], classes[res.keep], res.scale, \
                res.image_hw
        else:
            image, boxes = T.resize_by_scale(image, boxes, scale)
            hw = image.shape[:2]
            if train:
                boxes = np.clip(boxes, 0, [hw[1], hw[0], hw[1], hw[0]]).astype(np.float32)
            image = T.pad_to(image, out_h, out_w)
        assert len(boxes) <= max_boxes  # the loader raises otherwise (never truncates)
        rows.append((image, boxes, classes, ex.image_id, scale, hw, True, orig_hw))

    def pad(rows_of_one_image, fill):  # to max_boxes rows
        return np.concatenate([np.asarray(rows_of_one_image).reshape(-1, *fill.shape[1:]), fill])[:max_boxes]

    return {
        "images": np.stack([r[0] for r in rows]),
        "boxes": np.stack([pad(r[1], np.zeros((max_boxes, 4))) for r in rows]).astype(np.float32),
        "classes": np.stack([pad(r[2], np.full((max_boxes,), -1)) for r in rows]).astype(np.int32),
        "box_valid": np.stack([np.arange(max_boxes) < len(r[2]) for r in rows]),
        "image_id": np.array([r[3] for r in rows], np.int64),
        "scale": np.array([r[4] for r in rows], np.float32),
        "image_hw": np.array([r[5] for r in rows], np.int32),
        "example_valid": np.array([r[6] for r in rows]),
        "orig_hw": np.array([r[7] for r in rows], np.int32),
    }


def _paint(image, boxes, rng):
    return np.clip(image.astype(np.int16) + int(rng.integers(-40, 40)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("cfg", [
    dict(train=True, hflip=True, scale_jitter=(0.7, 1.4), max_boxes=4, image_transform=_paint,
         process_index=1, process_count=2),
    dict(train=True, hflip=True, scale_jitter=None, max_boxes=4, seed=8),
    dict(train=False, batch_size=2, max_boxes=6, image_transform=_paint, process_count=2),
], ids=["train-jitter-transform", "train-flip", "eval"])
def test_detection_loader_matches_the_plain_reference(cfg):
    src = ListSource(n=9, seed=4)  # 0-4 objects per image; two images fill max_boxes=4 exactly
    cfg = dict(dict(batch_size=3, image_size=(32, 40), seed=5), **cfg)
    loader = DetectionLoader(src, **cfg, num_workers=2, start_step=1 if cfg["train"] else 0)
    got = list(itertools.islice(iter(loader), 6))
    steps = range(1, 7) if cfg["train"] else range(loader.steps_per_epoch)
    assert len(got) == len(steps) and (cfg["train"] or not got[-1]["example_valid"].all())
    assert_batches_equal(got, [reference_detection_batch(src, s, **cfg) for s in steps])
