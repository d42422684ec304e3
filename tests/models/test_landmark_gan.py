"""Tests for jaxdet.models.landmark_gan: G1 / D1 / D3 / G2 / D2 of the low-resolution landmark
paper (§3.1-3.2) at paper input sizes with tiny widths; BN in G1, spectral normalisation (Eq. 3)
in D1, U-Net skip connections in G2.

XLA:CPU compiles every random draw of ``module.init`` separately (~30 s for one network on the
shared CI cores), so the tests trace ``init`` with ``jax.eval_shape`` (structure, names, shapes
and the SN / BN collections) and fill the variables with numpy (:func:`numpy_init`); the number of
compiled forward passes is kept small.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.landmark_gan import HeatmapUNet, HighToLowGenerator, ResidualDiscriminator

KEY = jax.random.key(0)
TINY = dict(features=4, max_features=16)


def flat(tree):
  """{'a/b/c': leaf} of a nested dict."""
  return {"/".join(str(p.key) for p in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def numpy_init(module, *args, seed=0, **kwargs):
  """Variables with the structure of ``module.init`` (traced, not compiled): He-normal kernels,
  small random biases, BN scale 1 / bias 0 / mean 0 / var 1, SN u random and sigma 1."""
  shapes = jax.eval_shape(lambda: module.init(KEY, *args, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = str(path[-1].key)
    if name.endswith("kernel"):
      fan_in = int(np.prod(s.shape[:-1]))
      return rng.normal(0, np.sqrt(2.0 / fan_in), s.shape).astype(s.dtype)
    if name.endswith("/u"):
      return rng.normal(size=s.shape).astype(s.dtype)
    if name in ("scale", "var") or name.endswith("sigma"):
      return np.ones(s.shape, s.dtype)
    if name == "bias" and str(path[-2].key) != "bn":
      return rng.normal(0, 0.05, s.shape).astype(s.dtype)
    return np.zeros(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def block_names(params, prefix):
  return sorted({k.split("/")[0] for k in flat(params) if k.startswith(prefix) and "block" in k})


# ---------------------------------------------------------------------------------------- G1
def test_g1_128_to_32_range_noise_and_batchnorm():
  g = HighToLowGenerator(noise_dim=8, **TINY)
  rng = np.random.default_rng(0)
  hr = rng.uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
  z = rng.normal(size=(4, 8)).astype(np.float32)
  variables = numpy_init(g, hr, z[:2])
  params = variables["params"]
  # eight residual blocks in the encoder, six in the decoder (§3.1)
  assert len(block_names(params, "enc")) == 8 and len(block_names(params, "dec")) == 6
  # "BatchNorm is used after every convolution layer": every conv but the RGB output conv
  p = flat(params)
  convs = [k[:-len("/kernel")] for k, v in p.items() if k.endswith("kernel") and v.ndim == 4]
  assert "conv_out" in convs and len(convs) == 1 + 4 * (2 * 2 + 1) + 3 * (2 * 2 + 1) + 1
  for c in convs:
    assert (c.rsplit("/", 1)[0] + "/bn/scale" in p) == (c != "conv_out"), c
  assert p["noise_fc/kernel"].shape == (8, 128 * 128)
  # eval mode (running statistics) is a different program: traced, not compiled
  assert jax.eval_shape(g.apply, variables, hr, z[:2]).shape == (2, 32, 32, 3)

  # the two faces, each with two noise vectors, in one training batch
  y, upd = jax.jit(lambda v, x, z: g.apply(v, x, z, train=True, mutable=["batch_stats"]))(
      variables, np.concatenate([hr, hr]), z)
  y = np.asarray(y)
  assert y.shape == (4, 32, 32, 3) and y.dtype == np.float32
  assert np.max(np.abs(y)) <= 1.0 and np.std(y) > 1e-3
  assert np.max(np.abs(y[2:] - y[:2])) > 1e-4          # z enters the output
  # BN statistics move in training (running means start at 0), one BN per conv but the last
  means = [np.asarray(v) for k, v in flat(upd["batch_stats"]).items() if k.endswith("mean")]
  assert len(means) == len(convs) - 1
  assert all(np.max(np.abs(m)) > 0 for m in means)


def test_g1_rejects_bad_inputs():
  g = HighToLowGenerator(noise_dim=8, **TINY)
  with pytest.raises(ValueError, match="divisible by 32"):
    jax.eval_shape(lambda: g.init(KEY, jnp.zeros((1, 48, 48, 3)), jnp.zeros((1, 8))))
  with pytest.raises(ValueError, match="noise_dim"):
    jax.eval_shape(lambda: g.init(KEY, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 7))))


# ---------------------------------------------------------------------------------- D1 / D3
def sn_pairs(variables):
  """[(kernel, stored sigma)] of every spectrally normalised layer: the batch_stats entry
  'stage0_block/conv1/conv_sn/conv/kernel/sigma' belongs to the param
  'stage0_block/conv1/conv/kernel' ('fc_sn/fc/kernel/sigma' to 'fc/kernel')."""
  p, s = flat(variables["params"]), flat(variables["batch_stats"])
  pairs = []
  for k, sigma in s.items():
    if k.endswith("kernel/sigma"):
      param = "/".join(q for q in k.split("/")[:-1] if not q.endswith("_sn"))
      pairs.append((np.asarray(p[param], np.float64), float(sigma)))
  return pairs


def test_discriminator_shapes_pooling_and_no_batchnorm():
  d1 = ResidualDiscriminator(**TINY)
  x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
  v = numpy_init(d1, x)
  p = flat(v["params"])
  assert not any("/bn/" in k for k in p)                       # no BN with SN
  assert len(block_names(v["params"], "stage")) == 4
  # every conv kernel and the final Dense are normalised: one (u, sigma) per kernel
  assert len(sn_pairs(v)) == len([k for k in p if k.endswith("kernel")]) == 14
  out, feats = jax.jit(lambda v, x: d1.apply(v, x, capture_intermediates=True,
                                             mutable=["intermediates"]))(v, x)
  assert out.shape == (3,) and out.dtype == jnp.float32
  # max-pooling only in the last two stages: 32 -> 8 before the global pool
  out_hw = lambda name: feats["intermediates"][name]["__call__"][0].shape[1:3]
  assert out_hw("stage1_conv") == (32, 32) and out_hw("stage2_conv") == (32, 32)
  assert out_hw("stage3_conv") == (16, 16)
  # D3: image ⊕ N + 1 heatmaps; without SN and with BN when asked
  d3 = ResidualDiscriminator(**TINY, spectral_norm=False, batch_norm=True)
  x3 = jnp.zeros((2, 32, 32, 3 + 20))
  v3 = jax.eval_shape(lambda: d3.init(KEY, x3))
  assert jax.eval_shape(d3.apply, v3, x3).shape == (2,)
  assert any("/bn/" in k for k in flat(v3["params"]))
  assert not any(k.endswith("sigma") for k in flat(v3["batch_stats"]))
  with pytest.raises(ValueError, match="global_pool"):
    jax.eval_shape(lambda: ResidualDiscriminator(**TINY, global_pool="max").init(KEY, x))


def test_spectral_norm_power_iteration_gives_unit_singular_value():
  d1 = ResidualDiscriminator(**TINY)
  x = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype(np.float32)
  v = numpy_init(d1, x, seed=3)
  # kernels 3x He scale: every sigma(W) is far from 1, so SN has something to correct
  v["params"] = jax.tree_util.tree_map_with_path(
      lambda path, a: a * 3.0 if path[-1].key == "kernel" else a, v["params"])
  pairs0 = sn_pairs(v)

  @jax.jit
  def run(params, bs):
    """(u, sigma) after 40 training calls (one power iteration each); output and collections of
    an eval call (train=False) with the given ``bs``. One compiled program for the whole test."""
    def body(_, bs):
      _, upd = d1.apply({"params": params, "batch_stats": bs}, x, train=True,
                        mutable=["batch_stats"])
      return upd["batch_stats"]
    out, upd = d1.apply({"params": params, "batch_stats": bs}, x, train=False,
                        mutable=["batch_stats"])
    return jax.lax.fori_loop(0, 40, body, bs), out, upd["batch_stats"]

  v = {"params": v["params"], "batch_stats": run(v["params"], v["batch_stats"])[0]}
  pairs = sn_pairs(v)
  assert len(pairs) == 14                      # stem, 4 x (2 block convs + 1 conv), fc
  for (kernel, sigma), (_, sigma0) in zip(pairs, pairs0):
    w = kernel.reshape(-1, kernel.shape[-1])  # [kh * kw * in, out]
    true_sigma = np.linalg.svd(w, compute_uv=False)[0]
    assert sigma0 == 1.0 and true_sigma > 2.0
    assert sigma == pytest.approx(true_sigma, rel=0.02)
    # the effective normalised weight W / sigma has largest singular value 1
    assert np.linalg.svd(w / sigma, compute_uv=False)[0] == pytest.approx(1.0, abs=0.02)

  _, out, bs_eval = run(v["params"], v["batch_stats"])
  # eval (train=False) leaves u and sigma untouched
  for a, b in zip(jax.tree.leaves(bs_eval), jax.tree.leaves(v["batch_stats"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # W / sigma(W) is applied in the forward pass: scaling every kernel changes nothing
  scaled = jax.tree_util.tree_map_with_path(
      lambda path, a: a * 7.0 if path[-1].key == "kernel" else a, v["params"])
  _, out_scaled, _ = run(scaled, v["batch_stats"])
  np.testing.assert_allclose(np.asarray(out_scaled), np.asarray(out), rtol=1e-4, atol=1e-4)
  assert np.std(np.asarray(out)) > 1e-3


# ---------------------------------------------------------------------------------- G2 / D2
def test_unet_shapes_blocks_linear_output_and_skip_connections():
  g2 = HeatmapUNet(out_channels=20, **TINY)
  x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  v = numpy_init(g2, x)
  p = flat(v["params"])
  # 16 residual blocks: 4 encoder and 4 decoder groups of 2 (§3.2.1)
  assert len(block_names(v["params"], "enc")) == 8 and len(block_names(v["params"], "dec")) == 8
  # decoder group j (resolution of encoder group g = 3 - j) reads [upsampled, skip_g]
  widths = [4, 8, 16, 16]
  for j in range(4):
    g = 3 - j
    cin = p[f"dec{j}_block0/conv1/conv/kernel"].shape[2]
    assert cin == widths[min(g + 1, 3)] + widths[g], (j, cin)
    assert p[f"dec{j}_block0/proj/conv/kernel"].shape[2] == cin

  apply = jax.jit(lambda params: g2.apply({**v, "params": params}, x))
  y = np.asarray(apply(v["params"]))
  assert y.shape == (2, 32, 32, 20) and y.dtype == jnp.float32
  assert y.min() < -1e-3 and y.max() > 1e-3     # linear, not squashed
  # zero the kernel rows that read skip_0 (full-resolution encoder features) in the last decoder
  # group: the output changes, so the skip connection carries signal
  def cut(path, a):
    name = "/".join(str(q.key) for q in path)
    if name in ("dec3_block0/conv1/conv/kernel", "dec3_block0/proj/conv/kernel"):
      a = np.array(a)
      a[:, :, -widths[0]:, :] = 0.0
    return a
  y_cut = apply(jax.tree_util.tree_map_with_path(cut, v["params"]))
  assert np.max(np.abs(np.asarray(y_cut) - y)) > 1e-3

  # HR-LD at 128 x 128, and D2 on heatmaps ⊕ image
  assert jax.eval_shape(g2.apply, v, jnp.zeros((1, 128, 128, 3))).shape == (1, 128, 128, 20)
  xd = jnp.zeros((2, 32, 32, 23))
  vd = jax.eval_shape(lambda: g2.init(KEY, xd))
  assert vd["params"]["stem"]["conv"]["kernel"].shape[2] == 23
  assert jax.eval_shape(g2.apply, vd, xd).shape == (2, 32, 32, 20)
  with pytest.raises(ValueError, match="divisible by 16"):
    jax.eval_shape(lambda: g2.init(KEY, jnp.zeros((1, 24, 24, 3))))
