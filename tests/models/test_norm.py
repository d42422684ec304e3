"""Tests for jaxdet.models.norm against plain-numpy formulas."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.norm import NORM_KINDS, FrozenBatchNorm, GroupNorm, make_norm, num_groups_for

KEY = jax.random.key(0, impl="rbg")


def _random_stats(rng, c):
    return {
        "mean": rng.normal(size=c).astype(np.float32),
        "var": rng.uniform(0.1, 3.0, size=c).astype(np.float32),
        "scale": rng.normal(size=c).astype(np.float32),
        "bias": rng.normal(size=c).astype(np.float32),
    }


def test_frozen_bn_matches_formula_and_has_no_params():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 6)).astype(np.float32)
    layer = FrozenBatchNorm()
    v = layer.init(KEY, x)
    assert set(v) == {"batch_stats"}  # nothing in 'params': the optimizer never sees it
    np.testing.assert_array_equal(v["batch_stats"]["mean"], np.zeros(6))
    np.testing.assert_array_equal(v["batch_stats"]["var"], np.ones(6))
    st = _random_stats(rng, 6)
    y = np.asarray(layer.apply({"batch_stats": st}, x))
    ref = (x - st["mean"]) / np.sqrt(st["var"] + 1e-5) * st["scale"] + st["bias"]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # bfloat16 compute
    yb = FrozenBatchNorm(dtype=jnp.bfloat16).apply({"batch_stats": st}, x)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), ref, rtol=3e-2, atol=3e-2)


class _ConvNorm(nn.Module):
    kind: str
    train: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        return make_norm(self.kind, jnp.float32, self.train)(name="norm")(x)


def test_frozen_bn_not_in_param_gradients_and_stats_unchanged_in_train():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 6, 3)), jnp.float32)
    m = _ConvNorm("frozen_bn", train=True)
    v = jax.jit(m.init)(KEY, x)
    assert "norm" not in v["params"] and "norm" in v["batch_stats"]

    def loss(p):
        y, _ = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
        return jnp.sum(y**2)

    g = jax.grad(loss)(v["params"])
    assert set(g) == {"Conv_0"}
    _, upd = m.apply(v, x, mutable=["batch_stats"])
    for k in ("mean", "var", "scale", "bias"):
        np.testing.assert_array_equal(upd["batch_stats"]["norm"][k], v["batch_stats"]["norm"][k])


def test_batch_norm_train_updates_running_stats_eval_uses_them():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(4, 5, 5, 3)) * 2 + 1).astype(np.float32)
    m_train = make_norm("batch_norm", jnp.float32, train=True)()
    v = m_train.init(KEY, x)
    assert set(v["params"]) == {"scale", "bias"} and set(v["batch_stats"]) == {"mean", "var"}
    y, upd = m_train.apply(v, x, mutable=["batch_stats"])
    bm, bv = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * bm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * bv, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y, (x - bm) / np.sqrt(bv + 1e-5), rtol=1e-4, atol=1e-4)
    # eval mode normalises with the running statistics
    m_eval = make_norm("batch_norm", jnp.float32, train=False)()
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    y2 = m_eval.apply(v2, x)
    rm, rv = np.asarray(upd["batch_stats"]["mean"]), np.asarray(upd["batch_stats"]["var"])
    np.testing.assert_allclose(y2, (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c,groups", [(64, 32), (48, 24), (8, 8), (3, 3), (96, 32), (36, 18)])
def test_group_norm_matches_numpy(c, groups):
    assert num_groups_for(c) == groups
    rng = np.random.default_rng(c)
    x = (rng.normal(size=(2, 4, 3, c)) * 3 + 2).astype(np.float32)
    scale = rng.normal(size=c).astype(np.float32)
    bias = rng.normal(size=c).astype(np.float32)
    y = np.asarray(GroupNorm().apply({"params": {"scale": scale, "bias": bias}}, x))
    ref = np.empty_like(x)
    cg = c // groups
    for b in range(2):
        for g in range(groups):
            blk = x[b, :, :, g * cg : (g + 1) * cg].astype(np.float64)
            ref[b, :, :, g * cg : (g + 1) * cg] = (blk - blk.mean()) / np.sqrt(blk.var() + 1e-5)
    np.testing.assert_allclose(y, ref * scale + bias, rtol=1e-4, atol=1e-4)


def test_make_norm_group_norm_and_unknown_kind():
    layer = make_norm("group_norm", jnp.float32, train=True)()
    v = layer.init(KEY, jnp.ones((1, 2, 2, 16)))
    assert set(v) == {"params"} and v["params"]["scale"].shape == (16,)
    with pytest.raises(ValueError) as e:
        make_norm("layer_norm", jnp.float32, False)
    for kind in NORM_KINDS:
        assert kind in str(e.value)
