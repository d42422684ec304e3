"""Tests of jaxdet.data.folder.FolderSource (``--mode=predict`` input): unreadable files."""
import numpy as np
import pytest
from PIL import Image

from jaxdet.data.folder import FolderSource


def _folder(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
  Image.fromarray(rng.integers(0, 255, (10, 12), dtype=np.uint8)).save(tmp_path / "c.jpg")
  (tmp_path / "b.png").write_bytes(b"\x00 these are not png bytes \xff" * 10)
  (tmp_path / "notes.txt").write_text("not an image, not listed")
  return tmp_path


def test_unreadable_file_is_an_error_naming_it_and_the_option(tmp_path):
  folder = _folder(tmp_path)
  with pytest.raises(ValueError) as e:
    FolderSource(str(folder), [1], ["x"])
  msg = str(e.value)
  assert str(folder / "b.png") in msg
  assert "rerun with --config.data.skip_bad_images=True to skip unreadable images" in msg


def test_skip_bad_images_leaves_the_file_out_and_counts_it(tmp_path, capsys):
  folder = _folder(tmp_path)
  src = FolderSource(str(folder), [5, 9], ["x", "y"], skip_bad_images=True)
  out = capsys.readouterr().out
  assert out.count("\n") == 1 and "skipped 1 unreadable image(s) of 3: b.png" in out
  assert src.files == ["a.png", "c.jpg"] and src.skipped_files == ["b.png"]
  assert src.stats["bad_images_skipped"] == 1 and len(src) == 2 and src.image_ids == [0, 1]
  ex = src[1]
  assert ex.file_name == "c.jpg" and ex.image_id == 1 and ex.image.shape == (10, 12, 3)
  assert src.category_ids == [5, 9] and src.class_names == ["x", "y"]


def test_file_failing_only_at_decode(tmp_path):
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
  src = FolderSource(str(tmp_path), [1], ["x"])
  (tmp_path / "a.png").write_bytes(b"broken after the check")
  with pytest.raises(ValueError, match=r"a\.png.*--config\.data\.skip_bad_images=True"):
    src[0]
  src.skip_bad_images = True
  with pytest.warns(RuntimeWarning, match="a.png"):
    assert src[0].image.shape == (1, 1, 3)
  assert src.stats["bad_images_at_read"] == 1


def test_annotation_gives_the_size_without_decoding(tmp_path):
  folder = _folder(tmp_path)
  src = FolderSource(str(folder), [1], ["x"], skip_bad_images=True)
  for i in range(len(src)):
    ann, ex = src.annotation(i), src[i]
    assert ann.image is None and ann.file_name == ex.file_name and ann.image_id == ex.image_id
    assert (ann.height, ann.width) == ex.image.shape[:2]
  (folder / "a.png").write_bytes(b"broken after the check")
  assert (src.annotation(0).height, src.annotation(0).width) == (1, 1)   # as the stand-in
