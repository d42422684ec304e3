"""Face source specs: concatenation, hidden landmarks, subsets and the errors that name the key."""
import ml_collections
import numpy as np
import pytest

from jaxdet.data import face_factory
from jaxdet.data.face_records import FaceExample


class ListSource:
  def __init__(self, n, scheme="5", tag=0):
    self.scheme, self.n, self.tag = scheme, n, tag

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    pts = np.full((5, 2), float(i), np.float32)
    return FaceExample(image=np.full((4, 4, 3), self.tag, np.uint8), landmarks=pts,
                       identity=100 * self.tag + i, key=f"s{self.tag}/{i}")


def test_concat_maps_indices_in_order():
  src = face_factory.ConcatFaceSource([ListSource(3, tag=1), ListSource(2, tag=2)], ["a", "b"])
  assert len(src) == 5 and src.scheme == "5"
  assert [src[i].identity for i in range(5)] == [100, 101, 102, 200, 201]


def test_concat_refuses_mixed_schemes():
  with pytest.raises(ValueError, match="mix landmark schemes"):
    face_factory.ConcatFaceSource([ListSource(1, "5"), ListSource(1, "19")], ["x", "y"])


def test_unlabelled_hides_landmarks_keeps_the_rest():
  src = face_factory.UnlabelledFaceSource(ListSource(2, tag=3))
  ex = src[1]
  assert src.scheme == "" and ex.landmarks is None and ex.identity == 301
  assert ex.image[0, 0, 0] == 3 and ex.box is not None


def test_subset_is_the_first_n():
  src = face_factory.FaceSubset(ListSource(5), 3)
  assert len(src) == 3 and src[2].identity == 2
  with pytest.raises(IndexError):
    src[3]


def test_bad_specs_name_what_to_set():
  data = ml_collections.ConfigDict({"aflw_mat": "", "aflw_images": "", "crop_margin": 0.25})
  with pytest.raises(ValueError, match="kind one of"):
    face_factory.face_source("nosuch:split", data, size=32)
  with pytest.raises(ValueError, match="config.data.aflw_mat"):
    face_factory.face_source("aflw:train", data, size=128)
  with pytest.raises(ValueError, match="at least one"):
    face_factory.face_source((), data, size=32)


def test_pooled_folders_share_one_identity_map(tmp_path):
  from PIL import Image
  for folder, names in (("gallery", ("7", "12")), ("probe", ("12", "7"))):
    for name in names:
      d = tmp_path / folder / name
      d.mkdir(parents=True)
      Image.fromarray(np.full((20, 16, 3), int(name), np.uint8)).save(d / "a.png")
  data = ml_collections.ConfigDict({"crop_margin": 0.25})
  src = face_factory.face_source(f"folder:{tmp_path}/gallery+{tmp_path}/probe", data, size=8)
  ids = [src[i].identity for i in range(len(src))]
  colour = [int(src[i].image[4, 4, 0]) for i in range(len(src))]
  # The same person has the same identity in both folders (names 7 and 12 -> one map).
  assert len(src) == 4 and dict(zip(colour, ids)) == {7: ids[colour.index(7)],
                                                     12: ids[colour.index(12)]}
  assert len(set(ids)) == 2 and ids.count(ids[0]) == 2
