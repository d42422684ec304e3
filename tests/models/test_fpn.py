"""Tests for jaxdet.models.fpn: level shapes for odd sizes and numerics vs numpy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.fpn import FPN

KEY = jax.random.key(0, impl="rbg")


def np_conv(x, w, b, stride=1, pad=0):
    """Plain numpy NHWC x HWIO convolution with symmetric zero padding and bias."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, _, o = w.shape
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, o)) + b
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            out += patch @ w[i, j].astype(np.float64)
    return out


def backbone_like(h, w, rng=None, channels=(3, 5, 6, 7), batch=1):
    """Fake C2..C5 with the ResNet geometry ceil(H / 2**l)."""
    feats = {}
    for l, c in zip(range(2, 6), channels):
        shape = (batch, math.ceil(h / 2**l), math.ceil(w / 2**l), c)
        feats[f"C{l}"] = np.zeros(shape, np.float32) if rng is None else rng.normal(size=shape).astype(np.float32)
    return feats


@pytest.mark.parametrize("min_level,max_level", [(3, 7), (2, 5), (2, 6), (3, 6), (2, 7), (3, 5)])
def test_level_shapes(min_level, max_level):
    fpn = FPN(min_level, max_level, filters=8)
    for h, w in [(65, 97), (33, 17), (64, 64), (1, 1), (129, 7)]:
        feats = backbone_like(h, w)
        v = jax.eval_shape(fpn.init, KEY, feats)
        out = jax.eval_shape(fpn.apply, v, feats)
        assert sorted(out) == list(range(min_level, max_level + 1))
        for l, p in out.items():
            assert p.shape == (1, math.ceil(h / 2**l), math.ceil(w / 2**l), 8), (h, w, l)


def test_matches_numpy_reference_odd_size():
    rng = np.random.default_rng(0)
    h, w = 75, 45  # C3 10x6, C4 5x3, C5 3x2: every top-down step needs a crop
    feats = backbone_like(h, w, rng, batch=2)
    fpn = FPN(2, 7, filters=4)
    v = jax.eval_shape(fpn.init, KEY, feats)
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32) * 0.3, v["params"])
    out = fpn.apply({"params": params}, feats)

    def conv(name, x, stride=1):
        k = params[name]["kernel"]
        return np_conv(x, k, params[name]["bias"], stride, (k.shape[0] - 1) // 2)

    def up(m, hh, ww):  # nearest: target pixel (y, x) reads source (y // 2, x // 2)
        ys, xs = np.arange(hh) // 2, np.arange(ww) // 2
        return m[:, ys][:, :, xs]

    merged = {5: conv("lateral5", feats["C5"])}
    for l in (4, 3, 2):
        lat = conv(f"lateral{l}", feats[f"C{l}"])
        merged[l] = lat + up(merged[l + 1], lat.shape[1], lat.shape[2])
    ref = {l: conv(f"output{l}", merged[l]) for l in (2, 3, 4, 5)}
    ref[6] = conv("p6", feats["C5"], 2)
    ref[7] = conv("p7", np.maximum(ref[6], 0), 2)
    for l in range(2, 8):
        np.testing.assert_allclose(np.asarray(out[l]), ref[l], rtol=1e-4, atol=1e-4)


def test_bfloat16_and_param_dtype():
    feats = backbone_like(33, 17, np.random.default_rng(1))
    fpn = FPN(3, 7, filters=8, dtype=jnp.bfloat16)
    v = jax.eval_shape(fpn.init, KEY, feats)
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(v))
    out = jax.eval_shape(fpn.apply, v, feats)
    assert all(p.dtype == jnp.bfloat16 for p in out.values())


def test_invalid_levels_and_missing_features():
    feats = backbone_like(32, 32)
    for lo, hi in [(1, 7), (4, 7), (3, 8), (3, 4)]:
        with pytest.raises(ValueError, match="level"):
            jax.eval_shape(FPN(lo, hi, 8).init, KEY, feats)
    del feats["C2"]
    with pytest.raises(ValueError, match="C2"):
        jax.eval_shape(FPN(2, 7, 8).init, KEY, feats)
