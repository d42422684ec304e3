"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection", Sec. 4):
ResNet + FPN backbone and two subnets shared across pyramid levels.

Head (Sec. 4 "Classification Subnet" / "Box Regression Subnet"): each branch is
num_convs x (3x3 conv, filters, [GroupNorm], ReLU), then a 3x3 conv to
K*C class logits or K*4 box deltas (K anchors per location).  Init (Sec. 4.1
"Initialization"): conv weights N(0, 0.01), bias 0, except the class conv bias
b = -log((1 - pi) / pi) with prior pi = 0.01 so every anchor starts at
sigmoid(b) = pi.

Output order: per level the conv output [B, h, w, K*C] is reshaped to
[B, h*w*K, C] (channel k*C + c -> anchor k, class c), and levels are concatenated
ascending, so entry index runs over (level, y, x, anchor) -- the same order as
``jaxdet.ops.anchors.generate_anchors`` (levels ascending; row-major y, x; anchors per
location).  Level l has spatial size ceil(H / 2**l); ``RetinaNet`` checks the FPN
maps against ``jaxdet.ops.anchors.feature_shapes``, the one definition of the pyramid
shapes that the anchors and ``level_slices`` are built from, so the anchor and the
head output orders agree by construction.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models.fpn import FPN
from jaxdet.models.norm import GroupNorm
from jaxdet.models.resnet import ResNet
from jaxdet.ops.anchors import feature_shapes

HEAD_NORMS = (None, "group_norm")


def prediction_conv(features: int, name: str, dtype: Any, bias: float = 0.0) -> nn.Conv:
  """3x3 (pad 1) prediction conv with RetinaNet's init (Sec. 4.1): N(0, 0.01) kernel, constant
  bias; shared by ConRetinaNet's stage heads and SSD's per-map predictors."""
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                 kernel_init=nn.initializers.normal(stddev=0.01),
                 bias_init=nn.initializers.constant(bias), dtype=dtype,
                 param_dtype=jnp.float32, name=name)


class RetinaNetHead(nn.Module):
  """Class and box subnets shared over levels.

  ``__call__(features: {level: [B, h, w, F]})`` returns a dict:
    'cls_logits' [B, A, num_classes] float32, 'box_deltas' [B, A, 4] float32,
    'cls_features' / 'box_features': {level: [B, h, w, filters]} (compute dtype),
    the last tower activations of each branch (inputs of the final convs).
  Param names: 'cls_conv{i}', 'cls_norm{i}', 'box_conv{i}', 'box_norm{i}',
  'cls_logits', 'box_deltas'.
  """

  num_classes: int
  num_anchors: int
  num_convs: int = 4
  filters: int = 256
  prior_prob: float = 0.01
  norm: Optional[str] = None
  dtype: Any = jnp.float32

  def _conv(self, features: int, name: str, bias: float = 0.0) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        padding=((1, 1), (1, 1)),
        kernel_init=nn.initializers.normal(stddev=0.01),
        bias_init=nn.initializers.constant(bias),
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=name,
    )

  @nn.compact
  def __call__(self, features):
    if self.num_classes < 1 or self.num_anchors < 1:
      raise ValueError(
          f"num_classes and num_anchors must be >= 1, got {self.num_classes}, {self.num_anchors}"
      )
    if not 0.0 < self.prior_prob < 1.0:
      raise ValueError(f"prior_prob must be in (0, 1), got {self.prior_prob}")
    if self.norm not in HEAD_NORMS:
      raise ValueError(f"head norm must be one of {list(HEAD_NORMS)}, got {self.norm!r}")
    if self.num_convs < 0:
      raise ValueError(f"num_convs must be >= 0, got {self.num_convs}")

    def tower(prefix):
      layers = []
      for i in range(self.num_convs):
        conv = self._conv(self.filters, f"{prefix}_conv{i}")
        norm = GroupNorm(dtype=self.dtype, name=f"{prefix}_norm{i}") if self.norm else None
        layers.append((conv, norm))
      return layers

    def run(layers, x):
      for conv, norm in layers:
        x = conv(x)
        if norm is not None:
          x = norm(x)
        x = nn.relu(x)
      return x

    cls_tower, box_tower = tower("cls"), tower("box")
    bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
    cls_out = self._conv(self.num_anchors * self.num_classes, "cls_logits", bias)
    box_out = self._conv(self.num_anchors * 4, "box_deltas")

    cls_feats, box_feats, logits, deltas = {}, {}, [], []
    for level in sorted(features):
      x = features[level].astype(self.dtype)
      b = x.shape[0]
      cls_feats[level] = run(cls_tower, x)
      box_feats[level] = run(box_tower, x)
      logits.append(cls_out(cls_feats[level]).reshape(b, -1, self.num_classes))
      deltas.append(box_out(box_feats[level]).reshape(b, -1, 4))
    return {
        "cls_logits": jnp.concatenate(logits, axis=1).astype(jnp.float32),
        "box_deltas": jnp.concatenate(deltas, axis=1).astype(jnp.float32),
        "cls_features": cls_feats,
        "box_features": box_feats,
    }


class RetinaNet(nn.Module):
  """ResNet-FPN RetinaNet.

  ``__call__(images [B, H, W, 3] normalised float, train, return_features=False)``
  returns {'cls_logits': [B, A, C] float32, 'box_deltas': [B, A, 4] float32}
  with A = sum_l h_l * w_l * num_anchors over ``jaxdet.ops.anchors.feature_shapes(
  (H, W), min_level, max_level)``, i.e. the anchors of ``generate_anchors`` in the same
  order (per-level ranges: ``jaxdet.ops.anchors.level_slices``); with
  ``return_features=True`` also 'fpn_features', 'cls_features', 'box_features'
  ({level: [B, h, w, F]}).
  Submodules: 'backbone' (ResNet), 'fpn' (FPN), 'head' (RetinaNetHead).
  """

  num_classes: int
  num_anchors: int
  depth: int = 50
  width: int = 64
  norm: str = "frozen_bn"
  frozen_stages: int = 1
  min_level: int = 3
  max_level: int = 7
  fpn_filters: int = 256
  head_convs: int = 4
  head_filters: int = 256
  head_norm: Optional[str] = None
  prior_prob: float = 0.01
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False, return_features: bool = False):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3] (NHWC), got shape {images.shape}")
    c = ResNet(self.depth, self.width, self.norm, self.frozen_stages, self.dtype, name="backbone")(
        images, train
    )
    p = FPN(self.min_level, self.max_level, self.fpn_filters, self.dtype, name="fpn")(c)
    got = [tuple(p[l].shape[1:3]) for l in sorted(p)]
    want = feature_shapes(images.shape[1:3], self.min_level, self.max_level)
    if got != want:  # static shapes: checked once at trace time
      raise ValueError(f"FPN maps {got} differ from the anchor grid {want} of jaxdet.ops.anchors."
                       "feature_shapes; head outputs would not line up with the anchors")
    out = RetinaNetHead(
        self.num_classes,
        self.num_anchors,
        self.head_convs,
        self.head_filters,
        self.prior_prob,
        self.head_norm,
        self.dtype,
        name="head",
    )(p)
    result = {"cls_logits": out["cls_logits"], "box_deltas": out["box_deltas"]}
    if return_features:
      result.update(fpn_features=p, cls_features=out["cls_features"], box_features=out["box_features"])
    return result
