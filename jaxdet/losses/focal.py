"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", Eq. 5).

FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with p_t = p for t = 1 and 1 - p for t = 0,
alpha_t = alpha for t = 1 and 1 - alpha for t = 0 (Eq. 5 with the alpha-balancing of Eq. 3).
Written as alpha_t * (1 - p_t)^gamma * BCE(x, t) with the stable BCE of
:mod:`jaxdet.losses.classification` and 1 - p_t = t sigma(-x) + (1 - t) sigma(x), which is
accurate for large |x| (no 1 - p cancellation). Soft targets in [0, 1] interpolate linearly.
Entries with a negative target (ignored anchors, -1 in ``class_targets``) give 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.losses.classification import sigmoid_cross_entropy


def sigmoid_focal_loss(logits, targets, *, alpha: float = 0.25, gamma: float = 2.0):
  """Elementwise focal loss; the caller sums and normalises (RetinaNet: by #positive anchors).

  ``alpha < 0`` disables the alpha-balancing (alpha_t = 1), as in torchvision/Detectron2.
  """
  if gamma < 0:
    raise ValueError(f"gamma must be >= 0; got {gamma}")
  logits = jnp.asarray(logits)
  targets = jnp.asarray(targets, logits.dtype)
  keep = targets >= 0
  t = jnp.where(keep, targets, 0.0)
  ce = sigmoid_cross_entropy(logits, t)
  one_minus_pt = t * jax.nn.sigmoid(-logits) + (1.0 - t) * jax.nn.sigmoid(logits)
  loss = ce if gamma == 0 else ce * one_minus_pt ** gamma
  if alpha >= 0:
    loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
  return jnp.where(keep, loss, 0.0)
