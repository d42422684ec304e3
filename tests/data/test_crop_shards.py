"""Tests of jaxdet.data.crop_shards: write / kill / resume / read back, errors, CropLoader resume
and the flip of crops together with their regression targets."""
import json
import os
import re

import numpy as np
import pytest

from jaxdet.data import crop_shards as C
from jaxdet.data import roi_crops as R

HR, LR = 8, 2  # small crops keep the tests fast; the writer takes any [k, h, w, 3]


def image_crops(image_id, k=None):
  """Deterministic crops of one image (k from the id unless given; some images have none)."""
  rng = np.random.default_rng(image_id)
  k = int(rng.integers(0, 6)) if k is None else k
  return {"hr": rng.integers(0, 256, (k, HR, HR, 3), dtype=np.uint8),
          "lr": rng.integers(0, 256, (k, LR, LR, 3), dtype=np.uint8),
          "label": rng.integers(-1, 4, k).astype(np.int32),
          "reg_target": rng.normal(size=(k, 4)).astype(np.float32),
          "roi": rng.uniform(0, 100, (k, 4)).astype(np.float32),
          "score": rng.uniform(size=k).astype(np.float32),
          "iou": rng.uniform(size=k).astype(np.float32)}


def expected_rows(image_ids):
  rows = []
  for i in image_ids:
    c = image_crops(i)
    rows += [dict({name: c[name][r] for name in c}, image_id=i) for r in range(len(c["label"]))]
  return rows


def assert_source_equals(source, rows):
  assert len(source) == len(rows)
  for i, want in enumerate(rows):
    got = source[i]
    assert set(got) == set(C.FIELDS)
    for name in C.FIELDS:
      np.testing.assert_array_equal(got[name], want[name], err_msg=f"crop {i} field {name}")
      assert np.asarray(got[name]).dtype == np.dtype(C.FIELDS[name][0])


IMAGES = list(range(100, 130))
META = {"baseline": "runs/frcnn", "positive_iou": 0.5, "negative_iou": 0.35}


def mine(directory, images, **kw):
  with C.CropShardWriter(directory, meta=META, **kw) as writer:
    done = writer.completed_images()
    for i in images:
      if i not in done:
        writer.add_image(i, image_crops(i))


def test_write_and_read_back(tmp_path):
  mine(tmp_path, IMAGES, shard_size=7)
  shards = sorted(p for p in os.listdir(tmp_path) if p.endswith(".npz"))
  assert len(shards) > 3 and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
  source = C.CropShardSource(tmp_path)
  rows = expected_rows(IMAGES)
  assert_source_equals(source, rows)
  assert source[-1]["image_id"] == rows[-1]["image_id"]
  assert source.meta == META and source.num_images == len(IMAGES)
  labels = np.array([r["label"] for r in rows])
  np.testing.assert_array_equal(source.labels(), labels)
  assert source.label_counts == {int(l): int((labels == l).sum()) for l in np.unique(labels)}
  assert source.fields["hr"] == (np.dtype(np.uint8), (HR, HR, 3))
  index = json.loads((tmp_path / "index_p00000.json").read_text())
  assert index["num_crops"] == len(rows) and index["num_images"] == len(IMAGES)
  assert all(s["num_crops"] >= 7 for s in index["shards"][:-1])  # whole images, >= shard_size
  with pytest.raises(IndexError):
    source[len(rows)]
  # reopening a finished directory finds everything done, and adds nothing
  writer = C.CropShardWriter(tmp_path, meta=META)
  assert writer.completed_images() == set(IMAGES)
  with pytest.raises(ValueError, match="already added"):
    writer.add_image(IMAGES[0], image_crops(IMAGES[0]))


class Killed(Exception):
  pass


@pytest.mark.parametrize("crash_at", range(1, 7))
def test_killed_mining_resumes_to_the_same_crops(tmp_path, monkeypatch, crash_at):
  """Dies at the ``crash_at``-th rename (odd: a shard, even: the index that lists it), leaving the
  ``.tmp`` (and for an index, a renamed but unlisted shard) behind; a rerun completes the rest."""
  calls = []
  real_replace = os.replace

  def replace(src, dst):
    calls.append(dst)
    if len(calls) == crash_at:
      raise Killed(dst)
    real_replace(src, dst)

  monkeypatch.setattr(C.os, "replace", replace)
  writer = C.CropShardWriter(tmp_path, shard_size=9, meta=META)
  with pytest.raises(Killed):
    for i in IMAGES:
      writer.add_image(i, image_crops(i))
  monkeypatch.setattr(C.os, "replace", real_replace)
  left = set(os.listdir(tmp_path))
  assert any(n.endswith(".tmp") for n in left)
  committed = (crash_at - 1) // 2  # shards whose index was renamed before the crash
  index_path = tmp_path / "index_p00000.json"
  done_before = set()
  if committed:
    index = json.loads(index_path.read_text())
    assert len(index["shards"]) == committed
    done_before = {i for s in index["shards"] for i in s["image_ids"]}
  else:
    assert not index_path.exists()
  if crash_at % 2 == 0:
    assert f"crops_p00000_{committed:06d}.npz" in left  # renamed, not yet listed

  writer = C.CropShardWriter(tmp_path, shard_size=9, meta=META)  # the rerun
  assert writer.completed_images() == done_before
  assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
  assert f"crops_p00000_{committed:06d}.npz" not in os.listdir(tmp_path)
  assert done_before == set(IMAGES[:len(done_before)])  # a prefix, in order
  mine(tmp_path, IMAGES, shard_size=9)
  assert_source_equals(C.CropShardSource(tmp_path), expected_rows(IMAGES))


def test_two_processes_and_a_rerun_with_one(tmp_path):
  with C.CropShardWriter(tmp_path, shard_size=5, process_index=0, meta=META) as w0, \
       C.CropShardWriter(tmp_path, shard_size=5, process_index=1, meta=META) as w1:
    for n, i in enumerate(IMAGES[:20]):
      (w0 if n % 2 == 0 else w1).add_image(i, image_crops(i))
  w = C.CropShardWriter(tmp_path, process_index=0)
  assert w.completed_images() == set(IMAGES[:20])  # both processes' images
  mine(tmp_path, IMAGES, process_index=0)  # a rerun with one process mines only the rest
  source = C.CropShardSource(tmp_path)
  order = IMAGES[0:20:2] + IMAGES[20:] + IMAGES[1:20:2]  # process 0's shards, then process 1's
  assert_source_equals(source, expected_rows(order))
  # an image mined by two processes is an inconsistent directory
  with C.CropShardWriter(tmp_path, process_index=2, meta=META) as w2:
    w2.add_image(IMAGES[3], image_crops(IMAGES[3], k=1))
  with pytest.raises(ValueError, match="mined twice"):
    C.CropShardSource(tmp_path)


def test_reader_errors_name_the_directory_and_the_file(tmp_path):
  missing = tmp_path / "no_such_dir"
  with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} holds no mined crops")):
    C.CropShardSource(missing)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty holds no mined crops"):
    C.CropShardSource(tmp_path / "empty")
  with C.CropShardWriter(tmp_path / "nocrops") as w:
    w.add_image(1, image_crops(1, k=0))
  with pytest.raises(FileNotFoundError, match="holds no mined crops"):
    C.CropShardSource(tmp_path / "nocrops")

  d = tmp_path / "crops"
  mine(d, IMAGES, shard_size=10)
  index_path = d / "index_p00000.json"
  index = json.loads(index_path.read_text())
  # a listed shard is gone
  os.rename(d / index["shards"][1]["file"], d / "moved.npz")
  with pytest.raises(ValueError, match=r"index_p00000.json is inconsistent: it lists "
                                       r"crops_p00000_000001.npz, which is missing"):
    C.CropShardSource(d)
  os.rename(d / "moved.npz", d / index["shards"][1]["file"])
  # counts that do not add up
  bad = dict(index, num_crops=index["num_crops"] + 1)
  index_path.write_text(json.dumps(bad))
  with pytest.raises(ValueError, match="inconsistent: its shards hold"):
    C.CropShardSource(d)
  # a shard that does not hold what its index says: found when it is first read
  shard0 = index["shards"][0]
  bad = dict(index)
  bad["shards"] = [dict(shard0, num_crops=shard0["num_crops"] + 1)] + index["shards"][1:]
  bad["num_crops"] = index["num_crops"] + 1
  index_path.write_text(json.dumps(bad))
  source = C.CropShardSource(d)
  with pytest.raises(ValueError, match="crops_p00000_000000.npz does not match its index"):
    source[0]
  index_path.write_text("{not json")
  with pytest.raises(ValueError, match="index_p00000.json is unreadable"):
    C.CropShardSource(d)


def test_writer_checks(tmp_path):
  mine(tmp_path, IMAGES[:3])
  with pytest.raises(ValueError, match="meta="):
    C.CropShardWriter(tmp_path, meta={"baseline": "another"})
  w = C.CropShardWriter(tmp_path)
  crops = image_crops(500, k=2)
  with pytest.raises(ValueError, match="missing \\['score'\\]"):
    w.add_image(500, {k: v for k, v in crops.items() if k != "score"})
  with pytest.raises(ValueError, match="hr has shape"):
    w.add_image(500, dict(crops, hr=np.zeros((2, 16, 16, 3), np.uint8)))
  with pytest.raises(ValueError, match="reg_target has shape"):
    w.add_image(500, dict(crops, reg_target=np.zeros((3, 4), np.float32)))
  with pytest.raises(ValueError, match="uint8"):
    w.add_image(500, dict(crops, lr=crops["lr"].astype(np.float32)))


# ----------------------------------------------------------------------------- CropLoader
@pytest.fixture(scope="module")
def source(tmp_path_factory):
  d = tmp_path_factory.mktemp("crops")
  mine(d, IMAGES, shard_size=16)
  return C.CropShardSource(d)


def batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_crop_loader_resumes_exactly(source, num_workers):
  kw = dict(batch_size=5, train=True, seed=3)
  full = list(zip(range(12), C.CropLoader(source, num_workers=0, **kw)))
  resumed = list(zip(range(5), C.CropLoader(source, num_workers=num_workers, start_step=7, **kw)))
  for (_, a), (_, b) in zip(full[7:], resumed):
    batches_equal(a, b)
  b = full[0][1]
  assert b["hr"].shape == (5, HR, HR, 3) and b["hr"].dtype == np.uint8
  assert b["lr"].shape == (5, LR, LR, 3) and b["label"].dtype == np.int32
  assert b["reg_target"].shape == (5, 4) and b["reg_target"].dtype == np.float32
  assert b["valid"].dtype == bool and b["valid"].all()
  # another seed is another stream
  other = next(iter(C.CropLoader(source, num_workers=0, batch_size=5, train=True, seed=4)))
  assert not np.array_equal(other["hr"], b["hr"])


def test_crop_loader_flips_images_and_dx_together(source):
  loader = C.CropLoader(source, batch_size=8, train=True, seed=0, num_workers=0)
  flips = []
  for step, batch in zip(range(10), loader):
    for j, index in enumerate(loader.indices(step)):
      ex = source[index]
      flipped = not np.array_equal(batch["hr"][j], ex["hr"])
      if flipped:
        np.testing.assert_array_equal(batch["hr"][j], ex["hr"][:, ::-1])
        np.testing.assert_array_equal(batch["lr"][j], ex["lr"][:, ::-1])
        np.testing.assert_array_equal(batch["reg_target"][j], ex["reg_target"] * [-1, 1, 1, 1])
      else:
        np.testing.assert_array_equal(batch["lr"][j], ex["lr"])
        np.testing.assert_array_equal(batch["reg_target"][j], ex["reg_target"])
      for name in ("label", "roi", "score", "image_id"):
        np.testing.assert_array_equal(batch[name][j], ex[name])
      flips.append(flipped)
  assert 0.3 < np.mean(flips) < 0.7
  no_flip = C.CropLoader(source, batch_size=8, train=True, seed=0, num_workers=0, hflip=False)
  batch = next(iter(no_flip))
  np.testing.assert_array_equal(batch["hr"], np.stack([source[i]["hr"] for i in no_flip.indices(0)]))


def test_flip_is_the_crop_and_target_of_the_mirrored_image():
  """flip_crop's rule (mirror HR and LR, negate dx) is what mining the mirrored image gives."""
  rng = np.random.default_rng(0)
  h, w = 90, 120
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  gts = np.array([[10, 20, 40, 60], [70, 10, 110, 50]], float)
  rois = gts + rng.normal(0, 2.0, (2, 4))

  def crops(img, g, r):
    a = R.assign_rois(r, g, [0, 1])
    hr, lr = R.crop_hr_lr(img, r, hr_size=32)
    return {"hr": hr, "lr": lr, "reg_target": a["reg_target"], "label": a["label"]}

  def mirror(b):
    return np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)

  orig = crops(image, gts, rois)
  mirrored = crops(image[:, ::-1], mirror(gts), mirror(rois))
  assert (orig["label"] > 0).all()
  for i in range(2):
    f = C.flip_crop({k: v[i] for k, v in orig.items()})
    assert np.abs(f["hr"].astype(int) - mirrored["hr"][i]).max() <= 1
    assert np.abs(f["lr"].astype(int) - mirrored["lr"][i]).max() <= 2
    np.testing.assert_allclose(f["reg_target"], mirrored["reg_target"][i], atol=1e-4)
    assert abs(orig["reg_target"][i][0]) > 0.05  # the flip matters


def test_crop_loader_eval_pads_and_marks_invalid(source):
  loader = C.CropLoader(source, batch_size=16, train=False, num_workers=0)
  batches = list(loader)
  assert len(batches) == -(-len(source) // 16)
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.sum() == len(source) and not valid[len(source):].any()
  last = batches[-1]
  pad = ~last["valid"]
  assert pad.any() and (last["label"][pad] == -1).all() and (last["image_id"][pad] == -1).all()
  assert (last["hr"][pad] == 0).all() and (last["reg_target"][pad] == 0).all()
  hr = np.concatenate([b["hr"] for b in batches])[valid]
  np.testing.assert_array_equal(hr, np.stack([source[i]["hr"] for i in range(len(source))]))
