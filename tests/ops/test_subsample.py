"""The paper's subsampling operator F: jnp vs scipy implementations (jaxdet.ops.subsample)."""
import numpy as np
import pytest

from jaxdet.ops.subsample import gaussian_kernel_1d, subsample_jnp, subsample_np, subsample_uint8


@pytest.mark.parametrize("sigma,factor", [(1.0, 4), (0.0, 4), (1.7, 2), (0.6, 1)])
def test_jnp_matches_scipy(sigma, factor):
  rng = np.random.default_rng(0)
  imgs = rng.uniform(0, 1, (2, 32, 24, 3)).astype(np.float32)
  out = np.asarray(subsample_jnp(imgs, factor, sigma))
  assert out.shape == (2, 32 // factor, 24 // factor, 3)
  for i in range(2):
    np.testing.assert_allclose(out[i], subsample_np(imgs[i], factor, sigma), atol=1e-4)


def test_constant_stays_constant_and_uint8():
  img = np.full((128, 128, 3), 77, np.uint8)
  assert np.allclose(subsample_np(img), 77.0)
  assert np.allclose(np.asarray(subsample_jnp(img[None].astype(np.float32))), 77.0, atol=1e-4)
  out = subsample_uint8(img)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and np.all(out == 77)


def test_no_blur_is_block_mean_by_hand():
  img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
  # 2x2 blocks: [[0,1,4,5], [2,3,6,7], [8,9,12,13], [10,11,14,15]]
  np.testing.assert_allclose(subsample_np(img, 2, 0.0)[..., 0], [[2.5, 4.5], [10.5, 12.5]])
  np.testing.assert_allclose(np.asarray(subsample_jnp(img[None], 2, 0.0))[0, ..., 0],
                             [[2.5, 4.5], [10.5, 12.5]])
  # factor 4 == two successive 2x2 poolings ("average pooling layers")
  rng = np.random.default_rng(1)
  big = rng.uniform(0, 1, (16, 16, 2))
  twice = subsample_np(subsample_np(big, 2, 0.0), 2, 0.0)
  np.testing.assert_allclose(subsample_np(big, 4, 0.0), twice, atol=1e-6)


def test_kernel_and_errors():
  k = gaussian_kernel_1d(1.0)
  assert len(k) == 9 and k.sum() == pytest.approx(1.0) and k.argmax() == 4
  with pytest.raises(ValueError, match="multiples"):
    subsample_np(np.zeros((30, 32, 3)), 4)
  with pytest.raises(ValueError, match="factor"):
    subsample_jnp(np.zeros((1, 32, 32, 3)), 0)
