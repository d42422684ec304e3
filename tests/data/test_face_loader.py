"""FaceLoader: resume, eval padding, input transforms, augmentation geometry (face_loader)."""
import itertools

import numpy as np
import pytest
from PIL import Image

from jaxdet.data.face_loader import FaceLoader
from jaxdet.data.face_records import FaceExample
from jaxdet.ops.subsample import subsample_np


def dots(size, points, sigma):
  """Dark image with a bright Gaussian dot at each continuous (x, y) point."""
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  img = np.zeros((size, size))
  for x, y in points:
    img += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
  return np.repeat(np.clip(np.round(img), 0, 255)[..., None], 3, -1).astype(np.uint8)


class DotFaces:
  """n faces of ``size`` px with the 5 MTCNN points drawn as dots (scheme '5')."""

  scheme = "5"

  def __init__(self, n=5, size=64, seed=0, sigma=1.5, unlabelled=()):
    rng = np.random.default_rng(seed)
    self.items = []
    for i in range(n):
      # points ~16 px apart inside the central [20, 44]^2 (of 64), scaled with the size
      base = np.array([[22, 22], [42, 22], [32, 31], [24, 42], [40, 42]], np.float64)
      pts = (base + rng.uniform(-2, 2, base.shape)) * size / 64
      vis = np.ones(5, bool)
      vis[i % 5] = i % 2 == 0
      lab = i not in unlabelled
      self.items.append(FaceExample(
          image=dots(size, pts, sigma * size / 64), landmarks=pts if lab else None,
          visible=vis if lab else None, box=np.array([8, 8, size - 8, size - 8]) if lab else None,
          identity=100 + i, key=f"dots/{i}"))

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]


class Unlabelled(DotFaces):
  scheme = ""

  def __init__(self, n=5, **kw):
    super().__init__(n=n, unlabelled=range(n), **kw)


def take(loader, n, start=0):
  return list(itertools.islice(loader.iterate(start), n))


def assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_exact(num_workers):
  src = DotFaces(n=5, size=32)
  kw = dict(batch_size=2, train=True, image_size=32, seed=4)
  full = take(FaceLoader(src, **kw, num_workers=0), 6)
  for k in (1, 4):
    resumed = FaceLoader(src, **kw, num_workers=num_workers, start_step=k)
    for a, b in zip(full[k:], itertools.islice(iter(resumed), 6 - k)):
      assert_same(a, b)
  # augmentation is live: one source face gets different pixels at different positions
  seen = {}
  for bt in full:
    for img, i in zip(bt["image"], bt["index"]):
      seen.setdefault(int(i), set()).add(img.tobytes())
  assert max(len(v) for v in seen.values()) > 1


def test_eval_padding_and_fields():
  src = DotFaces(n=5, size=32)
  batches = list(FaceLoader(src, batch_size=2, train=False, image_size=32, num_workers=0))
  assert len(batches) == 3
  last = batches[-1]
  np.testing.assert_array_equal(last["example_valid"], [True, False])
  np.testing.assert_array_equal(last["index"], [4, -1])
  assert last["identity"][1] == -1 and not last["labelled"][1] and not last["visible"][1].any()
  b0 = batches[0]
  assert b0["image"].dtype == np.uint8 and b0["image"].shape == (2, 32, 32, 3)
  assert b0["landmarks"].dtype == np.float32 and b0["landmarks"].shape == (2, 5, 2)
  assert b0["visible"].dtype == bool and b0["box"].dtype == np.float32
  assert b0["identity"].dtype == np.int32 and list(b0["identity"]) == [100, 101]
  # eval: no augmentation, the source itself
  np.testing.assert_array_equal(b0["image"][1], src[1].image)
  np.testing.assert_allclose(b0["landmarks"][1], src[1].landmarks)
  np.testing.assert_array_equal(b0["visible"][1], src[1].visible)
  assert not b0["visible"][1, 1]


def test_unlabelled_source_has_zero_points():
  batch = next(iter(FaceLoader(Unlabelled(n=3, size=32), batch_size=3, train=True, image_size=32,
                               num_workers=0)))
  assert batch["landmarks"].shape == (3, 0, 2) and batch["visible"].shape == (3, 0)
  assert not batch["labelled"].any() and batch["example_valid"].all()


def test_subsample_equals_F_of_source():
  src = DotFaces(n=3, size=128)
  batch = next(iter(FaceLoader(src, batch_size=3, train=False, image_size=32,
                               input_transform="subsample", subsample_sigma=1.0, num_workers=0)))
  for i in range(3):
    ref = np.clip(np.round(subsample_np(src[i].image, 4, 1.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(batch["image"][i], ref)
    np.testing.assert_allclose(batch["landmarks"][i], src[i].landmarks / 4, rtol=1e-6)
    np.testing.assert_allclose(batch["box"][i], src[i].box / 4)


def test_resize_matches_pil():
  src = DotFaces(n=2, size=32)
  batch = next(iter(FaceLoader(src, batch_size=2, train=False, image_size=128,
                               input_transform="resize", num_workers=0)))
  ref = np.asarray(Image.fromarray(src[0].image).resize((128, 128), Image.BILINEAR))
  np.testing.assert_array_equal(batch["image"][0], ref)
  np.testing.assert_allclose(batch["landmarks"][0], src[0].landmarks * 4, rtol=1e-6)


def test_augmentation_moves_landmarks_like_pixels():
  """Dot test on loader batches: each landmark sits on the centroid of its (moved) dot."""
  src = DotFaces(n=5, size=64, sigma=1.5)
  loader = FaceLoader(src, batch_size=5, train=True, image_size=64, seed=1, num_workers=0)
  yy, xx = np.mgrid[0:64, 0:64] + 0.5
  moved = 0.0
  for batch in take(loader, 2):
    for img, pts, i in zip(batch["image"], batch["landmarks"], batch["index"]):
      gray = img.astype(np.float64).mean(-1)
      moved = max(moved, np.abs(pts - src[int(i)].landmarks).max())
      for x, y in pts:
        w = np.where((xx - x) ** 2 + (yy - y) ** 2 <= 6 ** 2, gray, 0.0)
        c = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
        assert np.linalg.norm(c - [x, y]) < 0.1, (int(i), c, (x, y))
  assert moved > 2.0   # the augmentation really moved the points


def test_augmentation_then_subsample_keeps_alignment():
  src = DotFaces(n=3, size=128, sigma=1.5)
  loader = FaceLoader(src, batch_size=3, train=True, image_size=32, seed=2,
                      input_transform="subsample", num_workers=0)
  batch = next(iter(loader))
  yy, xx = np.mgrid[0:32, 0:32] + 0.5
  for img, pts in zip(batch["image"], batch["landmarks"]):
    gray = img.astype(np.float64).mean(-1)
    for x, y in pts:
      w = np.where((xx - x) ** 2 + (yy - y) ** 2 <= 2.5 ** 2, gray, 0.0)
      c = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
      assert np.linalg.norm(c - [x, y]) < 0.15


def test_clear_errors():
  src = DotFaces(n=2, size=64)
  with pytest.raises(ValueError, match=r"dots/0.*image_size=32.*input_transform='none'"):
    next(iter(FaceLoader(src, batch_size=1, train=False, image_size=32, num_workers=0)))
  with pytest.raises(ValueError, match="integer multiple"):
    next(iter(FaceLoader(src, batch_size=1, train=False, image_size=48,
                         input_transform="subsample", num_workers=0)))
  with pytest.raises(ValueError, match="input_transform"):
    FaceLoader(src, batch_size=1, train=False, image_size=32, input_transform="bicubic")

  class Wrong(DotFaces):
    scheme = "19"
  with pytest.raises(ValueError, match="scheme '19'"):
    next(iter(FaceLoader(Wrong(n=1, size=32), batch_size=1, train=False, image_size=32,
                         num_workers=0)))
