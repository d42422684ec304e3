"""Faster R-CNN networks (Ren et al. 2015; FPN: Lin et al. 2017 §4.1-4.2; C4: He et al. 2016
ResNet §"Object detection"), as detectron2 builds them.

``FasterRCNN`` is a module with three methods the experiment composes inside one ``apply``
(``method=`` a function of the bound module), because proposals and RoI sampling -- pure,
non-differentiable box ops in ``jaxdet.ops`` -- sit between them:

* ``features(images, train)`` -> ``{level: map}``: FPN P2-P6 (P6 = max-pool of P5, the RPN-only
  level of FPN §4.1), or ``{4: C4}`` for the C4 design (res2-res4 in the backbone);
* ``rpn(features)`` -> objectness logits ``[B, A]`` and deltas ``[B, A, 4]`` in the anchor order
  of ``jaxdet.ops.anchors`` (levels ascending, row-major, anchors of a location contiguous): a
  shared 3x3 conv + ReLU, then 1x1 convs (FPN §4.1 "RPN head"), init N(0, 0.01), bias 0;
* ``box_head(features, rois, train)`` -> class logits ``[B, R, K + 1]`` (background **last**, the
  detectron2 convention of ``jaxdet.ops.roi_sampling``) and class-specific deltas
  ``[B, R, K, 4]``: FPN = RoIAlign 7x7 from the level of FPN Eq. 1 -> 2 fc 1024 + ReLU
  ("2fc MLP head", FPN §4.2); C4 = RoIAlign 14x14 on C4 -> res5 (stride 2 -> 7x7) -> global
  average pool. Predictors: cls N(0, 0.01), box N(0, 0.001), bias 0 (detectron2);
* ``mask_head(features, rois, train)`` (Mask R-CNN, ``mask=True``, FPN only) -> mask logits
  ``[B, R, 2 m, 2 m, K]``: RoIAlign ``m x m`` (14) -> ``mask_convs`` (4) 3x3 convs of
  ``mask_dim`` (256) + ReLU -> 2x2 stride-2 deconv + ReLU -> 1x1 conv to K class-specific masks
  (Mask R-CNN §3 "Network Architecture", Fig. 4 right; He init for the convs, N(0, 0.001) for the
  predictor, as detectron2).

RoIAlign is ``aligned=True`` with a fixed ``sampling_ratio`` (``jaxdet.ops.roi_align``).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models.fpn import FPN
from jaxdet.models.resnet import RESNET_SPECS, ResNet, Stage
from jaxdet.ops import roi_align as roi_ops

_c2_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class FasterRCNN(nn.Module):
  """Attributes: ``design`` 'fpn' | 'c4'; ``num_classes`` K (foreground); backbone as
  ``ResNet``; ``num_anchors`` per location (3 for FPN, 15 for C4); ``fc_dim`` of the FPN head;
  ``pooler_resolution`` (7 FPN, 14 C4); ``sampling_ratio`` of RoIAlign."""

  design: str = "fpn"
  num_classes: int = 80
  depth: int = 50
  width: int = 64
  norm: str = "frozen_bn"
  frozen_stages: int = 1
  fpn_filters: int = 256
  num_anchors: int = 3
  fc_dim: int = 1024
  pooler_resolution: int = 7
  sampling_ratio: int = 2
  mask: bool = False
  mask_pooler_resolution: int = 14
  mask_convs: int = 4
  mask_dim: int = 256
  dtype: Any = jnp.float32

  def setup(self):
    if self.design not in ("fpn", "c4"):
      raise ValueError(f"design must be 'fpn' or 'c4', got {self.design!r}")
    c4 = self.design == "c4"
    self.backbone = ResNet(self.depth, self.width, self.norm, self.frozen_stages, self.dtype,
                           num_stages=3 if c4 else 4)
    if c4:
      kind, counts = RESNET_SPECS[self.depth]
      self.res5 = Stage(block=kind, planes=self.width * 8, num_blocks=counts[3], stride=2,
                        norm=self.norm, dtype=self.dtype)
    else:
      self.fpn = FPN(2, 5, self.fpn_filters, self.dtype)
      self.fc1 = nn.Dense(self.fc_dim, kernel_init=_c2_xavier, dtype=self.dtype)
      self.fc2 = nn.Dense(self.fc_dim, kernel_init=_c2_xavier, dtype=self.dtype)
    conv = lambda f, k: nn.Conv(f, (k, k), padding="SAME", dtype=self.dtype,  # noqa: E731
                                kernel_init=nn.initializers.normal(0.01))
    self.rpn_conv = conv(self._rpn_channels(), 3)
    self.rpn_objectness = conv(self.num_anchors, 1)
    self.rpn_deltas = conv(4 * self.num_anchors, 1)
    self.cls_score = nn.Dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01),
                              dtype=self.dtype)
    self.bbox_pred = nn.Dense(4 * self.num_classes, kernel_init=nn.initializers.normal(0.001),
                              dtype=self.dtype)
    if self.mask:
      if c4:
        raise ValueError("the Mask R-CNN head is built for design='fpn' (detectron2's C4 mask "
                         "head shares res5 with the box head; not implemented here).")
      he = nn.initializers.variance_scaling(2.0, "fan_out", "normal")   # c2_msra_fill
      self.mask_fcn = [nn.Conv(self.mask_dim, (3, 3), padding="SAME", kernel_init=he,
                               dtype=self.dtype, name=f"mask_fcn{i + 1}")
                       for i in range(self.mask_convs)]
      self.mask_deconv = nn.ConvTranspose(self.mask_dim, (2, 2), strides=(2, 2), padding="VALID",
                                          kernel_init=he, dtype=self.dtype)
      self.mask_predictor = nn.Conv(self.num_classes, (1, 1),
                                    kernel_init=nn.initializers.normal(0.001), dtype=self.dtype)

  def _rpn_channels(self) -> int:
    if self.design == "fpn":
      return self.fpn_filters
    kind, _ = RESNET_SPECS[self.depth]
    return self.width * 4 * (4 if kind == "bottleneck" else 1)   # channels of C4

  @property
  def levels(self) -> tuple[int, ...]:
    """Levels the RPN runs on (their anchors, in this order, are the flat anchor array)."""
    return (2, 3, 4, 5, 6) if self.design == "fpn" else (4,)

  def features(self, images, train: bool = False):
    c = self.backbone(images.astype(self.dtype), train)
    if self.design == "c4":
      return {4: c["C4"]}
    p = self.fpn(c)
    p[6] = nn.max_pool(p[5], (1, 1), strides=(2, 2))   # FPN §4.1: P6 subsampled from P5
    return p

  def rpn(self, features):
    objectness, deltas = [], []
    for level in self.levels:
      x = nn.relu(self.rpn_conv(features[level]))
      o, d = self.rpn_objectness(x), self.rpn_deltas(x)
      b = o.shape[0]
      objectness.append(o.reshape(b, -1))
      deltas.append(d.reshape(b, -1, 4))
    return (jnp.concatenate(objectness, axis=1).astype(jnp.float32),
            jnp.concatenate(deltas, axis=1).astype(jnp.float32))

  def box_head(self, features, rois, train: bool = False):
    b, r = rois.shape[:2]
    if self.design == "fpn":
      pooled = roi_ops.multilevel_roi_align(
          {l: features[l] for l in (2, 3, 4, 5)}, rois, self.pooler_resolution, min_level=2,
          sampling_ratio=self.sampling_ratio)
      x = pooled.reshape(b * r, -1)
      x = nn.relu(self.fc2(nn.relu(self.fc1(x))))
    else:
      pooled = roi_ops.roi_align(features[4], rois, self.pooler_resolution, spatial_scale=1 / 16,
                                 sampling_ratio=self.sampling_ratio)
      x = pooled.reshape(b * r, *pooled.shape[2:])
      x = jnp.mean(self.res5(x, train), axis=(1, 2))
    logits = self.cls_score(x).astype(jnp.float32).reshape(b, r, self.num_classes + 1)
    deltas = self.bbox_pred(x).astype(jnp.float32).reshape(b, r, self.num_classes, 4)
    return logits, deltas

  def mask_head(self, features, rois, train: bool = False):
    b, r = rois.shape[:2]
    m = self.mask_pooler_resolution
    x = roi_ops.multilevel_roi_align(
        {l: features[l] for l in (2, 3, 4, 5)}, rois, m, min_level=2,
        sampling_ratio=self.sampling_ratio)
    x = x.reshape(b * r, m, m, x.shape[-1])
    for conv in self.mask_fcn:
      x = nn.relu(conv(x))
    x = nn.relu(self.mask_deconv(x))
    logits = self.mask_predictor(x).astype(jnp.float32)
    return logits.reshape(b, r, 2 * m, 2 * m, self.num_classes)

  def __call__(self, images, rois, train: bool = False):
    """Every part on given RoIs (used by ``init``)."""
    feats = self.features(images, train)
    objectness, deltas = self.rpn(feats)
    logits, box_deltas = self.box_head(feats, rois, train)
    out = {"objectness": objectness, "rpn_deltas": deltas, "cls_logits": logits,
           "box_deltas": box_deltas}
    if self.mask:
      out["mask_logits"] = self.mask_head(feats, rois, train)
    return out
