"""Tests of jaxdet.data.face_sources on tiny fixtures written here: crop_face exactness, .pts
parsing, 300W splits, AFLW .mat protocol, WIDER FACE size selection, TinyFace-style folders."""
import warnings

import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxdet.data.face_records import FaceSource
from jaxdet.data.face_sources import (AflwSource, ImageFolderFaceSource, W300Source,
                                      WiderFaceCropSource, crop_face, crop_window, read_pts)


def _blob(h, w, x, y, sigma=2.0):
  """A Gaussian dot centred at continuous (x, y) on black, uint8 RGB."""
  yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
  g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
  return np.repeat((g * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def _centroid(img):
  v = img[..., 0].astype(np.float64)
  yy, xx = np.mgrid[0:v.shape[0], 0:v.shape[1]] + 0.5
  return np.array([(v * xx).sum() / v.sum(), (v * yy).sum() / v.sum()])


# ------------------------------------------------------------------------------ crop_face
@pytest.mark.parametrize("box, size, dot", [
    ([60, 50, 140, 120], 32, (97.3, 83.8)),   # shrink 2.5x (antialiased)
    ([60, 50, 80, 75], 64, (71.6, 61.2)),     # enlarge ~2x
    ([-30, -20, 40, 45], 48, (12.5, 9.25)),   # square leaves the image: padding
])
def test_crop_face_moves_a_dot_to_the_transformed_landmark(box, size, dot):
  image = _blob(150, 200, *dot)
  crop, lm, out_box = crop_face(image, box, size, np.array([dot]), margin=0.25)
  assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
  np.testing.assert_allclose(_centroid(crop), lm[0], atol=0.03)
  # the mapping itself: centred square of side max(w, h) * 1.25
  x0, y0, side = crop_window(box, 0.25)
  bw, bh = box[2] - box[0], box[3] - box[1]
  assert side == pytest.approx(max(bw, bh) * 1.25)
  centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
  assert (x0 + side / 2, y0 + side / 2) == pytest.approx(centre)
  np.testing.assert_allclose(lm[0], (np.array(dot) - [x0, y0]) * size / side, rtol=1e-6)
  np.testing.assert_allclose(out_box, (np.array(box, float) - [x0, y0, x0, y0]) * size / side,
                             rtol=1e-5)


@pytest.mark.parametrize("size", [20, 150])
def test_crop_face_samples_pixel_centres_exactly(size):
  # value = column index: a linear ramp whose continuous value at x is x - 0.5
  image = np.repeat(np.tile(np.arange(200, dtype=np.uint8), (120, 1))[..., None], 3, -1)
  box = [70.3, 30.0, 130.3, 90.0]
  crop, _, _ = crop_face(image, box, size, margin=0.0)
  x0, _, side = crop_window(box, 0.0)
  expected = x0 + (np.arange(size) + 0.5) * side / size - 0.5
  np.testing.assert_allclose(crop[size // 2, :, 0], expected, atol=0.51)  # uint8 rounding only


def test_crop_face_padding_modes():
  image = np.full((10, 10, 3), 200, np.uint8)
  zero, _, _ = crop_face(image, [5, 0, 15, 10], 10, margin=0.0, pad="zero")
  edge, _, _ = crop_face(image, [5, 0, 15, 10], 10, margin=0.0, pad="edge")
  assert (zero[:, :4] == 200).all() and (zero[:, 6:] == 0).all()
  assert (edge == 200).all()
  with pytest.raises(ValueError, match="no extent"):
    crop_face(image, [3, 3, 3, 3], 8)


# ------------------------------------------------------------------------------ .pts
def _pts_text(points):
  return "version: 1\nn_points:  %d\n{\n%s\n}\n" % (
      len(points), "\n".join(f"{x} {y}" for x, y in points))


def test_read_pts_values_and_one_based_shift(tmp_path):
  p = tmp_path / "a.pts"
  p.write_text(_pts_text([(1.0, 1.0), (446.5, 1058.25), (10, 20.5)]))
  pts = read_pts(p)
  assert pts.dtype == np.float32 and pts.shape == (3, 2)
  np.testing.assert_allclose(pts, [[0.5, 0.5], [446.0, 1057.75], [9.5, 20.0]])


@pytest.mark.parametrize("text, line, what", [
    ("version: 1\nn_points: 2\n{\n1 2\n3\n}\n", 5, "two finite numbers"),
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", 6, "2 points, but n_points is 3"),
    ("version: 1\nn_points: 1\n{\n1 2\n", 4, "no closing"),
    ("version: 1\n{\n1 2\n}\n", 2, "no 'n_points:'"),
    ("n_points: x\n{\n}\n", 1, "positive integer"),
])
def test_read_pts_errors_name_file_and_line(tmp_path, text, line, what):
  p = tmp_path / "bad.pts"
  p.write_text(text)
  with pytest.raises(ValueError, match=what) as e:
    read_pts(p)
  assert f"{p}:{line}:" in str(e.value)


# ------------------------------------------------------------------------------ 300W
W300_FAKE = {"afw": ["a1.jpg", "a2.jpg"], "helen/trainset": ["h1.jpg"], "lfpw/trainset": ["l1.png"],
             "helen/testset": ["ht1.jpg"], "lfpw/testset": ["lt1.png", "lt2.png"],
             "ibug": ["i1.jpg"]}


def _points68(seed):
  rng = np.random.default_rng(seed)
  return np.round(rng.uniform(30, 90, (68, 2)), 2)


def _w300_tree(root):
  for k, (sub, names) in enumerate(W300_FAKE.items()):
    (root / sub).mkdir(parents=True)
    for j, name in enumerate(names):
      Image.fromarray(np.full((100, 120, 3), 10 * k + j, np.uint8)).save(root / sub / name)
      (root / sub / name).with_suffix(".pts").write_text(_pts_text(_points68(10 * k + j)))
  return root


def _w300(root, split, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return W300Source(root, split, **kw)


def test_w300_split_membership_and_counts(tmp_path):
  root = _w300_tree(tmp_path)
  keys = {s: [_w300(root, s)._faces[i].key for i in range(len(_w300(root, s)))]
          for s in ("train", "common", "challenging", "full")}
  assert keys["train"] == ["afw/a1.jpg", "afw/a2.jpg", "helen/trainset/h1.jpg",
                           "lfpw/trainset/l1.png"]
  assert keys["common"] == ["helen/testset/ht1.jpg", "lfpw/testset/lt1.png", "lfpw/testset/lt2.png"]
  assert keys["challenging"] == ["ibug/i1.jpg"]
  assert keys["full"] == keys["common"] + keys["challenging"]
  with pytest.warns(RuntimeWarning, match="differ from the 300W release"):
    W300Source(root, "challenging")


def test_w300_example_landmarks_box_and_crop(tmp_path):
  root = _w300_tree(tmp_path)
  src = _w300(root, "challenging", size=64)
  assert isinstance(src, FaceSource) and src.scheme == "68"
  ex = src[0]
  pts = _points68(50) - 0.5  # ibug is the 6th folder: seed 10 * 5 + 0
  x0, y0, side = crop_window(np.concatenate([pts.min(0), pts.max(0)]), 0.25)
  np.testing.assert_allclose(ex.landmarks, (pts - [x0, y0]) * 64 / side, rtol=1e-5, atol=1e-4)
  assert ex.image.shape == (64, 64, 3) and ex.key == "ibug/i1.jpg" and ex.visible.all()
  np.testing.assert_allclose(ex.box, [*ex.landmarks.min(0), *ex.landmarks.max(0)], atol=1e-4)


def test_w300_missing_pts_is_an_error_or_a_counted_skip(tmp_path, capsys):
  root = _w300_tree(tmp_path)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "ibug" / "lonely.jpg")
  with pytest.raises(FileNotFoundError, match="lonely.jpg"):
    _w300(root, "challenging")
  src = _w300(root, "challenging", skip_unannotated=True)
  assert len(src) == 1 and src.stats["images_without_pts"] == 1
  assert "lonely.jpg" in capsys.readouterr().out
  with pytest.raises(ValueError, match="split 'test'"):
    W300Source(root, "test")


def test_w300_from_directory_and_list_file(tmp_path):
  d = tmp_path / "mine" / "sub"
  d.mkdir(parents=True)
  for name in ("x.jpg", "y.png"):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d / name)
    five = [(10, 10), (20, 12), (15, 30), (12, 25), (18, 25)]
    (d / name).with_suffix(".pts").write_text(_pts_text(five))
  src = W300Source.from_directory(tmp_path / "mine", size=32)
  assert src.scheme == "5" and [f.key for f in src._faces] == ["sub/x.jpg", "sub/y.png"]
  assert src[1].landmarks.shape == (5, 2)
  (tmp_path / "mine" / "list.txt").write_text("# mine\nsub/y.png\n")
  lst = W300Source.from_directory(tmp_path / "mine" / "list.txt")
  assert [f.key for f in lst._faces] == ["sub/y.png"]


# ------------------------------------------------------------------------------ AFLW
def _aflw_fixture(tmp_path, n=6):
  rng = np.random.default_rng(1)
  images = tmp_path / "flickr"
  data = np.zeros((n, 38))
  bbox = np.zeros((n, 4))
  names = np.empty((n, 1), object)
  for r in range(n):
    (images / str(r % 2)).mkdir(parents=True, exist_ok=True)
    names[r, 0] = f"{r % 2}/image{r:05d}.jpg"
    Image.fromarray(np.full((60, 80, 3), r, np.uint8)).save(images / names[r, 0])
    data[r, :19] = rng.uniform(20, 60, 19)  # x
    data[r, 19:] = rng.uniform(10, 50, 19)  # y
    bbox[r] = [15 + r, 65, 8, 55 - r]  # x1, x2, y1, y2
  mask = (rng.uniform(size=(n, 19)) > 0.3).astype(np.float64)
  ra = np.array([[3, 6, 1, 5, 2, 4]], np.float64)  # 1-based permutation
  mat = tmp_path / "AFLWinfo_release.mat"
  scipy.io.savemat(mat, {"data": data, "mask_new": mask, "bbox": bbox, "nameList": names, "ra": ra})
  return mat, images, data, mask, bbox


def test_aflw_split_by_ra_visibility_and_box(tmp_path):
  mat, images, data, mask, bbox = _aflw_fixture(tmp_path)
  train = AflwSource(mat, images, "train", num_train=4, size=64)
  test = AflwSource(mat, images, "test", num_train=4, size=64)
  assert [f.key for f in train._faces] == ["0/image00002.jpg#2", "1/image00005.jpg#5",
                                           "0/image00000.jpg#0", "0/image00004.jpg#4"]
  assert [f.key for f in test._faces] == ["1/image00001.jpg#1", "1/image00003.jpg#3"]
  assert len(AflwSource(mat, images, "full", num_train=4)) == 2 and train.scheme == "19"
  f = test._faces[1]  # record 3
  np.testing.assert_allclose(f.landmarks[:, 0], data[3, :19] - 0.5, rtol=1e-6)
  np.testing.assert_allclose(f.landmarks[:, 1], data[3, 19:] - 0.5, rtol=1e-6)
  np.testing.assert_array_equal(f.visible, mask[3] == 1)
  np.testing.assert_allclose(f.box, [18 - 0.5, 8 - 0.5, 65 - 0.5, 52 - 0.5])
  ex = test[1]
  x0, y0, side = crop_window(f.box, 0.25)
  assert side == pytest.approx(47 * 1.25)  # max(w = 47, h = 44)
  np.testing.assert_allclose(ex.landmarks, (f.landmarks - [x0, y0]) * 64 / side, rtol=1e-5)
  np.testing.assert_array_equal(ex.visible, mask[3] == 1)
  assert ex.image.shape == (64, 64, 3) and ex.key == "1/image00003.jpg#3"


def test_aflw_errors_name_files(tmp_path):
  mat, images, *_ = _aflw_fixture(tmp_path)
  (images / "1" / "image00003.jpg").unlink()
  with pytest.raises(FileNotFoundError, match="image00003.jpg"):
    AflwSource(mat, images, "test", num_train=4)
  with pytest.raises(ValueError, match="num_train=20000"):
    AflwSource(mat, images, "train")
  with pytest.raises(FileNotFoundError, match="nope.mat"):
    AflwSource(tmp_path / "nope.mat", images, "train")


# ------------------------------------------------------------------------------ WIDER FACE
WIDER = """\
0--Parade/a.jpg
5
10 10 30 25 0 0 0 0 0 0
50 10 19 15 0 0 0 0 0 0
5 40 20 40 0 0 0 0 0 0
90 20 41 30 0 0 0 0 0 0
100 60 25 25 0 0 0 1 0 0
1--Handshaking/b.jpg
2
0 0 0 10 0 0 0 0 0 0
20 20 150 120 2 0 0 0 0 0
"""
# a: face 0 max 30 (kept), 1 max 19 (small), 2 max 40 (kept: inclusive), 3 max 41 (large),
#    4 invalid. b: face 0 w = 0 (degenerate), face 1 max 150 (large for LR, HR face).


def _wider(tmp_path):
  (tmp_path / "images" / "0--Parade").mkdir(parents=True)
  (tmp_path / "images" / "1--Handshaking").mkdir(parents=True)
  Image.fromarray(np.full((100, 160, 3), 50, np.uint8)).save(tmp_path / "images/0--Parade/a.jpg")
  Image.fromarray(np.full((160, 200, 3), 90, np.uint8)).save(
      tmp_path / "images/1--Handshaking/b.jpg")
  (tmp_path / "gt.txt").write_text(WIDER)
  return tmp_path / "gt.txt", tmp_path / "images"


def test_wider_size_selection_keeps_exactly_the_faces_in_range(tmp_path):
  ann, images = _wider(tmp_path)
  lr = WiderFaceCropSource(ann, images, min_size=20, max_size=40, size=32)
  assert lr.scheme == ""
  assert [f.key for f in lr._faces] == ["0--Parade/a.jpg#0", "0--Parade/a.jpg#2"]
  assert lr.stats == {"images": 2, "annotations": 7, "dropped_invalid": 1, "dropped_degenerate": 1,
                      "dropped_blur": 0, "dropped_occlusion": 0, "dropped_small": 1,
                      "dropped_large": 2, "kept": 2, "images_with_kept_faces": 1}
  ex = lr[0]
  assert ex.image.shape == (32, 32, 3) and ex.landmarks is None and ex.key == "0--Parade/a.jpg#0"
  np.testing.assert_allclose(ex.box, [0, 2.5 * 32 / 30, 32, 27.5 * 32 / 30], atol=1e-4)
  hr = WiderFaceCropSource(ann, images, min_size=100, max_size=float("inf"), size=128)
  assert [f.key for f in hr._faces] == ["1--Handshaking/b.jpg#1"]
  assert hr[0].image.shape == (128, 128, 3)
  assert len(WiderFaceCropSource(ann, images, min_size=100, max_size=1e9, size=8, max_blur=1)) == 0
  both = WiderFaceCropSource(ann, images, min_size=20, max_size=40, size=32, measure="both")
  assert [f.key for f in both._faces] == ["0--Parade/a.jpg#0", "0--Parade/a.jpg#2"]
  sq = WiderFaceCropSource(ann, images, min_size=20, max_size=40, size=32, measure="sqrt")
  # sqrt: 27.4 kept, 16.9 small, 28.3 kept, 35.1 kept
  assert [f.key for f in sq._faces] == ["0--Parade/a.jpg#0", "0--Parade/a.jpg#2",
                                        "0--Parade/a.jpg#3"]
  with_invalid = WiderFaceCropSource(ann, images, min_size=20, max_size=40, size=32,
                                     drop_invalid=False)
  assert with_invalid.stats["kept"] == 3


def test_wider_missing_image_is_named(tmp_path):
  ann, images = _wider(tmp_path)
  (images / "0--Parade" / "a.jpg").unlink()
  with pytest.raises(FileNotFoundError, match="a.jpg"):
    WiderFaceCropSource(ann, images, min_size=20, max_size=40, size=32)


# ------------------------------------------------------------------------------ folders
def _save(path, value, hw=(20, 16)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((*hw, 3), value, np.uint8)).save(path)


def test_folder_identities_from_subfolders_and_prefixes(tmp_path):
  for ident in ("10", "9", "2"):
    _save(tmp_path / "byfolder" / ident / "x.png", int(ident))
  src = ImageFolderFaceSource(tmp_path / "byfolder", size=32)
  assert src.identities == "folders" and src.identity_names == ["2", "9", "10"]
  assert [(f.key, f.identity) for f in src._faces] == [("10/x.png", 2), ("2/x.png", 0),
                                                        ("9/x.png", 1)]
  ex = src[0]
  assert ex.image.shape == (32, 32, 3) and (ex.image == 10).all() and ex.identity == 2
  assert src.scheme == "" and ex.landmarks is None

  for name in ("7_1.jpg", "7_2.jpg", "3_1.jpg"):
    _save(tmp_path / "gallery" / name, 0)
  for name in ("3_5.jpg", "8_1.jpg"):
    _save(tmp_path / "probe" / name, 0)
  gallery = ImageFolderFaceSource(tmp_path / "gallery", size=16)
  assert gallery.identities == "prefix" and gallery.identity_names == ["3", "7"]
  assert [f.identity for f in gallery._faces] == [0, 1, 1]
  probe = ImageFolderFaceSource(tmp_path / "probe", identity_names=gallery.identity_names)
  assert [f.identity for f in probe._faces] == [0, -1] and probe.stats["unknown_identity"] == 1

  _save(tmp_path / "plain" / "deep" / "face.png", 0)
  _save(tmp_path / "plain" / "other.png", 0)
  plain = ImageFolderFaceSource(tmp_path / "plain")
  assert plain.identities == "none" and [f.identity for f in plain._faces] == [-1, -1]


def test_folder_pad_fit_and_bad_image(tmp_path):
  _save(tmp_path / "f" / "1_1.png", 255, hw=(20, 10))
  src = ImageFolderFaceSource(tmp_path / "f", size=20, fit="pad")
  ex = src[0]
  assert (ex.image[:, 6:14] == 255).all() and (ex.image[:, :4] == 0).all()
  np.testing.assert_allclose(ex.box, [5, 0, 15, 20])
  (tmp_path / "f" / "1_2.jpg").write_bytes(b"not a jpeg" * 10)
  src = ImageFolderFaceSource(tmp_path / "f")
  with pytest.raises(OSError, match="1_2.jpg"):
    src[1]
