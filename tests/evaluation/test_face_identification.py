"""Tests for jaxdet.evaluation.face_identification: the alignment, probe / gallery split and
closed-set identification metrics of the face identification protocol (§4.3, Table 2)."""
import flax.linen as nn
import numpy as np
import pytest

from jaxdet.data.face_records import CANONICAL_FIVE_112, FROM_68_TO_5
from jaxdet.evaluation import face_identification as fid


def apply(m, pts):
  return pts @ m[:, :2].T + m[:, 2]


def rot(deg):
  a = np.deg2rad(deg)
  return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


# -------------------------------------------------------------------- similarity transform
def test_similarity_transform_recovers_exact_transform():
  src = CANONICAL_FIVE_112.astype(np.float64)
  true = np.concatenate([1.7 * rot(-33.0), np.array([[12.5], [-4.25]])], axis=1)
  m = fid.similarity_transform(src, apply(true, src))
  np.testing.assert_allclose(m, true, atol=1e-10)
  # the inverse direction too
  np.testing.assert_allclose(apply(fid.similarity_transform(apply(true, src), src),
                                   apply(true, src)), src, atol=1e-10)


def test_similarity_transform_noisy_matches_brute_force_least_squares():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 100, (7, 2))
  dst = apply(np.concatenate([0.4 * rot(71.0), np.array([[3.0], [9.0]])], axis=1), src)
  dst = dst + rng.normal(0, 2.0, dst.shape)
  m = fid.similarity_transform(src, dst)
  # similarities without reflection are exactly [[a, -b, tx], [b, a, ty]]: linear least squares
  rows = []
  for (x, y) in src:
    rows += [[x, -y, 1, 0], [y, x, 0, 1]]
  (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)
  np.testing.assert_allclose(m, [[a, -b, tx], [b, a, ty]], atol=1e-9)
  # and it is a similarity: equal singular values, positive determinant
  assert np.linalg.det(m[:, :2]) > 0
  np.testing.assert_allclose(*np.linalg.svd(m[:, :2])[1], rtol=1e-12)


def test_similarity_transform_excludes_reflection_and_rejects_degenerate_points():
  src = CANONICAL_FIVE_112.astype(np.float64)
  mirrored = src * np.array([-1.0, 1.0])
  m = fid.similarity_transform(src, mirrored)
  assert np.linalg.det(m[:, :2]) > 0           # best rotation + scale, not the reflection
  with pytest.raises(ValueError, match="coincide"):
    fid.similarity_transform(np.ones((5, 2)), src)
  with pytest.raises(ValueError, match=r"\[K, 2\]"):
    fid.similarity_transform(src, src[:4])


# ----------------------------------------------------------------------------- alignment
def blobs(size, centres, sigma):
  yy, xx = np.mgrid[:size, :size] + 0.5          # pixel centres, continuous coordinates
  img = sum(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)) for cx, cy in centres)
  return np.repeat((255 * np.clip(img, 0, 1))[..., None], 3, -1).round().astype(np.uint8)


def test_align_faces_maps_dots_to_canonical_points():
  out = 112
  canon = fid.canonical_five(out)
  np.testing.assert_allclose(canon, CANONICAL_FIVE_112, rtol=1e-6)
  images, points = [], []
  for deg, s in [(15.0, 0.7), (-25.0, 0.55)]:
    a = s * rot(deg)
    src = canon @ a.T
    src = src - src.mean(0) + np.array([47.3, 49.1])
    images.append(blobs(96, src, 2.0 * s))
    points.append(src)
  aligned = fid.align_faces(np.stack(images), np.stack(points), out_size=out)
  assert aligned.shape == (2, out, out, 3) and aligned.dtype == np.uint8
  yy, xx = np.mgrid[:out, :out] + 0.5
  for b in range(2):
    w_all = aligned[b, ..., 0].astype(np.float64)
    for cx, cy in canon:
      w = w_all * (((xx - cx) ** 2 + (yy - cy) ** 2) < 7.0 ** 2)
      centroid = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
      assert np.abs(centroid - [cx, cy]).max() < 0.3, (b, centroid, (cx, cy))


def test_align_faces_identity_is_exact_copy():
  # points already on the template of an image of the output size: the half-pixel convention
  # makes the warp the identity, sampling exactly at the pixel centres.
  rng = np.random.default_rng(1)
  img = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  pts = np.broadcast_to(fid.canonical_five(32), (2, 5, 2))
  out = fid.align_faces(img, pts, out_size=32).astype(int)
  assert np.abs(out - img).max() <= 1            # PIL's fixed-point bilinear rounds
  # while a half-pixel error would blur the random texture heavily
  half = (img[:, :-1, :-1] + img[:, 1:, :-1] + img[:, :-1, 1:] + img[:, 1:, 1:]) / 4
  assert np.abs(out[:, :-1, :-1] - half).mean() > 20


def test_align_faces_rejects_bad_shapes_and_five_point_conversion():
  img = np.zeros((2, 32, 32, 3), np.uint8)
  with pytest.raises(ValueError, match="five_points"):
    fid.align_faces(img, np.zeros((2, 68, 2)))
  rng = np.random.default_rng(2)
  pts68 = rng.uniform(0, 32, (2, 68, 2))
  np.testing.assert_allclose(fid.to_five_points(pts68), np.einsum("kn,bnc->bkc", FROM_68_TO_5,
                                                                  pts68))
  np.testing.assert_allclose(fid.to_five_points(pts68[:, :5], "5"), pts68[:, :5])
  with pytest.raises(ValueError, match="scheme '19' has 19"):
    fid.to_five_points(pts68, "19")


# ------------------------------------------------------------------------ probe / gallery
def test_split_probe_gallery_half_per_identity_deterministic():
  ids = np.array([3] * 2 + [7] * 5 + [1] * 4 + [9] * 3)
  rng = np.random.default_rng(0)
  ids = ids[rng.permutation(len(ids))]
  probe = fid.split_probe_gallery(ids, seed=5)
  for u, n in [(3, 2), (7, 5), (1, 4), (9, 3)]:
    assert probe[ids == u].sum() == n // 2 and (~probe[ids == u]).sum() >= 1
  np.testing.assert_array_equal(probe, fid.split_probe_gallery(ids, seed=5))
  others = [fid.split_probe_gallery(ids, seed=s) for s in range(6, 12)]
  assert any((o != probe).any() for o in others)


def test_split_probe_gallery_singletons():
  ids = np.array([0, 0, 1, 2, 2, 2])
  with pytest.raises(ValueError, match="single image"):
    fid.split_probe_gallery(ids, seed=0)
  probe = fid.split_probe_gallery(ids, seed=0, singletons="gallery")
  assert not probe[2] and probe.sum() == 2


# ------------------------------------------------------------------------------- metrics
def unit(deg):
  a = np.deg2rad(np.asarray(deg, np.float64))
  return np.stack([np.cos(a), np.sin(a)], -1)


def test_identification_metrics_hand_computed():
  # gallery at 0, 30, 60, 90, 120 degrees with identities A B A C B; cosine ranks by angle.
  g = unit([0, 30, 60, 90, 120]) * np.array([[1.0], [2.0], [0.5], [3.0], [1.0]])  # norms ignored
  gid = np.array(["A", "B", "A", "C", "B"])
  p = unit([0, 95, 50])
  pid = np.array(["B", "C", "A"])
  # probe 0 (B, 0 deg): ranking A B A C B -> first match rank 2, AP = (1/2 + 2/5) / 2 = 0.45
  # probe 1 (C, 95 deg): ranking C B A B A -> rank 1, AP = 1
  # probe 2 (A, 50 deg): ranking A B C A B -> rank 1, AP = (1/1 + 2/4) / 2 = 0.75
  m = fid.identification_metrics(p, pid, g, gid, ks=(1, 2, 5))
  assert m["top1"] == pytest.approx(200 / 3)
  assert m["top2"] == pytest.approx(100.0) and m["top5"] == pytest.approx(100.0)
  assert m["mAP"] == pytest.approx((0.45 + 1.0 + 0.75) / 3)
  assert m["num_probes"] == 3 and m["num_gallery"] == 5


def test_identification_metrics_identical_embeddings_are_perfect():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(12, 16))
  gid = np.repeat(np.arange(12), 3)
  pid = np.repeat(np.arange(12), 2)
  m = fid.identification_metrics(centres[pid], pid, centres[gid] * 2.0, gid)
  assert m["top1"] == m["top5"] == m["top10"] == m["top20"] == 100.0
  assert m["mAP"] == pytest.approx(1.0)


def test_identification_metrics_requires_closed_set():
  with pytest.raises(ValueError, match="no gallery image"):
    fid.identification_metrics(unit([0]), [1], unit([0, 10]), [2, 3])


# ------------------------------------------------------------------------------ protocol
class FlatEmbed(nn.Module):
  """A cheap stand-in embedding network (the protocol takes any flax module; LightCNN is
  tested in tests/models/test_face_embedding.py)."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(8)(x.reshape(x.shape[0], -1))


def test_identification_protocol_rows_end_to_end():
  rng = np.random.default_rng(0)
  n_id, per = 6, 4
  ids = np.repeat(np.arange(n_id), per)
  colours = rng.integers(30, 226, (n_id, 3))
  imgs = np.clip(colours[ids][:, None, None] + rng.normal(0, 10, (len(ids), 24, 24, 3)), 0,
                 255).astype(np.uint8)
  pts = np.broadcast_to(fid.canonical_five(24), (len(ids), 5, 2))
  pts = pts + rng.normal(0, 0.5, pts.shape)
  kw = dict(model=FlatEmbed(), out_size=16, steps=40, batch_size=8, seed=0, lr=1e-2)
  row = fid.identification_protocol(imgs, ids, pts, imgs, ids + 100, pts, **kw)
  for k in ("top1", "top5", "top10", "top20"):
    assert 0.0 <= row[k] <= 100.0
  assert row["top1"] > 90.0 and row["mAP"] > 0.9       # colours separate the identities
  assert row["aligned"] is True and row["out_size"] == 16
  assert row["num_probes"] == row["num_gallery"] == n_id * per // 2
  assert row["num_test_ids"] == row["num_train_ids"] == n_id
  # 68-point landmarks are reduced to the five points with the scheme
  pts68 = np.zeros((len(ids), 68, 2))
  pts68[:, list(range(36, 42))] = pts[:, :1]
  pts68[:, list(range(42, 48))] = pts[:, 1:2]
  pts68[:, [30, 48, 54]] = pts[:, 2:]
  row68 = fid.identification_protocol(imgs, ids, pts68, imgs, ids + 100, pts68, scheme="68", **kw)
  assert row68 == pytest.approx(row)
  base = fid.identification_protocol(imgs, ids, None, imgs, ids, None, **kw)
  assert base["aligned"] is False and base["num_gallery"] == 12
  with pytest.raises(TypeError, match="model="):
    fid.identification_protocol(imgs, ids, None, imgs, ids, None, steps=1)
  with pytest.raises(ValueError, match="both train and test"):
    fid.identification_protocol(imgs, ids, pts, imgs, ids, None, **kw)
