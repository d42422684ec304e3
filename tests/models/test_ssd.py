"""SSD network: SSD512's layer shapes, the output order against the default boxes, L2Norm."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.ssd import SSD, SSD512_EXTRAS
from jaxdet.models.vgg import L2Norm, VGG16
from jaxdet.ops import ssd_anchors

KEY = jax.random.PRNGKey(0)
# XLA:CPU compiles the initializers of a deep net ~8x faster with the RBG generator than with
# threefry (SSD at 32 px: 11 s vs 86 s), as RetinaNetExperiment.init does.
RBG_KEY = jax.random.wrap_key_data(jnp.arange(4, dtype=jnp.uint32), impl="rbg")


def _abstract(model, size):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(KEY, jnp.zeros(x.shape), train=False))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape), train=False), variables)
  return variables["params"], out


def test_vgg16_maps_at_512_and_300():
  """conv4_3 at stride 8 (pool3 in ceil mode: 300 -> 38), conv7 at 16 with 1024 channels."""
  for size, (s8, s16) in ((512, (64, 32)), (300, (38, 19))):
    _, out = _abstract(VGG16(), size)
    assert out["conv4_3"].shape == (1, s8, s8, 512)
    assert out["conv7"].shape == (1, s16, s16, 1024)


def test_ssd512_layers_and_output_count_match_the_reference():
  """SSD512 VOC: 7 source maps 64..1, 24,564 default boxes, the Caffe layer shapes."""
  layout = ssd_anchors.SSD512_VOC
  model = SSD(num_classes=21, anchors_per_location=layout.num_anchors_per_location,
              steps=layout.steps, softmax=True)
  params, out = _abstract(model, 512)
  assert out["cls_logits"].shape == (1, 24_564, 21) and out["box_deltas"].shape == (1, 24_564, 4)
  assert len(layout.anchors()) == 24_564
  b = params["backbone"]
  assert b["conv6"]["kernel"].shape == (3, 3, 512, 1024)      # fc6 -> dilated 3x3
  assert b["conv7"]["kernel"].shape == (1, 1, 1024, 1024)
  assert params["conv4_3_norm"]["scale"].shape == (512,)
  assert params["conv8_1"]["kernel"].shape == (1, 1, 1024, 256)
  assert params["conv8_2"]["kernel"].shape == (3, 3, 256, 512)
  assert params["conv12_2"]["kernel"].shape == (4, 4, 128, 256)
  in_channels = (512, 1024, 512, 256, 256, 256, 256)
  for k, (c, n) in enumerate(zip(in_channels, layout.num_anchors_per_location)):
    assert params[f"cls_logits_{k}"]["kernel"].shape == (3, 3, c, n * 21)
    assert params[f"box_deltas_{k}"]["kernel"].shape == (3, 3, c, n * 4)
  # torchvision's vgg16().features has 14,714,688 weights; conv6 3*3*512*1024 + 1024 and conv7
  # 1024*1024 + 1024 complete SSD's base.
  base = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(b))
  assert base == 14_714_688 + (3 * 3 * 512 * 1024 + 1024) + (1024 * 1024 + 1024)


def test_resnet50_variant_uses_c3_c4_c5_and_four_extras():
  layout = ssd_anchors.SSD512_COCO
  model = SSD(num_classes=80, anchors_per_location=layout.num_anchors_per_location,
              steps=layout.steps, backbone="resnet", extras=SSD512_EXTRAS[1:])
  params, out = _abstract(model, 512)
  assert out["cls_logits"].shape == (1, 24_564, 80)
  assert params["cls_logits_0"]["kernel"].shape[2] == 512      # C3
  assert params["cls_logits_2"]["kernel"].shape[2] == 2048     # C5
  assert "conv11_2" in params and "conv12_2" not in params


def test_output_order_is_the_default_box_order():
  """With zero kernels and bias b[k * C + c] = k * C + c, output row i carries the k of its
  location slot; it must be the k of default box i (its size is location_sizes()[k])."""
  size, steps, ratios = 32, (8, 16, 32), ((2.0,), (2.0, 3.0), (2.0,))
  mins, maxs = (8.0, 16.0, 24.0), (16.0, 24.0, 32.0)
  ks = ssd_anchors.num_anchors_per_location(ratios)
  model = SSD(num_classes=3, anchors_per_location=ks, steps=steps, extras=((8, 8, 3, 2, 1),),
              vgg_width=1 / 64)
  x = jnp.ones((1, size, size, 3))
  params = jax.jit(model.init)(RBG_KEY, x)["params"]
  for k, n in enumerate(ks):
    params[f"cls_logits_{k}"]["kernel"] = jnp.zeros_like(params[f"cls_logits_{k}"]["kernel"])
    params[f"cls_logits_{k}"]["bias"] = jnp.arange(n * 3, dtype=jnp.float32)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, x)["cls_logits"][0])
  anchors = ssd_anchors.ssd_anchors(size, mins, maxs, steps, ratios, clip=False)
  assert logits.shape == (len(anchors), 3)
  slot = logits[:, 0] / 3
  np.testing.assert_array_equal(logits[:, 1:] - logits[:, :1], np.tile([1.0, 2.0], (len(anchors), 1)))
  for m, (start, stop) in enumerate(ssd_anchors.level_slices(size, steps, ratios)):
    wh = ssd_anchors.location_sizes(mins[m], maxs[m], ratios[m])[slot[start:stop].astype(int)]
    got = anchors[start:stop, 2:] - anchors[start:stop, :2]
    np.testing.assert_allclose(got, wh, rtol=1e-5)
    # centres run row-major with the map's stride
    fh = size // steps[m]
    cy = (np.arange(fh)[:, None, None] + 0.5) * steps[m] * np.ones((1, fh, ks[m]))
    np.testing.assert_allclose((anchors[start:stop, 1] + anchors[start:stop, 3]) / 2,
                               cy.reshape(-1), rtol=1e-6)


def test_consistent_outputs_share_the_classifier_and_add_one_box_predictor():
  model = SSD(num_classes=2, anchors_per_location=(4, 4), steps=(8, 16), extras=(),
              vgg_width=1 / 64, cls_stages=2, reg_stages=2)
  x = jnp.ones((1, 32, 32, 3))
  variables = jax.jit(model.init)(RBG_KEY, x)
  shared = []

  def apply(v, x):
    o = model.apply(v, x)
    shared.append(o["cls_logits_refined"] is o["cls_logits"])   # the same array, not a copy
    return o

  out = jax.jit(apply)(variables, x)
  assert shared == [True]
  assert out["box_deltas_refined"].shape == out["box_deltas"].shape
  assert "box_deltas_stage2_0" in variables["params"]
  assert not np.allclose(out["box_deltas_refined"], out["box_deltas"])


def test_map_sizes_that_do_not_fit_the_steps_are_a_clear_error():
  model = SSD(num_classes=2, anchors_per_location=(4, 4, 4), steps=(8, 16, 32), extras=(),
              vgg_width=1 / 64)
  with pytest.raises(ValueError, match="config.ssd.extras"):
    jax.eval_shape(model.init, KEY, jnp.ones((1, 64, 64, 3)))


def test_l2norm_matches_numpy_and_its_gradient_is_finite_at_zero():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(np.float32)
  x[0, 0, 0] = 0.0
  scale = np.linspace(1.0, 3.0, 8, dtype=np.float32)
  got = L2Norm().apply({"params": {"scale": scale}}, x)
  norm = np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True)) + 1e-10
  np.testing.assert_allclose(got, x / norm * scale, rtol=1e-5, atol=1e-7)
  assert float(L2Norm().init(KEY, x)["params"]["scale"][0]) == 20.0
  g = jax.grad(lambda v: jnp.sum(L2Norm().apply({"params": {"scale": scale}}, v)))(x)
  assert np.all(np.isfinite(np.asarray(g)))
