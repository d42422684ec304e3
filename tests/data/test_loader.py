"""Tests of jaxdet.data.detection_loader.DetectionLoader: order, resume, sharding, padding, max_boxes."""
import itertools

import numpy as np
import pytest

from jaxdet.data import transforms as T
from jaxdet.data.detection_loader import DetectionLoader
from jaxdet.data.records import DetectionExample


class ListSource:
    """In-memory DetectionSource: n images of varied sizes, 0-4 boxes each."""

    def __init__(self, n=7, seed=0, boxes_per_image=None):
        rng = np.random.default_rng(seed)
        self.examples = []
        for i in range(n):
            h, w = int(rng.integers(20, 50)), int(rng.integers(20, 50))
            k = int(rng.integers(0, 5)) if boxes_per_image is None else boxes_per_image
            xy = rng.uniform(0, [w - 6, h - 6], size=(k, 2))
            wh = rng.uniform(2, 6, size=(k, 2))
            self.examples.append(DetectionExample(
                image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), boxes=np.concatenate([xy, xy + wh], 1),
                classes=rng.integers(0, 3, size=k), image_id=100 + i))
        self.num_classes, self.class_names, self.category_ids = 3, ["a", "b", "c"], [1, 2, 3]

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]

    @property
    def image_ids(self):
        return [e.image_id for e in self.examples]


def take(loader, n, start=0):
    return list(itertools.islice(loader.iterate(start), n))


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


TRAIN = dict(batch_size=3, image_size=(32, 40), max_boxes=5, train=True, seed=5, hflip=True,
             scale_jitter=(0.7, 1.4))


def test_batch_layout_and_dtypes():
    loader = DetectionLoader(ListSource(), **TRAIN)
    batch = take(loader, 1)[0]
    spec = {"images": (np.uint8, (3, 32, 40, 3)), "boxes": (np.float32, (3, 5, 4)), "classes": (np.int32, (3, 5)),
            "box_valid": (bool, (3, 5)), "image_id": (np.int64, (3,)), "scale": (np.float32, (3,)),
            "image_hw": (np.int32, (3, 2)), "orig_hw": (np.int32, (3, 2)), "example_valid": (bool, (3,))}
    assert set(batch) == set(spec)
    for k, (dt, shape) in spec.items():
        assert batch[k].dtype == dt and batch[k].shape == shape, k
    assert ((batch["classes"] >= 0) == batch["box_valid"]).all()
    assert batch["example_valid"].all()
    src = ListSource()
    by_id = {src[i].image_id: src[i].image.shape[:2] for i in range(len(src))}
    for image_id, hw in zip(batch["image_id"], batch["orig_hw"]):
        assert tuple(hw) == by_id[int(image_id)]


def test_resume_gives_the_same_batches_across_epochs():
    src = ListSource()
    full = take(DetectionLoader(src, **TRAIN), 7)  # 21 positions: 3 epochs of 7
    resumed = take(DetectionLoader(src, **TRAIN, start_step=4), 3, start=4)
    assert_batches_equal(full[4:], resumed)
    assert_batches_equal(full[4:], list(itertools.islice(iter(DetectionLoader(src, **TRAIN, start_step=4)), 3)))
    other_seed = take(DetectionLoader(src, **dict(TRAIN, seed=6)), 1)
    assert not np.array_equal(other_seed[0]["image_id"], full[0]["image_id"]) or \
        not np.array_equal(other_seed[0]["images"], full[0]["images"])


def test_same_batches_for_any_worker_count():
    src = ListSource()
    ref = take(DetectionLoader(src, **TRAIN, num_workers=0), 4)
    assert_batches_equal(ref, take(DetectionLoader(src, **TRAIN, num_workers=1), 4))
    assert_batches_equal(ref, take(DetectionLoader(src, **TRAIN, num_workers=3, prefetch=3), 4))


def test_each_epoch_is_a_permutation():
    src = ListSource(n=7)
    loader = DetectionLoader(src, **dict(TRAIN, batch_size=7))
    seen = [sorted(b["image_id"].tolist()) for b in take(loader, 3)]
    assert all(s == src.image_ids for s in seen)
    orders = [b["image_id"].tolist() for b in take(loader, 3)]
    assert len({tuple(o) for o in orders}) > 1  # reshuffled per epoch


def test_processes_take_disjoint_slices_of_the_global_batch():
    src = ListSource(n=9)
    single = take(DetectionLoader(src, **dict(TRAIN, batch_size=4)), 3)
    parts = [take(DetectionLoader(src, **dict(TRAIN, batch_size=2), process_index=p, process_count=2), 3)
             for p in range(2)]
    for s, (a, b) in enumerate(zip(*parts)):
        for k in single[s]:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), single[s][k], err_msg=k)


def test_eval_pass_padding_and_undoing_the_scale():
    src = ListSource(n=7)
    kw = dict(batch_size=3, image_size=(32, 40), max_boxes=5, train=False)
    per_process = [list(DetectionLoader(src, **kw, process_index=p, process_count=2)) for p in range(2)]
    assert [len(b) for b in per_process] == [2, 2]
    assert DetectionLoader(src, **kw, process_count=2).steps_per_epoch == 2
    valid = [b["example_valid"].tolist() for b in per_process[0] + per_process[1]]
    assert valid == [[True] * 3, [True, False, False], [True] * 3, [False] * 3]
    ids = [i for bs in per_process for b in bs for i, v in zip(b["image_id"], b["example_valid"]) if v]
    assert sorted(ids) == src.image_ids
    pad = per_process[0][1]
    assert (pad["image_id"][1:] == -1).all() and (pad["images"][1:] == 0).all() and not pad["box_valid"][1:].any()
    # eval order = dataset order; boxes / scale = original boxes; image content = fit + pad
    for b in per_process[0][:1]:
        for j in range(3):
            ex = src[j]
            n = ex.num_objects
            scale = min(32 / ex.height, 40 / ex.width)
            assert b["scale"][j] == pytest.approx(scale)
            np.testing.assert_allclose(b["boxes"][j, :n] / b["scale"][j], ex.boxes, rtol=1e-5, atol=1e-4)
            assert b["box_valid"][j].sum() == n
            np.testing.assert_array_equal(b["classes"][j, :n], ex.classes)
            ref_img, _ = T.resize_by_scale(ex.image, ex.boxes, scale)
            np.testing.assert_array_equal(b["images"][j], T.pad_to(ref_img, 32, 40))
            assert tuple(b["image_hw"][j]) == ref_img.shape[:2]


def test_train_flip_only_matches_one_of_the_two_references():
    src = ListSource(n=6)
    loader = DetectionLoader(src, batch_size=6, image_size=(48, 48), max_boxes=5, train=True, seed=1,
                             hflip=True, scale_jitter=None)
    batch = take(loader, 1)[0]
    flips = 0
    for j, iid in enumerate(batch["image_id"]):
        ex = src[iid - 100]
        n = ex.num_objects
        scale = 48 / max(ex.height, ex.width)
        img, boxes = T.resize_by_scale(ex.image, ex.boxes, scale)
        fimg, fboxes = T.resize_by_scale(*T.horizontal_flip(ex.image, ex.boxes), scale)
        if np.array_equal(batch["images"][j], T.pad_to(img, 48, 48)):
            ref = boxes
        else:
            np.testing.assert_array_equal(batch["images"][j], T.pad_to(fimg, 48, 48))
            ref, flips = fboxes, flips + 1
        lim = np.array([img.shape[1], img.shape[0]] * 2, np.float32)
        np.testing.assert_allclose(batch["boxes"][j, :n], np.clip(ref, 0, lim), atol=1e-4)
    assert 0 < flips < 6


def test_too_many_boxes_is_an_error_naming_the_config_key():
    ex = DetectionExample(image=np.zeros((40, 40, 3), np.uint8),
                          boxes=[[0, 0, 2, 2], [0, 0, 10, 10], [5, 5, 6, 6], [0, 0, 20, 5], [1, 1, 8, 8]],
                          classes=[0, 1, 2, 0, 1], image_id=31, file_name="full.png")
    src = ListSource(n=3)
    src.examples = [src.examples[0], ex, src.examples[2]]
    for train in (False, True):
        loader = DetectionLoader(src, batch_size=3, image_size=(40, 40), max_boxes=4, train=train)
        with pytest.raises(ValueError, match=r"id=31 \('full.png'\) has 5 objects.*config\.data\.max_boxes=4"):
            next(iter(loader))
    # exactly max_boxes objects fill every slot; nothing is cut
    loader = DetectionLoader(src, batch_size=3, image_size=(40, 40), max_boxes=5, train=False)
    batch = next(iter(loader))
    np.testing.assert_allclose(batch["boxes"][1], ex.boxes)
    assert batch["box_valid"][1].all() and batch["classes"][1].tolist() == [0, 1, 2, 0, 1]


def test_steps_per_epoch_and_argument_errors():
    src = ListSource(n=10)
    assert DetectionLoader(src, **dict(TRAIN, batch_size=3)).steps_per_epoch == 3
    assert DetectionLoader(src, batch_size=3, image_size=(8, 8), max_boxes=2, train=False).steps_per_epoch == 4
    with pytest.raises(ValueError, match="batch_size"):
        DetectionLoader(src, **dict(TRAIN, batch_size=0))
    with pytest.raises(ValueError, match="process_index"):
        DetectionLoader(src, **TRAIN, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="scale_jitter"):
        DetectionLoader(src, **dict(TRAIN, scale_jitter=(1.5, 1.0)))


def test_worker_errors_reach_the_consumer():
    class Broken(ListSource):
        def __getitem__(self, i):
            raise OSError(f"cannot read image {i}")

    loader = DetectionLoader(Broken(n=4), **TRAIN)
    with pytest.raises(OSError, match="cannot read image"):
        take(loader, 1)


def test_short_side_max_side_and_image_size_cap():
    src = ListSource(n=4)
    loader = DetectionLoader(src, batch_size=4, image_size=(64, 64), max_boxes=5, train=False,
                             short_side=16, max_side=20)
    batch = next(iter(loader))
    for j, ex in enumerate(src.examples):
        ref = min(64 / ex.height, 64 / ex.width, 16 / min(ex.height, ex.width), 20 / max(ex.height, ex.width))
        assert batch["scale"][j] == pytest.approx(ref)
        assert tuple(batch["image_hw"][j]) == (round(ex.height * ref), round(ex.width * ref))


def test_unit_scale_jitter_means_off():
    src = ListSource()
    a = take(DetectionLoader(src, **dict(TRAIN, scale_jitter=None)), 2)
    b = take(DetectionLoader(src, **dict(TRAIN, scale_jitter=(1.0, 1.0))), 2)
    assert_batches_equal(a, b)


def test_image_transform_is_applied_first_and_reproducible():
    seen_boxes = []

    def paint(image, boxes, rng):
        seen_boxes.append(boxes)
        return np.full_like(image, int(rng.integers(1, 255)))

    src = ListSource(n=5)
    kw = dict(batch_size=5, image_size=(48, 48), max_boxes=5, train=False, image_transform=paint)
    a, b = next(iter(DetectionLoader(src, **kw))), next(iter(DetectionLoader(src, **kw, num_workers=0)))
    assert_batches_equal([a], [b])
    for j, ex in enumerate(src.examples):
        h, w = a["image_hw"][j]
        region = a["images"][j, :h, :w]
        assert (region == region[0, 0]).all() and region[0, 0, 0] > 0  # constant image stays constant
    assert len({int(a["images"][j, 0, 0, 0]) for j in range(5)}) > 1  # per-position rng
    assert any(len(bx) for bx in seen_boxes)
    with pytest.raises(ValueError, match="image_transform"):
        DetectionLoader(src, **dict(kw, image_transform=3))
