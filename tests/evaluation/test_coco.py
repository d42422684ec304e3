"""Tests of jaxdet.evaluation.coco: result conversion, COCOeval wrapper, ground truth from a source,
and the full round trip COCO JSON -> source -> loader -> detections -> AP = 1 for perfect boxes."""
import json

import numpy as np
import pytest
from PIL import Image

from jaxdet.data.coco_json import CocoJsonSource
from jaxdet.data.detection_loader import DetectionLoader
from jaxdet.evaluation.coco import coco_from_source, detections_to_coco, evaluate_coco


def _fixture(tmp_path):
    """4 images, non-contiguous category ids, an image without objects, a crowd box; small,
    medium and large objects (sizes in original pixels)."""
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    sizes = {1: (300, 200), 5: (120, 160), 9: (64, 64), 13: (250, 250)}  # id: (width, height)
    rng = np.random.default_rng(0)
    for iid, (w, h) in sizes.items():
        arr = rng.integers(0, 255, (h, w) if iid == 5 else (h, w, 3), dtype=np.uint8)  # one grayscale
        Image.fromarray(arr).save(img_dir / f"{iid}.png")
    anns = [  # (image, category, [x, y, w, h], crowd)
        (1, 17, [10, 20, 150, 120], 0), (1, 4, [200.5, 30.25, 20, 12], 0), (1, 4, [0, 150, 60, 45], 0),
        (5, 17, [5, 5, 40, 60], 0), (5, 23, [100, 100, 15.5, 50], 0), (5, 4, [0, 0, 120, 30], 1),
        (13, 23, [30, 40, 100, 110], 0), (13, 23, [140, 150, 9, 7], 0),
    ]
    data = {"images": [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in sizes.items()],
            "categories": [{"id": 4, "name": "four"}, {"id": 17, "name": "seventeen"}, {"id": 23, "name": "x"}],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": z} for k, (i, c, b, z) in enumerate(anns)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, img_dir, data


def _perfect_detections(source, batch_size=3, image_size=(96, 128)):
    """Runs the eval loader and turns its ground truth back into 'detections' (score 1)."""
    results = []
    for batch in DetectionLoader(source, batch_size=batch_size, image_size=image_size, max_boxes=6,
                                 train=False, num_workers=2):
        boxes = batch["boxes"] / batch["scale"][:, None, None]
        results += detections_to_coco(
            np.where(batch["example_valid"], batch["image_id"], -1), boxes,
            np.linspace(1.0, 0.5, 6)[None].repeat(len(boxes), 0),
            np.maximum(batch["classes"], 0), batch["box_valid"].sum(1), source.category_ids)
    return results


def test_round_trip_perfect_detections_give_ap_one(tmp_path):
    path, img_dir, _ = _fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    results = _perfect_detections(src)
    assert len(results) == 7  # crowd box not a target
    out = tmp_path / "res" / "dets.json"
    m = evaluate_coco(src.coco, results, result_file=out)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert m[k] == pytest.approx(1.0), (k, m)
    assert json.loads(out.read_text()) == results
    # the in-memory ground truth from the source gives the same numbers
    assert evaluate_coco(coco_from_source(src), results) == pytest.approx(m)


def test_imperfect_detections_score_below_one(tmp_path):
    path, img_dir, _ = _fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    results = _perfect_detections(src)
    shifted = [dict(r, bbox=[r["bbox"][0] + 0.3 * r["bbox"][2]] + r["bbox"][1:]) for r in results]
    m = evaluate_coco(src.coco, shifted)  # IoU = 0.7/1.3 ~ 0.54: counts at 0.5 only
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    assert 0.0 < m["AP"] < 0.2
    half = evaluate_coco(src.coco, results[::2])
    assert 0.0 < half["AP"] < 1.0


def test_empty_results_and_unknown_images(tmp_path):
    path, img_dir, _ = _fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    assert evaluate_coco(src.coco, []) == {k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(src.coco, [{"image_id": 999, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_undefined_size_range_is_nan(tmp_path, capsys):
    path, img_dir, _ = _fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    results = [r for r in _perfect_detections(src) if r["image_id"] == 13]
    m = evaluate_coco(src.coco, results, image_ids=[13], print_summary=True)
    assert m["AP"] == pytest.approx(1.0) and np.isnan(m["APm"])  # image 13: no medium object
    printed = capsys.readouterr().out
    assert "Average Precision" in printed and "index created" not in printed


def test_detections_to_coco_matches_reference():
    rng = np.random.default_rng(1)
    n, d = 3, 4
    boxes = np.sort(rng.uniform(0, 50, (n, d, 2, 2)), axis=2).reshape(n, d, 4)  # [lo(x,y), hi(x,y)]
    assert (boxes[..., 2:] >= boxes[..., :2]).all()
    scores, classes = rng.uniform(size=(n, d)), rng.integers(0, 3, (n, d))
    image_ids, num_valid, cat = np.array([5, -1, 8]), np.array([2, 4, 4]), [10, 20, 31]
    got = detections_to_coco(image_ids, boxes, scores, classes, num_valid, cat)
    ref = []
    for i in range(n):
        if image_ids[i] < 0:
            continue
        for j in range(num_valid[i]):
            x1, y1, x2, y2 = boxes[i, j]
            ref.append((int(image_ids[i]), cat[classes[i, j]], [x1, y1, x2 - x1, y2 - y1], scores[i, j]))
    assert len(got) == len(ref) == 6
    for g, (iid, c, b, s) in zip(got, ref):
        assert g["image_id"] == iid and g["category_id"] == c and g["score"] == pytest.approx(s)
        np.testing.assert_allclose(g["bbox"], b, rtol=1e-9)
        assert type(g["score"]) is float and all(type(v) is float for v in g["bbox"])
    with pytest.raises(ValueError, match="classes"):
        detections_to_coco([1], boxes[:1], scores[:1], np.full((1, d), 3), [4], cat)
    with pytest.raises(ValueError, match="boxes"):
        detections_to_coco([1, 2], boxes[:1], scores[:1], classes[:1], [1], cat)


def test_max_images_restricts_to_the_first_images(tmp_path):
    path, img_dir, _ = _fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    results = _perfect_detections(src)
    only_last = [r for r in results if r["image_id"] == 13]
    assert evaluate_coco(src.coco, only_last, max_images=1)["AP"] == pytest.approx(0.0)  # image 1 only
    assert evaluate_coco(src.coco, results, max_images=2)["AP"] == pytest.approx(1.0)
    assert evaluate_coco(src.coco, results, image_ids=[13, 1], max_images=1)["AP"] == pytest.approx(1.0)


def _split_with_bad_boxes(root, split, seed):
    """One split (2 images) whose annotations include a negative-width box (with a positive
    'area', as labelling tools write it), a zero-height box, a box reaching outside the image and a
    crowd box."""
    img_dir = root / split
    img_dir.mkdir()
    rng = np.random.default_rng(seed)
    for iid in (1, 2):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(img_dir / f"{iid}.png")
    anns = [  # (image, category, [x, y, w, h], crowd)
        (1, 4, [10, 10, 30, 20], 0), (1, 4, [50, 30, -12, 20], 0), (1, 7, [5, 40, 20, 0], 0),
        (2, 7, [60, 20, 40, 30], 0),  # x + w = 100 > 80: clipped to [60, 20, 20, 30]
        (2, 4, [0, 0, 25, 25], 1), (2, 4, [5, 5, 15, 12], 0),
    ]
    data = {"images": [{"id": i, "file_name": f"{i}.png", "width": 80, "height": 60} for i in (1, 2)],
            "categories": [{"id": 4, "name": "four"}, {"id": 7, "name": "seven"}],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b,
                             "area": abs(b[2] * b[3]), "iscrowd": z} for k, (i, c, b, z) in enumerate(anns)]}
    path = root / f"{split}.json"
    path.write_text(json.dumps(data))
    return path, img_dir


def test_degenerate_boxes_are_dropped_from_both_splits_and_the_evaluated_ground_truth(tmp_path):
    import ml_collections

    from jaxdet.data.factory import make_source
    from jaxdet.data.report import source_report

    cfg = ml_collections.ConfigDict({"source": "coco_json", "skip_bad_images": False})
    for split, seed in (("train", 0), ("val", 1)):
        path, img_dir = _split_with_bad_boxes(tmp_path, split, seed)
        cfg[f"{split}_json"], cfg[f"{split}_images"] = str(path), str(img_dir)
    sources = {split: make_source(cfg, split) for split in ("train", "val")}
    for split, src in sources.items():
        r = source_report(src)
        assert (r["boxes_dropped_degenerate"], r["boxes_dropped_outside"], r["boxes_clipped"]) == (2, 0, 1), split
        assert (r["objects"], r["crowd"], r["max_objects_per_image"]) == (3, 1, 2), split
        assert [ex.num_objects for ex in (src[0], src[1])] == [1, 2]  # training targets, crowd dropped
    val = sources["val"]
    gt = val.coco
    anns = gt.loadAnns(gt.getAnnIds())
    # exactly the report's objects (+ the crowd one, flagged), with the clipped box
    assert sorted(a["id"] for a in anns) == [1, 4, 5, 6]
    assert sum(a["iscrowd"] == 0 for a in anns) == source_report(val)["objects"]
    assert [a["bbox"] for a in anns if a["id"] == 4] == [[60.0, 20.0, 20.0, 30.0]]
    # perfect detections = the training targets of the val split score AP 1 (a degenerate box
    # left in the ground truth could never be matched and would pull AP below 1)
    results = _perfect_detections(val, batch_size=2, image_size=(60, 80))
    assert len(results) == 3
    m = evaluate_coco(gt, results)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert evaluate_coco(coco_from_source(val), results)["AP"] == pytest.approx(1.0)


def test_faster_coco_eval_backend_gives_the_pycocotools_metrics(tmp_path):
    """``backend='faster_coco_eval'`` (config.eval.coco_backend) on the fixture: the same six
    numbers as pycocotools for random detections (scores, jitter, false positives, every size
    range, a crowd box, an image without objects), and for a subset of the images."""
    path, img_dir, _ = _fixture(tmp_path)
    src = CocoJsonSource(path, img_dir)
    rng = np.random.default_rng(0)
    base = _perfect_detections(src)
    for trial in range(3):
        results = [dict(r, score=float(rng.uniform(0.05, 1.0)),
                        bbox=list(np.asarray(r["bbox"]) + rng.normal(0, 3 + 2 * trial, 4)))
                   for r in base]
        results += [{"image_id": int(rng.choice([1, 5, 9, 13])), "category_id": int(rng.choice([4, 17, 23])),
                     "bbox": list(rng.uniform(0, 100, 4) + [0, 0, 5, 5]), "score": float(rng.uniform(0, 1))}
                    for _ in range(10)]
        for ids in (None, [1, 13]):
            want = evaluate_coco(src.coco, results, image_ids=ids)
            got = evaluate_coco(src.coco, results, image_ids=ids, backend="faster_coco_eval")
            assert set(got) == set(want)
            for k, v in want.items():
                assert (np.isnan(v) and np.isnan(got[k])) or got[k] == pytest.approx(v, abs=1e-12), (k, got, want)
            assert 0.0 < want["AP"] < 1.0
    with pytest.raises(ValueError, match="coco_backend"):
        evaluate_coco(src.coco, base, backend="detectron")
