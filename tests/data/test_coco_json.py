"""Tests of jaxdet.data.coco_json.CocoJsonSource on a tiny COCO JSON fixture written here."""
import json

import numpy as np
import pytest
from PIL import Image

from jaxdet.data.coco_json import CocoJsonSource
from jaxdet.data.records import DetectionExample, DetectionSource


def write_coco_fixture(root, extra_annotations=(), gray_jpeg=True):
    """3 images (RGB PNG, grayscale JPEG, one without objects), non-contiguous category ids
    (12 'cat', 3 'dog', 40 'bird'), one crowd box. Returns (json_path, image_dir, data)."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(img_dir / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 40), dtype=np.uint8)).save(
        img_dir / ("b.jpg" if gray_jpeg else "b.png"))
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(img_dir / "c.png")
    data = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 80, "height": 60},
            {"id": 3, "file_name": "b.jpg" if gray_jpeg else "b.png", "width": 40, "height": 50},
            {"id": 11, "file_name": "c.png", "width": 30, "height": 30},
        ],
        "categories": [{"id": 12, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 40, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 12, "bbox": [10, 5, 30, 20], "area": 600, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 40, "bbox": [50.5, 30, 8, 12], "area": 96, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 40, 70, 20], "area": 1400, "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 3, "bbox": [2, 3, 30, 40], "area": 1200, "iscrowd": 0},
            {"id": 5, "image_id": 3, "category_id": 40, "bbox": [20, 10, 6, 5], "area": 30, "iscrowd": 0},
            *extra_annotations,
        ],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path, img_dir, data


def test_parse_mapping_and_examples(tmp_path):
    path, img_dir, _ = write_coco_fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    assert isinstance(src, DetectionSource)
    assert len(src) == 3 and src.image_ids == [7, 3, 11]
    assert src.category_ids == [3, 12, 40] and src.class_names == ["dog", "cat", "bird"]
    assert src.num_classes == 3
    ex = src[0]
    assert isinstance(ex, DetectionExample)
    assert ex.image.shape == (60, 80, 3) and ex.image.dtype == np.uint8
    np.testing.assert_array_equal(ex.image, np.asarray(Image.open(img_dir / "a.png")))
    # xywh -> xyxy (x2 = x + w); crowd box dropped by default
    np.testing.assert_allclose(ex.boxes, [[10, 5, 40, 25], [50.5, 30, 58.5, 42]])
    assert ex.classes.tolist() == [1, 2] and ex.image_id == 7
    gray = src[1]  # grayscale JPEG -> RGB
    assert gray.image.shape == (50, 40, 3)
    assert (gray.image[..., 0] == gray.image[..., 1]).all()
    empty = src[2]
    assert empty.boxes.shape == (0, 4) and empty.classes.shape == (0,)
    assert src.stats["crowd"] == 1 and src.stats["images_without_objects"] == 1
    # keeping crowd
    src2 = CocoJsonSource(path, img_dir, drop_crowd=False)
    assert src2[0].num_objects == 3 and src2[0].is_crowd.tolist() == [False, False, True]
    # annotation-only access has everything without decoding
    ann = src.annotation(0)
    assert ann.image is None and (ann.height, ann.width) == (60, 80) and ann.num_objects == 3


def test_degenerate_and_outside_boxes_are_counted(tmp_path):
    extra = [
        {"id": 10, "image_id": 11, "category_id": 12, "bbox": [5, 5, 0.5, 10]},  # degenerate (w < 1)
        {"id": 11, "image_id": 11, "category_id": 12, "bbox": [5, 5, 10, -2]},  # degenerate (h < 0)
        {"id": 12, "image_id": 11, "category_id": 12, "bbox": [25, -5, 10, 15]},  # clipped
        {"id": 13, "image_id": 11, "category_id": 12, "bbox": [40, 40, 5, 5]},  # fully outside
        {"id": 14, "image_id": 11, "category_id": 3, "bbox": [29.5, 3, 8, 8]},  # < 1 px left inside
    ]
    path, img_dir, _ = write_coco_fixture(tmp_path, extra)
    src = CocoJsonSource(path, img_dir)
    st = src.stats
    assert st["boxes_dropped_degenerate"] == 2
    assert st["boxes_dropped_outside"] == 2
    assert st["boxes_clipped"] == 1
    assert st["boxes_kept"] == 5 + 1  # 4 clean + 1 crowd + the clipped one
    np.testing.assert_allclose(src.annotation(2).boxes, [[25, 0, 30, 10]])
    assert st["images_without_objects"] == 0
    assert st["annotations"] == 10 and st["crowd"] == 1
    # the evaluation ground truth holds exactly the cleaned objects (same rule as training)
    anns = src.coco.loadAnns(src.coco.getAnnIds(imgIds=[11]))
    assert [a["id"] for a in anns] == [12]
    np.testing.assert_allclose(anns[0]["bbox"], [25, 0, 5, 10])
    assert anns[0]["area"] == 50
    assert len(src.coco.getAnnIds()) == st["boxes_kept"]


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json") as e:
        CocoJsonSource(tmp_path / "nope.json", tmp_path)
    assert "Hint" in str(e.value)
    path, _, _ = write_coco_fixture(tmp_path)
    with pytest.raises(FileNotFoundError, match="no_images"):
        CocoJsonSource(path, tmp_path / "no_images")


@pytest.mark.parametrize("bad, pattern", [
    ({"id": 99, "image_id": 7, "category_id": 12, "bbox": [1, 2, 3]}, r"annotation id=99 \(image id=7\).*'bbox'"),
    ({"id": 98, "image_id": 7, "category_id": 12, "bbox": [1, 2, "x", 4]}, r"id=98.*'bbox'"),
    ({"id": 97, "image_id": 7, "category_id": 5, "bbox": [1, 2, 3, 4]}, r"id=97.*'category_id'"),
    ({"id": 96, "image_id": 1234, "category_id": 12, "bbox": [1, 2, 3, 4]}, r"id=96 \(image id=1234\).*'image_id'"),
    ({"id": 95, "image_id": 7, "category_id": 12, "bbox": [1, 2, 3, 4], "iscrowd": 3}, r"id=95.*'iscrowd'"),
])
def test_malformed_annotation_errors(tmp_path, bad, pattern):
    path, img_dir, _ = write_coco_fixture(tmp_path, [bad])
    with pytest.raises(ValueError, match=pattern) as e:
        CocoJsonSource(path, img_dir)
    assert str(path) in str(e.value)


def test_malformed_image_entry_and_json(tmp_path):
    path, img_dir, data = write_coco_fixture(tmp_path)
    del data["images"][1]["height"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"image id=3: field 'height'"):
        CocoJsonSource(path, img_dir)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoJsonSource(path, img_dir)


def test_unreadable_image_error_and_skip(tmp_path, capsys):
    path, img_dir, _ = write_coco_fixture(tmp_path)
    (img_dir / "a.png").write_bytes(b"this is not a png")
    src = CocoJsonSource(path, img_dir)
    assert len(src) == 3
    with pytest.raises(OSError, match=r"a\.png"):
        src[0]
    (img_dir / "c.png").unlink()
    src = CocoJsonSource(path, img_dir, skip_bad_images=True)
    assert "skipped 2" in capsys.readouterr().out
    assert src.stats["bad_images_skipped"] == 2
    assert src.image_ids == [3]
    assert src[0].image.shape == (50, 40, 3)
    assert src.coco.getImgIds() == [3]


def test_size_mismatch_is_an_error(tmp_path):
    path, img_dir, data = write_coco_fixture(tmp_path)
    data["images"][0]["width"] = 81
    path.write_text(json.dumps(data))
    with pytest.raises(OSError, match=r"a\.png.*annotated size 81x60"):
        CocoJsonSource(path, img_dir)[0]


def test_coco_ground_truth_fills_missing_fields(tmp_path):
    path, img_dir, data = write_coco_fixture(tmp_path)
    for a in data["annotations"]:
        a.pop("area")
    data["annotations"][0].pop("iscrowd")
    path.write_text(json.dumps(data))
    gt = CocoJsonSource(path, img_dir).coco
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(anns) == 5
    assert anns[0]["area"] == 600 and anns[0]["iscrowd"] == 0
    assert sorted(gt.getCatIds()) == [3, 12, 40]
