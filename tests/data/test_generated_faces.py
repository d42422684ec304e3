"""Generated-LR face shards: layout, resume at the first missing shard, settings mismatch."""
import numpy as np
import pytest

from jaxdet.data import generated_faces as gf


def _shard(k, n, size=4, points=5):
  rng = np.random.default_rng(k)
  return {"image": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
          "landmarks": rng.random((n, points, 2)).astype(np.float32) * size,
          "visible": rng.random((n, points)) > 0.2,
          "box": np.tile(np.array([0, 0, size, size], np.float32), (n, 1)),
          "identity": np.arange(n, dtype=np.int32) + 10 * k,
          "key": np.array([f"face{k}_{i}" for i in range(n)])}


def test_write_resume_and_read(tmp_path):
  d = str(tmp_path)
  meta = {"num_examples": 10, "shard_size": 4, "scheme": "5", "image_size": 4}
  gf.write_meta(d, "train", meta)
  assert gf.missing_shards(d, "train", 10, 4) == [0, 1, 2]
  shards = [_shard(0, 4), _shard(1, 4), _shard(2, 2)]
  gf.write_shard(d, "train", 1, shards[1])
  # A killed run leaves shard 1 only: the rerun writes exactly the missing ones.
  assert gf.missing_shards(d, "train", 10, 4) == [0, 2]
  with pytest.raises(FileNotFoundError, match="done.json"):
    gf.GeneratedFaceSource(d, "train")
  gf.write_meta(d, "train", meta)   # same settings: accepted
  for k in (0, 2):
    gf.write_shard(d, "train", k, shards[k])
  gf.mark_done(d, "train")
  src = gf.GeneratedFaceSource(d, "train")
  assert len(src) == 10 and src.scheme == "5"
  ex = src[5]   # shard 1, row 1
  np.testing.assert_array_equal(ex.image, shards[1]["image"][1])
  np.testing.assert_array_equal(ex.landmarks, shards[1]["landmarks"][1])
  np.testing.assert_array_equal(ex.visible, shards[1]["visible"][1])
  assert ex.identity == 11 and ex.key == "generated/train/face1_1"


def test_other_settings_are_an_error_not_a_mixed_dataset(tmp_path):
  d = str(tmp_path)
  gf.write_meta(d, "test", {"num_examples": 3, "shard_size": 4, "scheme": "19"})
  with pytest.raises(ValueError, match="other settings"):
    gf.write_meta(d, "test", {"num_examples": 3, "shard_size": 4, "scheme": "68"})


def test_missing_field_is_named(tmp_path):
  shard = _shard(0, 2)
  del shard["visible"]
  with pytest.raises(ValueError, match="visible"):
    gf.write_shard(str(tmp_path), "train", 0, shard)
