"""Tests for jaxdet.models.retinanet: shapes, anchor order, prior init, dtypes, jit + grad."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import retinanet as retinanet_lib
from jaxdet.models.retinanet import RetinaNet, RetinaNetHead
from jaxdet.ops import anchors as anchor_lib

KEY = jax.random.key(0, impl="rbg")
C, K = 3, 9
TINY = dict(num_classes=C, num_anchors=K, depth=18, width=8, fpn_filters=16, head_convs=2, head_filters=32)


def anchors_formula(h, w, k=K, levels=range(3, 8)):
  return sum(math.ceil(h / 2**l) * math.ceil(w / 2**l) * k for l in levels)


def fill_variables(shapes, rng):
  """He-normal kernels, identity norms, zero biases for an eval_shape'd variables tree."""
  fill = {"kernel": lambda s: rng.normal(size=s) * np.sqrt(2.0 / np.prod(s[:-1])), "scale": np.ones,
          "bias": np.zeros, "mean": np.zeros, "var": np.ones}
  return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(fill[p[-1].key](s.shape), jnp.float32), shapes)


@pytest.fixture(scope="module")
def tiny():
  """Backbone and FPN filled by hand (compiling the random initializers of the whole
  model dominates CPU test time): He-normal kernels, identity frozen BN, zero biases.
  The head comes from RetinaNetHead's real initializers."""
  model = RetinaNet(**TINY)
  shapes = jax.eval_shape(model.init, KEY, jnp.zeros((1, 64, 64, 3)))
  v = fill_variables(shapes, np.random.default_rng(0))
  head = RetinaNetHead(C, K, TINY["head_convs"], TINY["head_filters"])
  feats = {l: jnp.zeros((1, 2, 2, TINY["fpn_filters"])) for l in range(3, 8)}
  v["params"]["head"] = jax.jit(head.init)(KEY, feats)["params"]
  assert jax.tree.structure(v) == jax.tree.structure(shapes)
  return model, v


def test_output_shapes_many_sizes():
  model = RetinaNet(**TINY)
  v = jax.eval_shape(model.init, KEY, jnp.zeros((1, 32, 32, 3)))
  for h, w in [(65, 97), (96, 96), (33, 17), (1, 1), (95, 31)]:
    a = anchors_formula(h, w)
    assert len(anchor_lib.generate_anchors((h, w))) == a
    out = jax.eval_shape(model.apply, v, jnp.zeros((2, h, w, 3)))
    assert out["cls_logits"].shape == (2, a, C) and out["box_deltas"].shape == (2, a, 4)
    assert out["cls_logits"].dtype == jnp.float32
  m2 = RetinaNet(**{**TINY, "min_level": 2, "max_level": 5})
  v2 = jax.eval_shape(m2.init, KEY, jnp.zeros((1, 32, 32, 3)))
  out = jax.eval_shape(m2.apply, v2, jnp.zeros((1, 65, 97, 3)))
  a = anchors_formula(65, 97, K, range(2, 6))
  assert len(anchor_lib.generate_anchors((65, 97), 2, 5)) == a
  assert out["cls_logits"].shape == (1, a, C)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_odd_size_both_dtypes_and_prior(tiny, dtype):
  _, v = tiny  # params are float32 and do not depend on dtype or image size
  model = RetinaNet(**TINY, dtype=dtype)
  x = np.random.default_rng(0).normal(size=(2, 65, 97, 3)).astype(np.float32)
  x[1] = 0.0  # second image all zeros: see the prior check below
  out = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(v, jnp.asarray(x))
  a = anchors_formula(65, 97)
  assert out["cls_logits"].shape == (2, a, C) and out["box_deltas"].shape == (2, a, 4)
  for k in ("cls_logits", "box_deltas"):
    assert out[k].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out[k])))
  shapes = anchor_lib.feature_shapes((65, 97), 3, 7)
  for name in ("fpn_features", "cls_features", "box_features"):
    assert sorted(out[name]) == [3, 4, 5, 6, 7]
    assert [f.shape[1:3] for _, f in sorted(out[name].items())] == shapes
    assert all(f.dtype == dtype for f in out[name].values())
  if dtype == jnp.float32:
    check_order_matches_anchors(v["params"]["head"], out, (65, 97))
  # zero image: backbone convs have no bias and frozen BN starts as identity, FPN bias 0,
  # so every head input is 0 and every logit equals the prior bias exactly
  # (bfloat16 rounds the bias: -4.595 -> -4.59375, sigmoid 0.010012)
  np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(out["cls_logits"][1])), 0.01, rtol=1e-6 if dtype == jnp.float32 else 2e-3)
  np.testing.assert_array_equal(np.asarray(out["box_deltas"][1]), 0.0)
  assert float(jnp.std(out["cls_logits"][0])) > 0.0


def test_prior_bias_and_init(tiny):
  _, v = tiny
  head = v["params"]["head"]
  b = -math.log((1 - 0.01) / 0.01)
  np.testing.assert_array_equal(np.asarray(head["cls_logits"]["bias"]), np.full(K * C, b, np.float32))
  np.testing.assert_array_equal(np.asarray(head["box_deltas"]["bias"]), 0.0)
  np.testing.assert_array_equal(np.asarray(head["cls_conv0"]["bias"]), 0.0)
  kernels = np.concatenate([np.ravel(head[n]["kernel"]) for n in ("cls_conv0", "cls_conv1", "box_conv0", "box_conv1")])
  assert abs(kernels.std() - 0.01) < 0.001 and abs(kernels.mean()) < 0.001


def check_order_matches_anchors(head, out, hw, levels=(3, 7)):
  """Entry i of the concatenated head outputs is the prediction for anchor i of generate_anchors:
  level l's slice of the outputs (level_slices) is that level's final conv reshaped (y, x, anchor),
  and the same slice of the anchors is centred on that level's grid in the same (y, x) order."""
  anchors = anchor_lib.generate_anchors(hw, *levels)
  slices = anchor_lib.level_slices(hw, *levels, K)
  assert out["cls_logits"].shape[1] == out["box_deltas"].shape[1] == len(anchors) == slices[-1][1]
  for level, (fh, fw), (start, stop) in zip(range(levels[0], levels[1] + 1),
                                            anchor_lib.feature_shapes(hw, *levels), slices):
    stride = 2.0 ** level
    centres = (anchors[start:stop, :2] + anchors[start:stop, 2:]).reshape(fh, fw, K, 2) / 2
    cy, cx = np.meshgrid((np.arange(fh) + 0.5) * stride, (np.arange(fw) + 0.5) * stride, indexing="ij")
    np.testing.assert_allclose(centres, np.broadcast_to(np.stack([cx, cy], -1)[:, :, None], centres.shape), atol=1e-3)
    for key, name, n in (("cls_logits", "cls", C), ("box_deltas", "box", 4)):
      raw = np_conv3x3(np.asarray(out[f"{name}_features"][level]), np.asarray(head[key]["kernel"]),
                       np.asarray(head[key]["bias"]))
      np.testing.assert_allclose(np.asarray(out[key][:, start:stop]), raw.reshape(raw.shape[0], fh * fw * K, n),
                                 rtol=1e-4, atol=1e-4)


def np_conv3x3(x, w, b):
  x = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  hh, ww = x.shape[1] - 2, x.shape[2] - 2
  out = np.zeros((x.shape[0], hh, ww, w.shape[-1])) + b
  for i in range(3):
    for j in range(3):
      out += x[:, i : i + hh, j : j + ww] @ w[i, j].astype(np.float64)
  return out


@pytest.mark.parametrize("norm", [None, "group_norm"])
def test_head_order_is_level_y_x_anchor(norm):
  rng = np.random.default_rng(1)
  feats = {3: rng.normal(size=(2, 5, 3, 8)), 4: rng.normal(size=(2, 3, 2, 8)), 5: rng.normal(size=(2, 2, 1, 8))}
  feats = {l: f.astype(np.float32) for l, f in feats.items()}
  head = RetinaNetHead(num_classes=2, num_anchors=3, num_convs=2, filters=8, norm=norm)
  v = jax.eval_shape(head.init, KEY, feats)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32) * 0.3, v["params"])
  assert ("cls_norm1" in params) == (norm == "group_norm")
  out = head.apply({"params": params}, feats)
  for key, name, n in (("cls_logits", "cls", 2), ("box_deltas", "box", 4)):
    res = np.asarray(out[key])
    idx = 0
    for l in (3, 4, 5):
      raw = np_conv3x3(np.asarray(out[f"{name}_features"][l]), params[key]["kernel"], params[key]["bias"])
      for y in range(raw.shape[1]):
        for x in range(raw.shape[2]):
          for a in range(3):
            np.testing.assert_allclose(res[:, idx], raw[:, y, x, a * n : (a + 1) * n], rtol=1e-4, atol=1e-4)
            idx += 1
    assert idx == res.shape[1]


def test_invalid_arguments():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="head norm"):
    jax.eval_shape(RetinaNet(**TINY, head_norm="batch_norm").init, KEY, x)
  with pytest.raises(ValueError, match="NHWC"):
    jax.eval_shape(RetinaNet(**TINY).init, KEY, jnp.zeros((1, 3, 32, 32)))
  with pytest.raises(ValueError, match="prior_prob"):
    jax.eval_shape(RetinaNet(**TINY, prior_prob=1.0).init, KEY, x)


def test_fpn_maps_checked_against_anchor_grid(monkeypatch):
  """The model compares its FPN maps with jaxdet.ops.anchors.feature_shapes (the grid the
  anchors are built on); a grid that disagrees is an error, not silently misaligned outputs."""
  floor_shapes = lambda hw, lo, hi: [(hw[0] // 2**l, hw[1] // 2**l) for l in range(lo, hi + 1)]
  monkeypatch.setattr(retinanet_lib, "feature_shapes", floor_shapes)
  with pytest.raises(ValueError, match="anchor grid"):
    jax.eval_shape(RetinaNet(**TINY).init, KEY, jnp.zeros((1, 65, 97, 3)))


def test_jit_forward_loss_backward_compiles_once_frozen_stages():
  """batch_norm in train mode, frozen_stages=1: one compilation for two batches; finite
  gradients; stem/stage1 get exactly zero gradients and keep their running statistics."""
  model = RetinaNet(**{**TINY, "norm": "batch_norm", "frozen_stages": 1})
  v = fill_variables(jax.eval_shape(model.init, KEY, jnp.zeros((1, 32, 32, 3))), np.random.default_rng(3))
  traces = []

  @jax.jit
  def grad_fn(params, batch_stats, images):
    traces.append(1)

    def loss(p):
      out, upd = model.apply({"params": p, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"])
      return jnp.sum(out["cls_logits"]) + jnp.sum(jnp.square(out["box_deltas"])), upd["batch_stats"]

    return jax.value_and_grad(loss, has_aux=True)(params)

  rng = np.random.default_rng(2)
  for _ in range(2):
    x = jnp.asarray(rng.normal(size=(2, 48, 40, 3)), jnp.float32)
    (loss, stats), g = grad_fn(v["params"], v["batch_stats"], x)
  assert len(traces) == 1
  assert bool(jnp.isfinite(loss)) and all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
  gmax = lambda t: max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(t))
  assert gmax(g["backbone"]["stem"]) == 0.0 and gmax(g["backbone"]["stage1"]) == 0.0
  for part in (g["backbone"]["stage2"], g["backbone"]["stage4"], g["fpn"], g["head"]):
    assert gmax(part) > 0.0
  same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), v["batch_stats"]["backbone"], stats["backbone"])
  assert all(jax.tree.leaves(same["stem"])) and all(jax.tree.leaves(same["stage1"]))
  assert not any(jax.tree.leaves(same["stage2"]))
