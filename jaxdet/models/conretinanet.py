"""ConRetinaNet (Kong et al., "Consistent Optimization for Single-Shot Object Detection",
§4 "Implementation Choices", Fig. 4, Tables 1 and 3).

RetinaNet (ResNet-FPN backbone + shared class/box subnets) plus the extra predictions on the
refined anchors.  Stage 1 predicts on the original anchors A0; stage s >= 2 predicts on the
anchors refined s-1 times (A1 = decode(t0, A0), A2 = decode(t1, A1)).  ``cls_stages`` counts
the classification terms (Eq. 1 has 2), ``reg_stages`` the regressions (Eq. 2 has 2; Table 3
also tries 3); a class term at stage s needs the anchors A_{s-1}, so
``cls_stages <= reg_stages + 1``.

Variants (Fig. 4 (b)-(d), Table 1):
  * ``'consistent'`` (Fig. 4(d), the proposed one): no new branch. Classification on the refined
    anchor uses the SAME class output (``cls_logits_refined is cls_logits``; the consistency is in
    the targets, Eq. 1), and for the regression "only the last layer's parameters of the bounding
    box regression are not shared" (footnote 2): stage s adds one 3x3 conv
    ``box_deltas_stage{s}`` on the stage-1 box-tower features.  reg_stages = 2 is exactly one more
    conv than RetinaNet.
  * ``'cascade'`` (Fig. 4(b)): new sibling subnets per stage, "identical to the existing subnet,
    and the parameters are not shared" -- ``cls_subnet_stage{s}`` / ``box_subnet_stage{s}`` (tower
    of ``head_convs`` convs + prediction conv, RetinaNet init) on the FPN features.  Only the
    subnets a stage needs are built (a class subnet for s <= cls_stages, a box subnet for
    s <= reg_stages).
  * ``'gated_cascade'`` (Fig. 4(c)): as cascade, but "the feature head in the previous stage is
    also combined": stage s's tower output is summed with stage s-1's tower output of the same
    task before the prediction conv (output-side sum, so no width constraint between FPN and
    head; our choice -- the paper gives no formula).

The stage-s subnets of the cascade variants are a small private module: ``RetinaNetHead`` feeds
both towers from one input and always builds both, which a per-task, partly-built stage cannot
use.  The backbone, FPN and stage-1 head are RetinaNet's own (``super().__call__``), so the
parameter tree is RetinaNet's ('backbone', 'fpn', 'head') plus the new entries, and RetinaNet
checkpoints / backbone weights load unchanged.

Outputs: RetinaNet's 'cls_logits' [B, A, C] and 'box_deltas' [B, A, 4] (stage 1), and per extra
stage s: 'cls_logits_refined' (s=2), 'cls_logits_refined2' (s=3) [B, A, C]; 'box_deltas_refined'
(s=2), 'box_deltas_refined2' (s=3) [B, A, 4], the offsets predicted for A_{s-1} (encoded relative
to A_{s-1}). The keys, and the check of variant / stage counts, come from
``jaxdet.losses.consistent`` (``cls_key``, ``box_key``, ``check_stages``), the losses that read them.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.losses.consistent import box_key, check_stages, cls_key
from jaxdet.models.norm import GroupNorm
from jaxdet.models.retinanet import RetinaNet, prediction_conv


class _Subnet(nn.Module):
  """One task subnet of a cascade stage: num_convs x (3x3 conv, [GroupNorm], ReLU) + a 3x3
  prediction conv to ``num_anchors * per_anchor`` channels, shared over levels.

  ``__call__(features {level: [B,h,w,F]}, previous=None)`` -> (outputs [B, A, per_anchor]
  float32, tower features {level: [B,h,w,filters]}); with ``previous`` (gated cascade) the
  previous stage's tower features are added to the tower output before the prediction.
  """

  per_anchor: int
  num_anchors: int
  num_convs: int
  filters: int
  norm: Optional[str]
  bias: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, previous=None):
    layers = [(prediction_conv(self.filters, f"conv{i}", self.dtype),
               GroupNorm(dtype=self.dtype, name=f"norm{i}") if self.norm else None)
              for i in range(self.num_convs)]
    pred = prediction_conv(self.num_anchors * self.per_anchor, "pred", self.dtype, self.bias)
    feats, outs = {}, []
    for level in sorted(features):
      x = features[level].astype(self.dtype)
      for conv, norm in layers:
        x = conv(x)
        if norm is not None:
          x = norm(x)
        x = nn.relu(x)
      if previous is not None:
        x = x + previous[level].astype(self.dtype)
      feats[level] = x
      outs.append(pred(x).reshape(x.shape[0], -1, self.per_anchor))
    return jnp.concatenate(outs, axis=1).astype(jnp.float32), feats


class ConRetinaNet(RetinaNet):
  """RetinaNet with the refined-anchor predictions of consistent optimization.

  Fields: RetinaNet's, plus ``variant`` in ``jaxdet.losses.consistent.VARIANTS``, ``cls_stages``
  in {1, 2, 3} and ``reg_stages`` in {1, 2, 3} with cls_stages <= reg_stages + 1 (paper: cls 2,
  reg 2).
  ``__call__(images, train, return_features=False)`` returns RetinaNet's dict plus the stage
  outputs described in the module docstring.
  """

  variant: str = "consistent"
  cls_stages: int = 2
  reg_stages: int = 2

  @nn.compact
  def __call__(self, images, train: bool = False, return_features: bool = False):
    check_stages(self.variant, self.cls_stages, self.reg_stages)
    base = super().__call__(images, train, return_features=True)
    result = {"cls_logits": base["cls_logits"], "box_deltas": base["box_deltas"]}
    k = self.num_anchors
    if self.variant == "consistent":
      for s in range(2, self.cls_stages + 1):
        result[cls_key(s)] = base["cls_logits"]
      for s in range(2, self.reg_stages + 1):
        conv = prediction_conv(4 * k, f"box_deltas_stage{s}", self.dtype)
        result[box_key(s)] = jnp.concatenate(
            [conv(f).reshape(f.shape[0], -1, 4) for _, f in sorted(base["box_features"].items())],
            axis=1).astype(jnp.float32)
    else:
      gated = self.variant == "gated_cascade"
      prior_bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
      prev = {"cls": base["cls_features"], "box": base["box_features"]}
      for s in range(2, max(self.cls_stages, self.reg_stages) + 1):
        for task, last, per, bias, key in (("cls", self.cls_stages, self.num_classes, prior_bias, cls_key),
                                           ("box", self.reg_stages, 4, 0.0, box_key)):
          if s > last:
            continue
          sub = _Subnet(per, k, self.head_convs, self.head_filters, self.head_norm, bias,
                        self.dtype, name=f"{task}_subnet_stage{s}")
          result[key(s)], prev[task] = sub(base["fpn_features"], prev[task] if gated else None)
    if return_features:
      result.update(fpn_features=base["fpn_features"], cls_features=base["cls_features"],
                    box_features=base["box_features"])
    return result
