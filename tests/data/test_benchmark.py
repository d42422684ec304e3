"""Tests of jaxdet.data.benchmark: deterministic, cached, atomic, valid COCO, instance masks."""
import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jaxdet.data import benchmark
from jaxdet.data.coco_json import CocoJsonSource

SMALL = dict(num_train=12, num_val=6, image_size=64, seed=3, verbose=False)


def test_build_is_deterministic_and_valid(tmp_path):
    a = benchmark.ensure_benchmark(tmp_path / "a", **SMALL)
    b = benchmark.ensure_benchmark(tmp_path / "b", **SMALL)
    for key in ("train_json", "val_json", "train_faces_json", "val_faces_json"):
        with open(a[key]) as fa, open(b[key]) as fb:
            assert json.load(fa) == json.load(fb), key
    with open(os.path.join(a["train_images"], "000003.png"), "rb") as fa, \
            open(os.path.join(b["train_images"], "000003.png"), "rb") as fb:
        assert fa.read() == fb.read()
    assert a["class_names"] == list(benchmark.CLASS_NAMES) and a["num_classes"] == 5
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary dirs left

    other = benchmark.ensure_benchmark(tmp_path / "c", **dict(SMALL, seed=4))
    with open(a["train_json"]) as fa, open(other["train_json"]) as fo:
        assert json.load(fa)["annotations"] != json.load(fo)["annotations"]

    for split in ("train", "val"):
        src = CocoJsonSource(a[f"{split}_json"], a[f"{split}_images"])
        assert len(src) == SMALL[f"num_{split}"]
        assert src.stats["boxes_clipped"] == 0 and src.stats["boxes_dropped_degenerate"] == 0
        ex = src[0]
        assert ex.image.shape == (64, 64, 3) and ex.num_objects >= 1
        assert (ex.boxes >= 0).all() and (ex.boxes <= 64).all()
        with open(a[f"{split}_json"]) as f:
            anns = json.load(f)["annotations"]
        faces = [x for x in anns if x["category_id"] == 1]
        with open(a[f"{split}_faces_json"]) as f:
            face_json = json.load(f)
        assert [x["bbox"] for x in face_json["annotations"]] == [x["bbox"] for x in faces]
        assert all("lfw_index" in x for x in faces)
        sides = np.array([np.sqrt(x["area"]) for x in anns])
        assert sides.min() >= 4 and (sides < 32 * 64 / 128 * 1.25).mean() > 0.3


def test_cached_build_is_reused_and_mismatch_is_an_error(tmp_path):
    root = tmp_path / "bm"
    first = benchmark.ensure_benchmark(root, **SMALL)
    mtime = os.path.getmtime(first["train_json"])
    again = benchmark.ensure_benchmark(root, **SMALL)
    assert again == first and os.path.getmtime(first["train_json"]) == mtime
    with pytest.raises(ValueError, match="holds a benchmark built with"):
        benchmark.ensure_benchmark(root, **dict(SMALL, num_train=13))


def test_incomplete_directory_is_refused(tmp_path):
    root = tmp_path / "half"
    (root / "train").mkdir(parents=True)  # e.g. a copy that was interrupted
    with pytest.raises(ValueError, match="no meta.json"):
        benchmark.ensure_benchmark(root, **SMALL)


def test_default_root_uses_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXDET_DATA", str(tmp_path))
    assert benchmark.VERSION == 2  # version 2 added the instance masks: a new cache directory
    assert benchmark.default_root() == tmp_path / "benchmark_v2"
    assert benchmark.default_root(num_train=5).name.startswith("benchmark_v2-n5")


def decode(segmentation):
    assert isinstance(segmentation["counts"], str)  # JSON-ready compressed RLE
    return mask_utils.decode(dict(segmentation, counts=segmentation["counts"].encode())).astype(bool)


def test_instance_masks_are_visible_parts_inside_their_boxes(tmp_path):
    paths = benchmark.ensure_benchmark(tmp_path / "bm", **SMALL)
    size = SMALL["image_size"]
    digits = coins_checked = faces_checked = 0
    for split in ("train", "val"):
        with open(paths[f"{split}_json"]) as f:
            data = json.load(f)
        by_image = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for anns in by_image.values():
            masks = np.stack([decode(a["segmentation"]) for a in anns])
            assert masks.shape[1:] == (size, size)
            assert (masks.sum(0) <= 1).all()  # disjoint: the visible parts
            for k, (a, m) in enumerate(zip(anns, masks)):
                x, y, w, h = a["bbox"]
                assert a["area"] == w * h  # area stays the box area
                inside = np.zeros_like(m)
                inside[y:y + h, x:x + w] = True
                assert m.any() and not (m & ~inside).any(), a["id"]
                tile = m[y:y + h, x:x + w]
                later = [b["bbox"] for b in anns[k + 1:]]
                hidden = np.zeros((size, size), bool)  # everything later objects could cover
                for bx, by, bw, bh in later:
                    hidden[by:by + bh, bx:bx + bw] = True
                name = benchmark.CLASS_NAMES[a["category_id"] - 1]
                if name.startswith("digit"):
                    digits += 1
                    assert tile.sum() < w * h  # glyph strokes, not the solid tile
                if hidden[y:y + h, x:x + w].any():
                    continue
                if name == "face":  # not occluded: the whole tile
                    faces_checked += 1
                    assert tile.all()
                elif name == "coin":  # not occluded: the ellipse inscribed in the box
                    coins_checked += 1
                    yy, xx = np.mgrid[0:h, 0:w]
                    r2 = ((xx + 0.5) / w * 2 - 1) ** 2 + ((yy + 0.5) / h * 2 - 1) ** 2
                    np.testing.assert_array_equal(tile, r2 <= 1.0)
            for k, a in enumerate(anns):  # a later face hides what is under it
                for b in anns[k + 1:]:
                    if b["category_id"] == 1:
                        bx, by, bw, bh = b["bbox"]
                        assert not masks[k][by:by + bh, bx:bx + bw].any()
        with open(paths[f"{split}_faces_json"]) as f:
            faces = json.load(f)["annotations"]
        assert [x["segmentation"] for x in faces] == \
            [x["segmentation"] for x in data["annotations"] if x["category_id"] == 1]
        src = CocoJsonSource(paths[f"{split}_json"], paths[f"{split}_images"])
        assert src.has_masks and len(src[0].masks) == src[0].num_objects
    assert digits > 0 and coins_checked > 0 and faces_checked > 0
