"""Tests for jaxdet.models.weights: npz round trip and error messages."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.resnet import ResNet
from jaxdet.models.weights import flatten_weights, load_backbone_weights, save_params_npz

KEY = jax.random.key(0, impl="rbg")


def _variables(norm="frozen_bn", seed=0):
    """A detector-like variables dict {'params': {'backbone', 'fpn'}, 'batch_stats': {'backbone'}}."""
    v = jax.eval_shape(ResNet(depth=18, width=4, norm=norm).init, KEY, jnp.zeros((1, 16, 16, 3)))
    rng = np.random.default_rng(seed)
    v = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), v)
    out = {"params": {"backbone": v["params"], "fpn": {"lateral3": {"kernel": rng.normal(size=(1, 1, 8, 4)).astype(np.float32)}}}}
    out["batch_stats"] = {"backbone": v["batch_stats"]}
    return out


def _assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_key_layout_has_no_collection_prefix(tmp_path):
    v = _variables()
    save_params_npz(v, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as f:
        keys = set(f.keys())
    assert "backbone/stem/conv/kernel" in keys
    assert {"backbone/stem/norm/" + n for n in ("mean", "var", "scale", "bias")} <= keys
    assert "backbone/stage2/block0/downsample_conv/kernel" in keys
    assert "fpn/lateral3/kernel" in keys
    np.testing.assert_array_equal(
        np.load(tmp_path / "w.npz")["backbone/stage1/block1/conv2/kernel"],
        v["params"]["backbone"]["stage1"]["block1"]["conv2"]["kernel"],
    )


@pytest.mark.parametrize("norm", ["frozen_bn", "batch_norm"])
def test_round_trip_loads_backbone_only(tmp_path, norm):
    src, dst = _variables(norm, seed=0), _variables(norm, seed=1)
    save_params_npz(src, tmp_path / "w.npz")
    out = load_backbone_weights(dst, tmp_path / "w.npz")
    _assert_tree_equal(out["params"]["backbone"], src["params"]["backbone"])
    _assert_tree_equal(out["batch_stats"]["backbone"], src["batch_stats"]["backbone"])
    _assert_tree_equal(out["params"]["fpn"], dst["params"]["fpn"])  # outside the prefix: kept
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out))


def test_params_only_tree_round_trip(tmp_path):
    src, dst = _variables("batch_norm", 0)["params"], _variables("batch_norm", 1)["params"]
    save_params_npz({"backbone": src["backbone"]}, tmp_path / "w.npz")
    out = load_backbone_weights(dst, tmp_path / "w.npz")
    _assert_tree_equal(out["backbone"], src["backbone"])
    _assert_tree_equal(out["fpn"], dst["fpn"])


def _write(path, flat):
    np.savez(path, **{k: np.asarray(a) for k, a in flat.items()})


def test_mismatched_shape_error_names_key(tmp_path):
    v = _variables()
    flat = flatten_weights(v)
    flat["backbone/stage3/block0/conv1/kernel"] = np.zeros((3, 3, 1, 1), np.float32)
    _write(tmp_path / "w.npz", flat)
    with pytest.raises(ValueError, match="shape mismatch") as e:
        load_backbone_weights(v, tmp_path / "w.npz")
    assert "backbone/stage3/block0/conv1/kernel" in str(e.value) and "(3, 3, 1, 1)" in str(e.value)


def test_missing_and_unexpected_key_errors(tmp_path):
    v = _variables()
    flat = flatten_weights(v)
    del flat["backbone/stage4/block1/norm2/var"]
    flat["backbone/fc/kernel"] = np.zeros((2, 2), np.float32)
    _write(tmp_path / "w.npz", flat)
    with pytest.raises(ValueError) as e:
        load_backbone_weights(v, tmp_path / "w.npz")
    msg = str(e.value)
    assert "missing" in msg and "backbone/stage4/block1/norm2/var" in msg
    assert "backbone/fc/kernel" in msg


def test_frozen_bn_stats_need_variables_dict(tmp_path):
    v = _variables("frozen_bn")
    save_params_npz(v, tmp_path / "w.npz")
    with pytest.raises(ValueError, match="batch_stats"):
        load_backbone_weights(v["params"], tmp_path / "w.npz")


def test_no_keys_under_prefix(tmp_path):
    v = _variables()
    save_params_npz(v["params"]["backbone"], tmp_path / "w.npz")  # keys lack 'backbone/'
    with pytest.raises(ValueError, match="prefix"):
        load_backbone_weights(v, tmp_path / "w.npz")
