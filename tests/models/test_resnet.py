"""Tests for jaxdet.models.resnet: geometry, numerics vs numpy, parameter counts, freezing."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


from jaxdet.models.resnet import Bottleneck, ResNet, Stem, frozen_param_labels

KEY = jax.random.key(0, impl="rbg")


def np_conv(x, w, stride=1, pad=0, b=None):
    """Plain numpy NHWC x HWIO convolution with symmetric zero padding."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, _, o = w.shape
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, o))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            out += patch @ w[i, j].astype(np.float64)
    return out if b is None else out + b


def fill_variables(shapes, rng):
    """Concrete variables for an eval_shape'd tree (skips compiling the initializers, which
    dominates test time on CPU): He-normal kernels, identity norms, zero biases."""
    fill = {"kernel": lambda s: rng.normal(size=s) * np.sqrt(2.0 / np.prod(s[:-1])), "scale": np.ones,
            "bias": np.zeros, "mean": np.zeros, "var": np.ones}
    return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(fill[p[-1].key](s.shape), jnp.float32), shapes)


def np_bn(x, st):
    return (x - st["mean"]) / np.sqrt(st["var"] + 1e-5) * st["scale"] + st["bias"]


def _random_bn_stats(tree, rng):
    """Replace every frozen-BN stats dict with random values."""
    out = {}
    for k, v in tree.items():
        if set(v) == {"mean", "var", "scale", "bias"}:
            c = v["mean"].shape
            out[k] = {
                "mean": rng.normal(size=c).astype(np.float32) * 0.1,
                "var": rng.uniform(0.5, 2, size=c).astype(np.float32),
                "scale": rng.uniform(0.5, 1.5, size=c).astype(np.float32),
                "bias": rng.normal(size=c).astype(np.float32) * 0.1,
            }
        else:
            out[k] = _random_bn_stats(v, rng)
    return out


@pytest.mark.parametrize(
    "depth,width,mult,sizes",
    [(18, 8, 1, [(65, 97), (33, 47), (31, 17), (1, 1), (64, 64), (37, 5)]), (50, 4, 4, [(65, 97), (95, 3)])],
)
def test_feature_shapes_ceil_for_odd_sizes(depth, width, mult, sizes):
    m = ResNet(depth=depth, width=width)
    v = jax.eval_shape(m.init, KEY, jnp.zeros((1, 32, 32, 3)))
    for h, w in sizes:
        out = jax.eval_shape(m.apply, v, jnp.zeros((2, h, w, 3)))
        assert set(out) == {"C2", "C3", "C4", "C5"}
        for l in range(2, 6):
            expect = (2, math.ceil(h / 2**l), math.ceil(w / 2**l), width * mult * 2 ** (l - 2))
            assert out[f"C{l}"].shape == expect, (h, w, l)


def _count(tree, names=None):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return sum(int(np.prod(x.shape)) for p, x in leaves if names is None or p[-1].key in names)


@pytest.mark.parametrize("depth,expected", [(50, 23_508_032), (18, 11_176_512)])
def test_parameter_count_matches_torchvision(depth, expected):
    """torchvision resnet{50,18} without fc: conv weights + BN weight/bias (running stats are
    buffers, not parameters).  With 'batch_norm' these are exactly our 'params'; with
    'frozen_bn' the BN scale/bias live in 'batch_stats'."""
    x = jnp.zeros((1, 64, 64, 3))
    v = jax.eval_shape(ResNet(depth=depth, norm="batch_norm").init, KEY, x)
    assert _count(v["params"]) == expected
    v = jax.eval_shape(ResNet(depth=depth, norm="frozen_bn").init, KEY, x)
    assert _count(v["params"]) + _count(v["batch_stats"], ("scale", "bias")) == expected


def test_stem_matches_numpy_torchvision_padding():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 13, 10, 3)).astype(np.float32)
    stem = Stem(width=4)
    v = fill_variables(jax.eval_shape(stem.init, KEY, x, False), rng)
    v = {"params": v["params"], "batch_stats": _random_bn_stats(v["batch_stats"], rng)}
    y = np.asarray(stem.apply(v, x, False))
    r = np.maximum(np_bn(np_conv(x, np.asarray(v["params"]["conv"]["kernel"]), 2, 3), v["batch_stats"]["norm"]), 0)
    r = np.pad(r, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    oh, ow = (r.shape[1] - 3) // 2 + 1, (r.shape[2] - 3) // 2 + 1
    ref = np.full((1, oh, ow, 4), -np.inf)
    for i in range(oh):
        for j in range(ow):
            ref[:, i, j] = r[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
    assert y.shape == (1, 4, 3, 4)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_bottleneck_stride_on_3x3_matches_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 9, 7, 6)).astype(np.float32)
    blk = Bottleneck(planes=3, stride=2)
    v = fill_variables(jax.eval_shape(blk.init, KEY, x, False), rng)
    p, st = v["params"], _random_bn_stats(v["batch_stats"], rng)
    y = np.asarray(blk.apply({"params": p, "batch_stats": st}, x, False))
    k = lambda n: np.asarray(p[n]["kernel"])
    h = np.maximum(np_bn(np_conv(x, k("conv1")), st["norm1"]), 0)
    h = np.maximum(np_bn(np_conv(h, k("conv2"), 2, 1), st["norm2"]), 0)
    h = np_bn(np_conv(h, k("conv3")), st["norm3"])
    s = np_bn(np_conv(x, k("downsample_conv"), 2), st["downsample_norm"])
    ref = np.maximum(h + s, 0)
    assert y.shape == (2, 5, 4, 12)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_frozen_param_labels_with_multi_transform():
    params = jax.eval_shape(ResNet(depth=18, width=4, norm="batch_norm").init, KEY, jnp.zeros((1, 8, 8, 3)))
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), {"backbone": params["params"], "fpn": {"w": jnp.zeros(3)}})
    labels = frozen_param_labels(params, 1)
    flat = {"/".join(k.key for k in p): l for p, l in jax.tree_util.tree_leaves_with_path(labels)}
    assert all(l == "frozen" for k, l in flat.items() if k.startswith(("backbone/stem/", "backbone/stage1/")))
    assert all(l == "trainable" for k, l in flat.items() if not k.startswith(("backbone/stem/", "backbone/stage1/")))
    assert "frozen" in flat.values()
    assert set(jax.tree.leaves(frozen_param_labels(params, -1))) == {"trainable"}
    # weight decay never touches frozen params
    tx = optax.multi_transform({"trainable": optax.sgd(0.1), "frozen": optax.set_to_zero()}, labels)
    tx = optax.chain(optax.add_decayed_weights(0.5), tx)
    upd, _ = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p))(params)
    assert float(jnp.abs(upd["backbone"]["stem"]["conv"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(upd["backbone"]["stage2"]["block0"]["conv1"]["kernel"]).max()) > 0.0


def test_invalid_arguments():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="depth"):
        jax.eval_shape(ResNet(depth=42).init, KEY, x)
    with pytest.raises(ValueError, match="frozen_stages"):
        jax.eval_shape(ResNet(depth=18, frozen_stages=5).init, KEY, x)
    with pytest.raises(ValueError, match="frozen_stages"):
        frozen_param_labels({}, -2)


def test_group_norm_backbone_has_no_batch_stats():
    x = jnp.zeros((1, 16, 16, 3))
    v = jax.eval_shape(ResNet(depth=18, width=16, norm="group_norm").init, KEY, x)
    assert set(v) == {"params"}
    assert v["params"]["stage1"]["block0"]["norm1"]["scale"].shape == (16,)
    out = jax.eval_shape(ResNet(depth=18, width=16, norm="group_norm").apply, v, x)
    assert out["C5"].shape == (1, 1, 1, 128)
