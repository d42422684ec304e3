"""Tests for jaxdet.models.face_embedding (the LightCNN-style network of §4.3 / Table 2a) and the
training / embedding helpers of jaxdet.evaluation.face_identification that drive it."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.evaluation import face_identification as fid
from jaxdet.models.face_embedding import (LIGHTCNN29, LightCNN, MFMConv, MFMDense, conv2d_same,
                                          mfm)

KEY = jax.random.key(0)


def np_conv_same(x, k):
  """Direct numpy 'same' convolution (cross-correlation, as lax / nn.Conv)."""
  kh = k.shape[0]
  p = (kh - 1) // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  b, h, w, _ = x.shape
  out = np.zeros((b, h, w, k.shape[-1]))
  for i in range(h):
    for j in range(w):
      out[:, i, j] = np.einsum("bhwc,hwco->bo", xp[:, i:i + kh, j:j + kh], k)
  return out


def test_mfm_is_max_of_halves():
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 10)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(mfm(jnp.asarray(x))),
                                np.maximum(x[..., :5], x[..., 5:]))
  with pytest.raises(ValueError, match="even"):
    mfm(jnp.zeros((1, 3)))


@pytest.mark.parametrize("impl", ["lax", "im2col"])
def test_mfm_conv_matches_numpy(impl):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
  layer = MFMConv(4, kernel=3, impl=impl)
  v = layer.init(KEY, jnp.asarray(x))
  k = np.asarray(v["params"]["kernel"])
  assert k.shape == (3, 3, 3, 8)
  bias = rng.normal(size=8).astype(np.float32)
  v = {"params": {"kernel": v["params"]["kernel"], "bias": jnp.asarray(bias)}}
  y = np_conv_same(x.astype(np.float64), k.astype(np.float64)) + bias
  np.testing.assert_allclose(np.asarray(layer.apply(v, jnp.asarray(x))),
                             np.maximum(y[..., :4], y[..., 4:]), atol=1e-5)


def test_conv_impls_agree_and_dense_mfm():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(5, 5, 5, 6)), jnp.float32)
  np.testing.assert_allclose(np.asarray(conv2d_same(x, k, "im2col")),
                             np.asarray(conv2d_same(x, k, "lax")), atol=1e-4)
  d = MFMDense(3)
  xd = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
  v = d.init(KEY, xd)
  y = np.asarray(xd) @ np.asarray(v["params"]["dense"]["kernel"]) + np.asarray(
      v["params"]["dense"]["bias"])
  np.testing.assert_allclose(np.asarray(d.apply(v, xd)), np.maximum(y[:, :3], y[:, 3:]),
                             atol=1e-5)


def test_lightcnn29_layout_for_32px_faces():
  # §4.3: LightCNN-29 with its first two max-poolings disabled for 32 x 32 inputs: 32 -> 16 -> 8,
  # widths 48 / 96 / 192 / 128 / 128, MFM fc to 256.
  net = LightCNN(**LIGHTCNN29)
  assert net.widths == (48, 96, 192, 128, 128)
  x = jnp.zeros((2, 32, 32, 3))
  shapes = jax.eval_shape(lambda: net.init(KEY, x))["params"]
  assert shapes["conv1"]["kernel"].shape == (5, 5, 3, 96)
  assert shapes["stage2_group"]["mfm_3x3"]["kernel"].shape == (3, 3, 96, 384)
  assert shapes["fc"]["dense"]["kernel"].shape == (8 * 8 * 128, 512)
  assert sum(k.startswith("stage") and "_res" in k for k in shapes) == 1 + 2 + 3 + 4
  assert jax.eval_shape(lambda: net.apply(net.init(KEY, x), x)).shape == (2, 256)
  tiny = LightCNN()
  assert jax.eval_shape(lambda: tiny.apply(tiny.init(KEY, x), x)).shape == (2, 64)
  with pytest.raises(ValueError, match="4 entries"):
    LightCNN(blocks=(1, 1)).init(KEY, x)


def colour_faces(rng, n_id, per, size, colours, patterns):
  ids = np.repeat(np.arange(n_id), per)
  img = colours[ids][:, None, None, :] + 60.0 * patterns[ids][..., None]
  img = img + rng.normal(0, 25.0, (len(ids), size, size, 3))
  return np.clip(img, 0, 255).astype(np.uint8), ids


def test_train_embedding_separates_synthetic_identities():
  rng = np.random.default_rng(0)
  n_id, size = 12, 16
  colours = rng.uniform(40, 200, (n_id, 3))
  patterns = rng.choice([-1.0, 1.0], (n_id, 4, 4)).repeat(4, 1).repeat(4, 2)   # 4x4 blocks
  train, train_ids = colour_faces(rng, n_id, 6, size, colours, patterns)
  test, test_ids = colour_faces(rng, n_id, 4, size, colours, patterns)
  # impl='lax': the im2col path (CPU default) computes the same function (tested above) but
  # compiles ~2x slower, which only pays off on 32 x 32 faces and hundreds of steps.
  model = LightCNN(width=4, embed_dim=32, impl="lax")
  t = time.time()
  v = fid.train_embedding(train, train_ids, model=model, steps=40, batch_size=32, seed=0, lr=3e-3)
  elapsed = time.time() - t
  g = fid.embed(model, v, train, batch_size=20)
  p = fid.embed(model, v, test, batch_size=20)      # 48 = 20 + 20 + 8: a padded last batch
  assert p.dtype == np.float32 and p.shape == (len(test), 32)
  np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(p[40:], fid.embed(model, v, test[40:], batch_size=20), atol=1e-5)
  m = fid.identification_metrics(p, test_ids, g, train_ids)
  assert m["top1"] > 90.0, (m, elapsed)
  # the head is dropped: only the network's variables come back
  assert set(v) == {"params"} and "fc" in v["params"]


def test_train_embedding_errors():
  img = np.zeros((4, 16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match="two identities"):
    fid.train_embedding(img, [1, 1, 1, 1], model=LightCNN(), steps=1)
  with pytest.raises(ValueError, match="4 images but 3"):
    fid.train_embedding(img, [1, 2, 1], model=LightCNN(), steps=1)
