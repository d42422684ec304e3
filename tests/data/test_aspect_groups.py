"""Aspect-ratio grouping in DetectionLoader (jaxdet.data.aspect_groups): one orientation per batch,
padded to its bucket, every image once per epoch, exact resume, process sharding, eval pass."""
import collections
import itertools

import numpy as np
import pytest

from jaxdet.data import aspect_groups
from jaxdet.data.detection_loader import DetectionLoader
from jaxdet.data.records import DetectionExample

from tests.data.test_loader import ListSource, assert_batches_equal


def portrait_ids(source):
  return {e.image_id for e in source.examples if e.height > e.width}


def take(loader, n, start=0):
  return list(itertools.islice(loader.iterate(start), n))


GROUPED = dict(batch_size=3, image_size=(40, 56), max_boxes=5, train=True, seed=3, hflip=True,
               scale_jitter=(0.8, 1.2), aspect_ratio_grouping=True, num_workers=2)


def test_train_batches_are_one_orientation_and_cover_every_image_each_epoch():
  source = ListSource(n=23, seed=1)
  portrait = portrait_ids(source)
  assert 3 <= len(portrait) <= 20                     # both buckets populated
  loader = DetectionLoader(source, **GROUPED)
  n_land = len(source) - len(portrait)
  spe = -(-n_land // 3) + -(-len(portrait) // 3)
  assert loader.steps_per_epoch == spe
  batches = take(loader, 2 * spe)
  for epoch in range(2):
    seen = collections.Counter()
    for s, b in enumerate(batches[epoch * spe:(epoch + 1) * spe]):
      ids = set(b["image_id"].tolist())
      is_portrait = ids <= portrait
      assert is_portrait or not (ids & portrait), f"mixed batch {ids}"
      assert b["images"].shape[1:3] == ((56, 40) if is_portrait else (40, 56))
      assert loader.group(epoch * spe + s) == int(is_portrait)
      assert np.all(b["image_hw"] <= b["images"].shape[1:3])     # the image fits its bucket
      seen.update(b["image_id"].tolist())
    assert set(seen) == {e.image_id for e in source.examples}   # nothing dropped
    # repeats only complete a bucket's last block: at most G - 1 extra per bucket
    assert sum(seen.values()) - len(source) <= 2 * (3 - 1)
  assert [b["image_id"].tolist() for b in batches[:spe]] != [b["image_id"].tolist() for b in batches[spe:]]


def test_resume_is_exact_and_workers_do_not_matter():
  source = ListSource(n=17, seed=2)
  full = take(DetectionLoader(source, **GROUPED), 14)
  resumed = take(DetectionLoader(source, **{**GROUPED, "num_workers": 0}), 6, start=8)
  assert_batches_equal(full[8:], resumed)


def test_processes_split_each_global_batch():
  source = ListSource(n=19, seed=4)
  one = take(DetectionLoader(source, **{**GROUPED, "batch_size": 4}), 10)
  parts = [take(DetectionLoader(source, **{**GROUPED, "batch_size": 2, "process_index": i,
                                           "process_count": 2}), 10) for i in range(2)]
  for s in range(10):
    np.testing.assert_array_equal(
        one[s]["image_id"], np.concatenate([parts[0][s]["image_id"], parts[1][s]["image_id"]]))
    assert parts[0][s]["images"].shape == parts[1][s]["images"].shape


def test_eval_pass_each_image_once_boxes_map_back():
  source = ListSource(n=11, seed=5, boxes_per_image=2)
  loader = DetectionLoader(source, **{**GROUPED, "train": False, "batch_size": 4,
                                      "process_index": 1, "process_count": 2})
  other = DetectionLoader(source, **{**GROUPED, "train": False, "batch_size": 4,
                                     "process_index": 0, "process_count": 2})
  portrait = portrait_ids(source)
  ids = []
  for b0, b1 in zip(other, loader):
    assert b0["images"].shape[1:3] == b1["images"].shape[1:3]   # same bucket on both processes
    for b in (b0, b1):
      for i in np.flatnonzero(b["example_valid"]):
        ex = source.examples[int(b["image_id"][i]) - 100]
        np.testing.assert_allclose(b["boxes"][i, :2] / b["scale"][i], ex.boxes, rtol=1e-5, atol=1e-4)
        assert b["images"].shape[1:3] == ((56, 40) if ex.image_id in portrait else (40, 56))
    ids += [int(v) for b in (b0, b1) for v in b["image_id"][b["example_valid"]]]
  assert sorted(ids) == sorted(e.image_id for e in source.examples)   # once each


def test_errors_name_the_problem():
  source = ListSource(n=5)
  assert aspect_groups.bucket_shapes((800, 1344)) == ((800, 1344), (1344, 800))
  with pytest.raises(ValueError, match="H <= W"):
    DetectionLoader(source, **{**GROUPED, "image_size": (56, 40)})
  with pytest.raises(ValueError, match="warp"):
    DetectionLoader(source, **{**GROUPED, "warp": True})

  class NoSize(ListSource):
    def annotation(self, i):
      return DetectionExample(image=None, boxes=np.zeros((0, 4)), classes=np.zeros(0, int),
                              image_id=7)
  with pytest.raises(ValueError, match="aspect_ratio_grouping=False"):
    DetectionLoader(NoSize(n=3), **GROUPED)


def test_eval_randomness_follows_the_image_not_the_batching():
  """A corruption's noise (example_rng of the image's position) is the same grouped or not."""
  source = ListSource(n=9, seed=6)

  def draws(**kw):
    seen = {}

    def transform(image, boxes, rng):
      seen[int(image.sum())] = float(rng.random())
      return image
    loader = DetectionLoader(source, **{**GROUPED, "train": False, "num_workers": 0,
                                        "image_transform": transform, **kw})
    for _ in loader:
      pass
    return seen

  grouped = draws(batch_size=2)
  assert len(grouped) == 9 and grouped == draws(batch_size=4, aspect_ratio_grouping=False,
                                                image_size=(56, 56))
