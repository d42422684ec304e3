"""Embedded face benchmark: determinism, exact landmarks, the real-LR degradation, splits."""
import json

import numpy as np
import pytest
from PIL import Image

from jaxdet.data import face_benchmark as fb
from jaxdet.data import face_render as fr
from jaxdet.data.face_records import FROM_68_TO_5, FROM_68_TO_19, FaceSource, from_68

TINY = dict(num_hr_train=6, num_hr_test=3, num_real_lr_train=4, num_real_lr_test=6,
            num_id_train_identities=2, num_id_test_identities=3, images_per_identity=2)
SKIN, LIP, BROW = np.array([200, 150, 120]), np.array([170, 40, 60]), np.array([20, 20, 90])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return fb.ensure_face_benchmark(tmp_path_factory.mktemp("faces") / "b", seed=0, verbose=False,
                                  **TINY)


def _load(path):
  out = {}
  for split in fb.SPLITS:
    with np.load(path / f"{split}.npz") as z:
      out[split] = {k: z[k] for k in z.files}
  return out


def test_build_is_deterministic_and_seeded(root, tmp_path):
  again = fb.ensure_face_benchmark(tmp_path / "again", seed=0, verbose=False, **TINY)
  other = fb.ensure_face_benchmark(tmp_path / "other", seed=1, verbose=False, **TINY)
  a, b, c = _load(root), _load(again), _load(other)
  for split in fb.SPLITS:
    assert a[split].keys() == b[split].keys()
    for k in a[split]:
      assert a[split][k].tobytes() == b[split][k].tobytes(), (split, k)
    assert not np.array_equal(a[split]["images"], c[split]["images"])
    assert not np.allclose(a[split]["landmarks68"], c[split]["landmarks68"])
  meta = json.loads((root / "meta.json").read_text())
  assert meta["stats"]["id_test"]["faces"] == 6 and meta["stats"]["hr_train"]["size"] == 128
  assert a["hr_train"]["images"].shape == (6, 128, 128, 3)
  assert a["real_lr_test"]["images"].shape == (6, 32, 32, 3)
  assert a["id_train"]["landmarks68"].shape == (4, 68, 2)


def test_cache_is_reused_and_checked(root):
  stamp = (root / "hr_train.npz").stat().st_mtime_ns
  assert fb.ensure_face_benchmark(root, seed=0, verbose=False, **TINY) == root
  assert (root / "hr_train.npz").stat().st_mtime_ns == stamp
  with pytest.raises(ValueError, match="built with"):
    fb.ensure_face_benchmark(root, seed=3, verbose=False, **TINY)


def _test_identity(rng):
  p = fr.sample_identity(rng)
  p.update(skin=SKIN, lip=LIP, brow=BROW, beard=False)
  return p


def _near(image, point, radius):
  """Pixels whose centres are within ``radius`` of ``point`` (continuous coordinates)."""
  yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
  d = np.hypot(xx + 0.5 - point[0], yy + 0.5 - point[1])
  return image[d <= radius].astype(np.int32)


def _pixel(image, point):
  col, row = np.clip(np.floor(point).astype(int), 0, np.array(image.shape[1::-1]) - 1)
  return image[row, col].astype(np.int32)


def _share(pixels, colour):
  """Largest share of ``colour`` in a skin / ``colour`` mix among ``pixels`` (0: skin, 1: colour)."""
  direction = np.asarray(colour, np.float64) - SKIN
  return float(((pixels - SKIN) @ direction / (direction @ direction)).max(initial=-1.0))


def _jaw_on_boundary(image, lm, vis):
  """Per visible jaw point: pixels of exactly the skin colour and others within 1.5 px."""
  ok = []
  for k in np.flatnonzero(vis[:17]):
    near = _near(image, lm[k], 1.5)
    skin = np.abs(near - SKIN).max(-1) <= 1
    ok.append(skin.any() and (~skin).any())
  return ok


def _feature_checks(img, lm, vis, shift=(0.0, 0.0)):
  """Pass / fail of each drawn feature at the (shifted) landmarks of a flat render."""
  lm = lm + np.asarray(shift, np.float32)
  checks = [np.abs(_pixel(img, eye.mean(0)) - fr.PUPIL).max() <= 40  # pupil at the eye centre
            for eye in (lm[36:42], lm[42:48])]
  checks.append(_share(_near(img, (lm[51] + lm[62]) / 2, 0.8), LIP) > 0.45)  # upper lip
  checks.append(np.abs(_pixel(img, (lm[57] + lm[66]) / 2) - LIP).max() <= 40)  # lower lip
  checks += [_share(_near(img, lm[k], 1.0), LIP) > 0.3 for k in (48, 54)]  # mouth corners
  checks += [_share(_near(img, lm[k], 1.0), BROW) > 0.35 for k in range(18, 26)]  # brow line
  return checks + _jaw_on_boundary(img, lm, vis)


def test_drawn_features_sit_at_the_landmarks():
  rng = np.random.default_rng(5)
  good, shifted, outside = [], [], []
  for _ in range(20):
    p, v = _test_identity(rng), fr.sample_view(rng)
    img, lm, vis = fr.render_face(rng, p, v, flat=True)
    assert np.all(lm >= 0) and np.all(lm <= 128)
    good += _feature_checks(img, lm, vis)
    shifted += _feature_checks(img, lm, vis, shift=(0.0, -3.0))
    for k, out in ((48, -3.0), (54, 3.0)):  # the mouth corner is the end of the lips
      outside.append(_share(_near(img, lm[k] + [out, 0], 1.0), LIP) > 0.1)
    for k in (33, 30, 8):  # nose base, nose tip, chin are on the face, never background
      assert np.abs(_pixel(img, lm[k]) - fr.FLAT_BACKGROUND).max() > 60
  assert np.mean(good) > 0.98
  assert np.mean(shifted) < 0.6 and np.mean(outside) < 0.05  # the checks can fail


def test_self_occluded_points_are_on_the_far_side():
  rng = np.random.default_rng(2)
  p, v = fr.sample_identity(rng), fr.sample_view(rng)
  v.update(pitch=0.0, roll=0.0)
  hidden = {}
  for yaw in (-40.0, 0.0, 40.0):
    _, lm, vis = fr.render_face(np.random.default_rng(0), p, dict(v, yaw=yaw))
    hidden[yaw] = set(np.flatnonzero(~vis).tolist())
  assert hidden[0.0] == set()
  assert {15, 16} <= hidden[40.0] <= set(range(12, 17)) | {45}  # positive yaw: nose to the right
  mirror = {16 - k if k < 17 else 81 - k for k in hidden[40.0]}  # 45 <-> 36
  assert hidden[-40.0] == mirror


def test_real_lr_truth_and_degradation(root):
  stored = _load(root)["real_lr_test"]
  residual = []
  for i in range(6):
    r = fb.render_example(0, "real_lr_test", i, fb.HR_IMAGES_PER_IDENTITY)
    assert np.array_equal(r["landmarks"], r["hr_landmarks"] * np.float32(0.25))
    assert np.array_equal(stored["landmarks68"][i], r["landmarks"])
    assert np.array_equal(stored["images"][i], r["image"])
    clean = np.asarray(Image.fromarray(r["hr"]).resize((32, 32), Image.BOX), np.float64)
    lr = r["image"].astype(np.float64)
    for c in range(3):  # the LR is the clean resize up to a colour shift, noise and JPEG
      x, y = clean[..., c].ravel(), lr[..., c].ravel()
      assert np.corrcoef(x, y)[0, 1] > 0.6
      fit = np.polyval(np.polyfit(x, y, 1), x)
      residual.append(np.std(y - fit))
  assert 2.0 < np.median(residual) < 30.0


def test_degradation_parameters_and_variety():
  rng = np.random.default_rng(0)
  img = fr.render_face(rng, fr.sample_identity(rng), fr.sample_view(rng))[0]
  params = [fr.degrade_to_real_lr(img, rng, return_params=True)[1] for _ in range(60)]
  assert {q["resize"] for q in params} == {"bilinear", "bicubic", "nearest", "box"}
  for key, lo, hi in (("blur", 0.5, 1.5), ("noise", 2, 8), ("quality", 30, 70), ("gamma", 0.75, 1.35)):
    values = [q[key] for q in params]
    assert lo <= min(values) and max(values) <= hi and max(values) - min(values) > (hi - lo) / 3
  a = fr.degrade_to_real_lr(img, np.random.default_rng(1))
  b = fr.degrade_to_real_lr(img, np.random.default_rng(2))
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)


def test_source_schemes_and_labels(root):
  full = fb.FaceBenchmarkSource(root, "hr_test")
  assert isinstance(full, FaceSource) and full.scheme == "68" and len(full) == 3
  d = full.arrays()
  d["visible68"][0, 36] = False  # a hidden eye corner hides the derived points it is part of
  for name, weights in (("19", FROM_68_TO_19), ("5", FROM_68_TO_5)):
    src = fb.FaceBenchmarkSource(root, "hr_test", scheme=name)
    src._data = d
    for i in range(len(src)):
      ex, ref = src[i], full[i]
      np.testing.assert_allclose(ex.landmarks, from_68(ref.landmarks, name), atol=1e-5)
      want = np.array([ref.visible[w > 0].all() for w in weights])
      assert np.array_equal(ex.visible, want) and ex.key == f"hr_test/{i}"
      assert np.array_equal(ex.image, ref.image) and ex.identity == ref.identity
    assert not src[0].visible[6 if name == "19" else 0]
  ex = full[1]
  assert np.allclose(ex.box, [*ex.landmarks.min(0), *ex.landmarks.max(0)])
  lr_train = fb.FaceBenchmarkSource(root, "real_lr_train")
  assert lr_train.scheme == "" and lr_train[0].landmarks is None and lr_train[0].image.shape == (32, 32, 3)
  assert fb.FaceBenchmarkSource(root, "real_lr_train", labelled=True)[0].landmarks.shape == (68, 2)
  assert fb.FaceBenchmarkSource(root, "hr_train", labelled=False)[0].landmarks is None
  assert fb.FaceBenchmarkSource(root, "real_lr_test")[2].landmarks.shape == (68, 2)


def test_identities(root):
  per_split = {}
  for split in fb.SPLITS:
    ids = np.array([ex.identity for ex in fb.FaceBenchmarkSource(root, split, labelled=False)])
    per_split[split] = set(ids.tolist())
    if split.startswith("id_"):
      assert all(np.sum(ids == k) == TINY["images_per_identity"] for k in per_split[split])
  assert len(per_split["id_train"]) == 2 and len(per_split["id_test"]) == 3
  everything = [k for s in per_split.values() for k in s]
  assert len(everything) == len(set(everything))  # every split has its own identities
  # images of one identity share the shape parameters, other identities do not
  a, b, c = (fb.render_example(0, "id_train", i, 2) for i in (0, 1, 2))
  assert a["identity"] == b["identity"] != c["identity"]
  assert not np.array_equal(a["pose"], b["pose"])


def test_errors(root, tmp_path):
  with pytest.raises(ValueError, match="hr_train, hr_test"):
    fb.FaceBenchmarkSource(root, "train")
  with pytest.raises(FileNotFoundError, match="ensure_face_benchmark"):
    fb.FaceBenchmarkSource(tmp_path / "missing", "hr_train")
  with pytest.raises(ValueError, match="unknown landmark scheme"):
    fb.FaceBenchmarkSource(root, "hr_train", scheme="21")
  with pytest.raises(IndexError):
    fb.FaceBenchmarkSource(root, "hr_test")[3]


def test_pose_and_shape_variation():
  recs = [fb.render_example(7, "hr_train", i, 1) for i in range(40)]
  lm = np.stack([r["landmarks"] for r in recs]).astype(np.float64)
  pose = np.stack([r["pose"] for r in recs])
  assert pose[:, 0].std() > 15 and pose[:, 1].std() > 7 and pose[:, 2].std() > 9
  centred = lm - lm.mean(1, keepdims=True)
  norm = centred / np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)[:, None, None]
  assert norm.std(0).mean() > 0.08  # landmark layouts differ well beyond a pixel
  iod = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)
  mean_shape_error = np.linalg.norm(lm - lm.mean(0), axis=-1).mean(1) / iod
  assert np.median(mean_shape_error) > 0.12  # a mean-shape predictor is far off
  assert 30 < iod.mean() < 80
