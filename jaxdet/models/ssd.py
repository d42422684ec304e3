"""SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector", §2.1 "Model", Fig. 2; SSD512
layout of §3 / the released ``ssd_pascal_512.py``): a base network, extra feature layers that
halve the resolution, and one 3x3 convolutional predictor per source map.

Base networks (``backbone``):

* ``'vgg16'`` (§3 "Base network"): ``jaxdet.models.vgg.VGG16`` (pool5 3x3/1, dilated conv6,
  conv7); the source maps are conv4_3 (stride 8, L2-normalised with a learned per-channel scale
  initialised to 20, §3.1 / ParseNet: ``conv4_3_norm``) and conv7 (stride 16).
* ``'resnet'``: ``jaxdet.models.resnet.ResNet`` (ResNet-50 for Kong et al.'s Table 5 "SSD512
  ResNet-50"; the paper gives no layer list). Source maps C3 (stride 8), C4 (16) and C5 (32), as
  DSSD's ResNet SSD (Fu et al. 2017, §3.1) takes conv3_x and conv5_x; no L2Norm (the maps are
  batch-normalised). The extras then start from C5, so SSD512 needs one extra layer fewer.

Extra layers (§2.1 "Multi-scale feature maps for detection"): per entry ``(mid, out, kernel,
stride, pad)`` a 1x1 conv to ``mid`` channels and a ``kernel x kernel`` conv with ``stride`` and
``pad`` to ``out`` channels, both with ReLU; each second conv is a source map. SSD512
(:data:`SSD512_EXTRAS`): conv8 (256 -> 512, 3x3/2), conv9 .. conv11 (128 -> 256, 3x3/2), conv12
(128 -> 256, 4x4/1 pad 1), i.e. 32 -> 16 -> 8 -> 4 -> 2 -> 1 after conv7. Parameter names
``conv{8+i}_1`` / ``conv{8+i}_2`` for extra i (also for the ResNet base, whose extras are then
conv8 .. conv11).

Predictors (§2.1 "Convolutional predictors for detection"): per source map k with K_k default
boxes per location, a 3x3 conv (pad 1) to ``K_k * num_classes`` class logits (``cls_logits_{k}``)
and one to ``K_k * 4`` box offsets (``box_deltas_{k}``); N(0, 0.01) kernels as RetinaNet's
head. Class bias: ``-log((1 - prior) / prior)`` for the sigmoid losses (focal / AP / AUC, every
box starting at probability ``prior``, Lin et al. 2017 §4.1); 0 for the C + 1 softmax of CE +
OHEM (``softmax=True``), background at channel 0.

Output order: each map's ``[B, h, w, K * C]`` is reshaped to ``[B, h * w * K, C]`` (K-major
channels: box k's C values contiguous) and the maps are concatenated base-first -- the order of
``jaxdet.ops.ssd_anchors.ssd_anchors``. The map sizes are checked against
``ssd_anchors.feature_shapes(image, steps)`` at trace time, so outputs and default boxes line up.

Consistent optimization (Kong et al., §4, footnote 2: "only the last layer's parameters of the
bounding box regression are not shared"): with ``reg_stages = s > 1`` each map gets s - 1 more
box predictors ``box_deltas_stage{j}_{k}`` (SSD's box "subnet" is that one last layer), giving
``box_deltas_refined`` (stage 2), ... under the keys of ``jaxdet.losses.consistent``; the class
term of the refined anchors reads the same ``cls_logits`` (``cls_logits_refined``).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.losses.consistent import box_key, cls_key
from jaxdet.models.norm import GroupNorm
from jaxdet.models.resnet import ResNet
from jaxdet.models.retinanet import prediction_conv
from jaxdet.models.vgg import VGG16, L2Norm, scaled_channels
from jaxdet.ops.ssd_anchors import feature_shapes

# (1x1 channels, out channels, kernel, stride, pad) of SSD512's conv8 .. conv12 (ssd_pascal_512.py).
SSD512_EXTRAS = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
                 (128, 256, 3, 2, 1), (128, 256, 4, 1, 1))
BACKBONES = ("vgg16", "resnet")


class SSD(nn.Module):
  """SSD detector (module docstring).

  Attributes:
    num_classes: class channels per box (C for sigmoid losses, C + 1 with ``softmax``).
    anchors_per_location: K_k of every source map (``ssd_anchors.num_anchors_per_location``).
    steps: stride of every source map in input pixels (the default boxes' ``steps``).
    backbone: 'vgg16' | 'resnet'.
    extras: ``(mid, out, kernel, stride, pad)`` per extra layer.
    vgg_width, group_norm: ``VGG16``'s channel multiplier (also scales the extras) and optional
      GroupNorm after every base / extra conv (training from scratch).
    depth, width, norm, frozen_stages: the ResNet base's.
    l2norm_scale: initial scale of ``conv4_3_norm`` (SSD: 20).
    softmax: CE + OHEM head (zero class bias) instead of the sigmoid prior bias.
    prior_prob: the sigmoid head's initial probability.
    cls_stages, reg_stages: class terms / box regressions (1, 1; consistent optimization:
      2, 2 -- every class stage is the shared ``cls_logits``).
    dtype: compute dtype (params float32; outputs float32).

  ``__call__(images [B, H, W, 3], train)`` -> {'cls_logits' [B, A, num_classes], 'box_deltas'
  [B, A, 4]} (+ the consistent-optimization keys when ``reg_stages > 1``).
  """

  num_classes: int
  anchors_per_location: tuple[int, ...]
  steps: tuple[float, ...]
  backbone: str = "vgg16"
  extras: tuple[tuple[int, int, int, int, int], ...] = SSD512_EXTRAS
  vgg_width: float = 1.0
  group_norm: bool = False
  depth: int = 50
  width: int = 64
  norm: str = "frozen_bn"
  frozen_stages: int = 1
  l2norm_scale: float = 20.0
  softmax: bool = False
  prior_prob: float = 0.01
  cls_stages: int = 1
  reg_stages: int = 1
  dtype: Any = jnp.float32

  def _base_maps(self, images, train):
    if self.backbone == "vgg16":
      f = VGG16(self.dtype, self.vgg_width, self.group_norm, name="backbone")(images, train)
      return [L2Norm(self.l2norm_scale, dtype=self.dtype, name="conv4_3_norm")(f["conv4_3"]),
              f["conv7"]]
    if self.backbone == "resnet":
      c = ResNet(self.depth, self.width, self.norm, self.frozen_stages, self.dtype,
                 name="backbone")(images, train)
      return [c["C3"], c["C4"], c["C5"]]
    raise ValueError(f"SSD backbone {self.backbone!r}: use one of {BACKBONES}")

  def _extra(self, x, channels, kernel, stride, pad, name):
    x = nn.Conv(scaled_channels(channels, self.vgg_width), (kernel, kernel), (stride, stride),
                padding=((pad, pad), (pad, pad)),
                kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
    if self.group_norm:
      x = GroupNorm(dtype=self.dtype, name=f"{name}_norm")(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, images, train: bool = False):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3] (NHWC), got shape {images.shape}")
    if self.reg_stages not in (1, 2, 3):
      raise ValueError(f"reg_stages must be 1, 2 or 3, got {self.reg_stages}")
    maps = self._base_maps(images, train)
    x = maps[-1]
    for i, (mid, out, kernel, stride, pad) in enumerate(self.extras):
      x = self._extra(x, mid, 1, 1, 0, f"conv{8 + i}_1")
      x = self._extra(x, out, kernel, stride, pad, f"conv{8 + i}_2")
      maps.append(x)
    got = [tuple(m.shape[1:3]) for m in maps]
    want = feature_shapes(images.shape[1:3], self.steps)
    if got != want or len(self.anchors_per_location) != len(maps):
      raise ValueError(
          f"SSD source maps {got} (backbone {self.backbone!r}, {len(self.extras)} extra layers) "
          f"differ from the default-box grid {want} of steps {tuple(self.steps)} "
          f"({len(self.anchors_per_location)} maps of anchors): change config.ssd.extras / "
          "steps / image size so that map k is ceil(image / step_k)")

    bias = 0.0 if self.softmax else -math.log((1.0 - self.prior_prob) / self.prior_prob)
    logits, deltas = [], [[] for _ in range(self.reg_stages)]
    for k, (x, n) in enumerate(zip(maps, self.anchors_per_location)):
      b = x.shape[0]
      x = x.astype(self.dtype)
      logits.append(prediction_conv(n * self.num_classes, f"cls_logits_{k}", self.dtype, bias)(x)
                    .reshape(b, -1, self.num_classes))
      for s in range(self.reg_stages):
        name = f"box_deltas_{k}" if s == 0 else f"box_deltas_stage{s + 1}_{k}"
        deltas[s].append(prediction_conv(n * 4, name, self.dtype)(x).reshape(b, -1, 4))
    cls = jnp.concatenate(logits, axis=1).astype(jnp.float32)
    out = {"cls_logits": cls}
    for s, d in enumerate(deltas, start=1):
      out[box_key(s)] = jnp.concatenate(d, axis=1).astype(jnp.float32)
    for s in range(2, self.cls_stages + 1):
      out[cls_key(s)] = cls
    return out
