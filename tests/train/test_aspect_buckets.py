"""Aspect-ratio buckets in the detection experiments (config.data.aspect_ratio_grouping): a
portrait batch and a landscape batch each compile once and get their own anchors; grouped
evaluation gives every image the detections it gets at its bucket's fixed size without grouping."""
import json

import jax
import numpy as np
import pytest
from PIL import Image

from jaxdet.experiments import registry
from jaxdet.train import sharding as shard_lib
from jaxdet.train.loop import init_or_restore, make_step

from tests.train.tiny import tiny_config

LAND, PORT = (48, 64), (64, 48)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("bench") / "b")
  tiny_config(root)  # the tiny detector's config needs its small benchmark build
  return root


@pytest.fixture(scope="module")
def mixed_coco(tmp_path_factory):
  """12 images, landscape 40x64 / 48x56 and portrait 64x40 / 56x48, 1-2 boxes each."""
  root = tmp_path_factory.mktemp("mixed")
  rng = np.random.default_rng(0)
  images, anns = [], []
  for i in range(12):
    h, w = [(40, 64), (64, 40), (48, 56), (56, 48)][i % 4]
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(root / f"{i}.png")
    images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
    for j in range(1 + i % 2):
      x, y = float(rng.uniform(0, w - 20)), float(rng.uniform(0, h - 20))
      anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + j,
                   "bbox": [x, y, 16.0, 18.0], "area": 288.0, "iscrowd": 0})
  cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
  (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                             "categories": cats}))
  return str(root)


def config(data_root, mixed, **kw):
  c = tiny_config(data_root)
  c.data.train_json = c.data.val_json = f"{mixed}/ann.json"
  c.data.train_images = c.data.val_images = mixed
  c.data.short_side, c.data.max_side = 48, 64
  c.data.hflip, c.train.batch_size, c.eval.batch_size = False, 2, 2
  c.eval.score_threshold = 0.0          # an untrained head scores ~0.01: keep every candidate
  for key, value in kw.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


def test_buckets_compile_once_each_and_match_fixed_size_runs(data_root, mixed_coco):
  mesh = shard_lib.make_mesh()
  grouped = registry.build(config(data_root, mixed_coco, **{
      "data.image_size": LAND, "data.aspect_ratio_grouping": True}), mesh)
  state, shardings = init_or_restore(grouped, None)
  step = jax.jit(make_step(grouped), out_shardings=(shardings, shard_lib.replicated(mesh)))
  batches = iter(grouped.train_batches(0))
  seen, losses = set(), {}
  for _ in range(8):
    batch = next(batches)
    shape = batch["images"].shape[1:3]
    seen.add(shape)
    _, metrics = step(state, shard_lib.to_global(batch, mesh))   # same state: comparable losses
    losses.setdefault(shape, (batch, float(metrics["loss"])))
  assert seen == {LAND, PORT}
  assert step._cache_size() == 2                        # one compilation per bucket
  assert all(np.isfinite(loss) for _, loss in losses.values())
  # The portrait anchors are those of an ungrouped experiment of that fixed size (the anchors
  # follow the batch, not config.data.image_size).
  fixed = registry.build(config(data_root, mixed_coco, **{"data.image_size": PORT,
                                                          "data.short_side": 48}), mesh)
  np.testing.assert_array_equal(grouped.anchors_of(losses[PORT][0]["images"])[0], fixed.anchors)

  # Evaluation: each image once; the portrait images get the detections of the fixed-size run.
  got = _by_image(grouped.detect(state.experiment, grouped.eval_batches()))
  assert len(got) == 12
  want = _by_image(fixed.detect(state.experiment, fixed.eval_batches()))
  portrait = [i for i in got if fixed.val_source.annotation(i - 1).height
              > fixed.val_source.annotation(i - 1).width]
  assert len(portrait) == 6
  for i in portrait:
    assert len(want[i]) == len(got[i]) > 0
    np.testing.assert_allclose([r["bbox"] for r in want[i]], [r["bbox"] for r in got[i]],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose([r["score"] for r in want[i]], [r["score"] for r in got[i]],
                               rtol=1e-5)


def _by_image(results):
  out = {}
  for r in results:
    out.setdefault(r["image_id"], []).append(r)
  return out


def test_config_error_names_the_key(data_root, mixed_coco):
  from jaxdet.train.config_check import ConfigError
  with pytest.raises(ConfigError, match=r"config.data.image_size=\(64, 48\).*\(48, 64\)"):
    registry.build(config(data_root, mixed_coco, **{"data.image_size": PORT,
                                                    "data.aspect_ratio_grouping": True}),
                   shard_lib.make_mesh())
