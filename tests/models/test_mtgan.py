"""Tests for jaxdet.models.mtgan: Table 1 geometry and parameter count, init of §4.2, the forward
pass against a numpy re-implementation, discriminator heads and the ablation switches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.losses import mtgan as L
from jaxdet.models.mtgan import Discriminator, Generator
from jaxdet.models.resnet import ResNet

KEY = jax.random.key(0)


def shapes_of(module, x, **kw):
  return jax.eval_shape(lambda: module.init(KEY, x, **kw))


def leaves_by_name(tree, name):
  out = []
  jax.tree_util.tree_map_with_path(
      lambda p, v: out.append(v) if p[-1].key == name else None, tree)
  return out


def n_params(tree):
  return int(sum(np.prod(v.shape) for v in jax.tree_util.tree_leaves(tree)))


# ---------------------------------------------------------------------------------- generator
def test_generator_16_to_64_and_tanh_range():
  g = Generator(features=8, up_features=16, num_blocks=2)
  x = jax.random.normal(KEY, (2, 16, 16, 3)) * 3.0
  variables = jax.jit(g.init)(KEY, x)
  y = jax.jit(g.apply)(variables, x)
  assert y.shape == (2, 64, 64, 3) and y.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(y))) <= 1.0
  # non-square, other sizes: always x4
  assert jax.eval_shape(lambda v: g.apply(v, jnp.zeros((1, 12, 20, 3))), variables).shape == (1, 48, 80, 3)


def test_paper_generator_parameter_count_from_table1():
  # Table 1 (generator) + §3.2, layer by layer: conv kernel k*k*in*out + bias out;
  # BN (scale, bias) 2*C; PReLU one shared slope. Input 3 channels (RGB).
  conv_in = 9 * 9 * 3 * 64 + 64 + 1                      # conv 9x9/64 + PReLU
  block = 2 * (3 * 3 * 64 * 64 + 64) + 2 * (2 * 64) + 1  # conv 3x3/64 + BN + PReLU + conv 3x3/64 + BN
  conv_mid = 3 * 3 * 64 * 64 + 64 + 2 * 64               # conv 3x3/64 + BN
  deconv1 = 3 * 3 * 64 * 256 + 256 + 1                   # de-conv 3x3/256, 2x + PReLU
  deconv2 = 3 * 3 * 256 * 256 + 256 + 1                  # de-conv 3x3/256, 2x + PReLU
  conv_out = 9 * 9 * 256 * 3 + 3                         # conv 9x9/3
  want = conv_in + 5 * block + conv_mid + deconv1 + deconv2 + conv_out
  assert want == 1_223_243

  v = shapes_of(Generator(), jnp.zeros((1, 16, 16, 3)))
  assert n_params(v["params"]) == want
  # BN running statistics (not trainable): 11 BN layers x 64 channels x (mean, var)
  assert n_params(v["batch_stats"]) == 11 * 64 * 2
  p = v["params"]
  # (kernel size, kernel number) of every conv layer in order, as Table 1 lists them
  layers = ([p["conv_in"]] + [p[f"block{b}"][c] for b in range(5) for c in ("conv1", "conv2")]
            + [p["conv_mid"], p["up1"]["deconv"], p["up2"]["deconv"], p["conv_out"]])
  got = [(k["kernel"].shape[0], k["bias"].shape[0]) for k in layers]
  assert got == [(9, 64)] + [(3, 64)] * 10 + [(3, 64), (3, 256), (3, 256), (9, 3)]
  out = jax.eval_shape(lambda v: Generator().apply(v, jnp.zeros((4, 16, 16, 3))), v)
  assert out.shape == (4, 64, 64, 3)


def test_generator_init_statistics():
  # up_features=256 as in the paper makes 'up2/deconv' a 3*3*256*256 = 589,824-weight kernel.
  g = Generator(features=8, up_features=256, num_blocks=1)
  v = jax.jit(g.init)(KEY, jnp.zeros((1, 4, 4, 3)))
  p = v["params"]
  big = np.asarray(p["up2"]["deconv"]["kernel"])
  assert big.size == 589_824
  assert abs(big.std() - 0.02) < 0.0005 and abs(big.mean()) < 0.0005
  kernels = np.concatenate([np.ravel(k) for k in leaves_by_name(p, "kernel")])
  assert abs(kernels.std() - 0.02) < 0.0005
  for b in leaves_by_name(p, "bias"):  # conv / de-conv biases and BN biases
    np.testing.assert_array_equal(b, 0.0)
  for s in leaves_by_name(p, "scale"):
    np.testing.assert_array_equal(s, 1.0)
  alphas = leaves_by_name(p, "alpha")
  assert len(alphas) == 4 and all(a.shape == () and float(a) == 0.25 for a in alphas)


# numpy re-implementation of the documented architecture --------------------------------
def np_conv(x, w, b):
  k = w.shape[0]
  p = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  h, wd = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (w.shape[-1],))
  for i in range(k):
    for j in range(k):
      out += xp[:, i:i + h, j:j + wd] @ w[i, j]
  return out + b


def np_deconv(x, w, b):
  """PyTorch ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1): each input pixel
  (i, j) adds x[i, j] @ W[a, b] at output (2i - 1 + a, 2j - 1 + b); w is [3, 3, out, in]."""
  n, h, wd, _ = x.shape
  out = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[2]))
  for a in range(3):
    for c in range(3):
      out[:, a:a + 2 * h:2, c:c + 2 * wd:2] += x @ w[a, c].T
  return out[:, 1:2 * h + 1, 1:2 * wd + 1] + b


def np_bn(x, prm, st):
  return (x - st["mean"]) / np.sqrt(st["var"] + 1e-5) * prm["scale"] + prm["bias"]


def np_prelu(x, a):
  return np.where(x >= 0, x, a * x)


def np_generator(x, p, s, num_blocks, long_skip):
  c = lambda q, y: np_conv(y, q["kernel"], q["bias"])
  y = np_prelu(c(p["conv_in"], x), p["prelu_in"]["alpha"])
  skip = y
  for i in range(num_blocks):
    bp, bs = p[f"block{i}"], s[f"block{i}"]
    z = np_prelu(np_bn(c(bp["conv1"], y), bp["norm1"], bs["norm1"]), bp["prelu"]["alpha"])
    y = y + np_bn(c(bp["conv2"], z), bp["norm2"], bs["norm2"])
  y = np_bn(c(p["conv_mid"], y), p["norm_mid"], s["norm_mid"])
  if long_skip:
    y = y + skip
  for u in ("up1", "up2"):
    y = np_prelu(np_deconv(y, p[u]["deconv"]["kernel"], p[u]["deconv"]["bias"]), p[u]["prelu"]["alpha"])
  return np.tanh(c(p["conv_out"], y))


def random_variables(shapes, rng):
  fill = {"kernel": lambda s: rng.normal(size=s) * 0.25, "bias": lambda s: rng.normal(size=s) * 0.1,
          "scale": lambda s: rng.uniform(0.5, 1.5, s), "mean": lambda s: rng.normal(size=s) * 0.1,
          "var": lambda s: rng.uniform(0.5, 2.0, s), "alpha": lambda s: rng.uniform(0.1, 0.4, s)}
  return jax.tree_util.tree_map_with_path(
      lambda p, v: np.asarray(fill[p[-1].key](v.shape), np.float32), shapes)


@pytest.mark.parametrize("long_skip", [True, False])
def test_generator_forward_matches_numpy(long_skip):
  g = Generator(features=4, up_features=5, num_blocks=2, long_skip=long_skip)
  x = np.random.default_rng(1).normal(size=(2, 3, 4, 3)).astype(np.float32)
  v = random_variables(shapes_of(g, x), np.random.default_rng(2))
  want = np_generator(x.astype(np.float64), v["params"], v["batch_stats"], 2, long_skip)
  got = jax.jit(g.apply)(v, x)
  assert got.shape == (2, 12, 16, 3)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_generator_train_mode_updates_batch_stats_and_bf16():
  g = Generator(features=4, up_features=4, num_blocks=1)
  gb = Generator(features=4, up_features=4, num_blocks=1, dtype=jnp.bfloat16)
  lin = Generator(features=4, up_features=4, num_blocks=1, output="linear")
  x = jax.random.normal(KEY, (2, 4, 4, 3))
  v = jax.jit(g.init)(KEY, x)

  @jax.jit
  def run(v, x):
    _, new = g.apply(v, x, train=True, mutable=["batch_stats"])
    # float32 params shared by the float32, bfloat16 and linear-output models
    return new, g.apply(v, x), gb.apply(v, x), lin.apply(v, x)

  new, y, yb, ylin = run(v, x)
  assert not np.allclose(new["batch_stats"]["norm_mid"]["var"], v["batch_stats"]["norm_mid"]["var"])
  assert yb.dtype == jnp.float32 and yb.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(yb, y, atol=0.05)
  np.testing.assert_allclose(np.tanh(ylin), y, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="output"):
    jax.eval_shape(lambda: Generator(output="sigmoid").init(KEY, x))


# ------------------------------------------------------------------------------ discriminator
def test_paper_discriminator_heads_shapes():
  for depth in (50, 101):
    d = Discriminator(num_classes=80, depth=depth)
    v = shapes_of(d, jnp.zeros((1, 64, 64, 3)))
    heads = {k: v["params"][k]["kernel"].shape for k in ("fc_gan", "fc_cls", "fc_reg")}
    assert heads == {"fc_gan": (2048, 1), "fc_cls": (2048, 81), "fc_reg": (2048, 4)}
    out = jax.eval_shape(lambda v: d.apply(v, jnp.zeros((5, 64, 64, 3))), v)
    assert {k: o.shape for k, o in out.items()} == {"adv": (5,), "cls": (5, 81), "reg": (5, 4)}
    # the trunk is exactly the standard ResNet, under 'backbone/' (weights.py layout)
    trunk = shapes_of(ResNet(depth=depth), jnp.zeros((1, 64, 64, 3)))
    for col in ("params", "batch_stats"):
      assert jax.tree_util.tree_structure(v[col]["backbone"]) == jax.tree_util.tree_structure(trunk[col])
      assert n_params(v[col]["backbone"]) == n_params(trunk[col])
    assert set(v["params"]) == {"backbone", "fc_gan", "fc_cls", "fc_reg"}


def test_discriminator_heads_are_fc_on_pooled_c5_with_normal_01_init():
  d = Discriminator(num_classes=199, depth=18, width=8)
  x = jax.random.normal(KEY, (3, 64, 64, 3))
  v = jax.jit(d.init)(KEY, x)
  p = v["params"]
  kernels = np.concatenate([np.ravel(p[k]["kernel"]) for k in ("fc_gan", "fc_cls", "fc_reg")])
  assert kernels.size == 64 * (1 + 200 + 4)
  assert abs(kernels.std() - 0.1) < 0.004 and abs(kernels.mean()) < 0.004
  for k in ("fc_gan", "fc_cls", "fc_reg"):
    np.testing.assert_array_equal(p[k]["bias"], 0.0)
  # heads = dense layers on the global average of C5
  bias = {k: np.random.default_rng(0).normal(size=p[k]["bias"].shape).astype(np.float32)
          for k in ("fc_gan", "fc_cls", "fc_reg")}
  p = {**p, **{k: {**p[k], "bias": bias[k]} for k in bias}}
  v = {**v, "params": p}
  out = jax.jit(d.apply)(v, x)
  trunk = {c: {"backbone": v[c]["backbone"]} for c in v if "backbone" in v[c]}
  c5 = jax.jit(ResNet(depth=18, width=8).apply)({c: t["backbone"] for c, t in trunk.items()}, x)["C5"]
  assert c5.shape == (3, 2, 2, 64)
  pooled = np.asarray(c5, np.float64).mean(axis=(1, 2))
  for key, name in (("adv", "fc_gan"), ("cls", "fc_cls"), ("reg", "fc_reg")):
    want = pooled @ np.asarray(p[name]["kernel"], np.float64) + bias[name]
    np.testing.assert_allclose(out[key], want.squeeze(-1) if key == "adv" else want, rtol=1e-4, atol=1e-5)


def test_discriminator_ablation_flags_remove_heads():
  x = jnp.zeros((2, 64, 64, 3))
  for adv, reg in ((False, True), (True, False), (False, False)):
    d = Discriminator(num_classes=3, depth=18, width=4, adv_branch=adv, reg_branch=reg)
    v = shapes_of(d, x)
    out = jax.eval_shape(lambda v: d.apply(v, x), v)
    assert set(out) == {"cls"} | ({"adv"} if adv else set()) | ({"reg"} if reg else set())
    assert ("fc_gan" in v["params"]) == adv and ("fc_reg" in v["params"]) == reg
    assert out["cls"].shape == (2, 4)


# ------------------------------------------------------------------- the two nets and the losses
def test_end_to_end_gradients_finite_and_flow_to_both_nets():
  g = Generator(features=4, up_features=4, num_blocks=1)
  d = Discriminator(num_classes=2, depth=18, width=4)  # frozen BN: identity at init
  rng = np.random.default_rng(0)
  # 4 x 4 -> 16 x 16 keeps this fast; the networks are size-agnostic (C5 is 1 x 1 here)
  lr = jnp.asarray(rng.uniform(-1, 1, (3, 4, 4, 3)), jnp.float32)
  hr = jnp.asarray(rng.uniform(-1, 1, (3, 16, 16, 3)), jnp.float32)
  labels = jnp.asarray([2, 0, -1], jnp.int32)
  valid = jnp.asarray([True, True, False])
  targets = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  gv, dv = jax.jit(g.init)(KEY, lr), jax.jit(d.init)(KEY, hr)

  def g_loss(gp):
    sr, _ = g.apply({**gv, "params": gp}, lr, train=True, mutable=["batch_stats"])
    return L.generator_loss(d.apply(dv, sr), sr, hr, labels, targets, valid=valid)[0]

  def d_loss(dp):
    sr = jax.lax.stop_gradient(g.apply(gv, lr))
    both = d.apply({**dv, "params": dp}, jnp.concatenate([hr, sr]))  # one D pass: real + fake
    d_hr, d_sr = ({k: o[:3] for k, o in both.items()}, {k: o[3:] for k, o in both.items()})
    return L.discriminator_loss(d_hr, d_sr, labels, targets, valid=valid)[0]

  @jax.jit
  def grads(gp, dp):
    return jax.value_and_grad(g_loss)(gp), jax.value_and_grad(d_loss)(dp)

  (lg, gg), (ld, gd) = grads(gv["params"], dv["params"])
  assert np.isfinite(float(lg)) and np.isfinite(float(ld))
  for tree in (gg, gd):
    flat = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])
    assert np.isfinite(flat).all() and np.abs(flat).max() > 0
  assert np.abs(gg["conv_in"]["kernel"]).max() > 0 and np.abs(gd["fc_gan"]["kernel"]).max() > 0


def test_subpixel_deconv_equals_the_transposed_convolution():
  """SubPixelDeconv computes nn.ConvTranspose(3x3, stride 2, torch padding 1 / output_padding 1)
  with the same kernel, to float rounding."""
  import flax.linen as nn
  from jaxdet.models.mtgan import SubPixelDeconv
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 7, 4))
  ref_layer = nn.ConvTranspose(5, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                               transpose_kernel=True)
  params = ref_layer.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(2), a.shape), params)
  want = ref_layer.apply(params, x)
  got = SubPixelDeconv(5).apply(params, x)
  assert got.shape == want.shape == (2, 12, 14, 5)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
