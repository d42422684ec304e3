"""Softmax cross-entropy with online hard negative mining (SSD, Liu et al. 2016, §2.2
"Hard negative mining"): the "CE + OHEM" baseline of AP-loss (Chen et al.,
§4.2.2 "Comparison on Different Losses").

Logits have C + 1 channels with background at channel 0; foreground class k (0-based, as in
``jaxdet.ops.matching``) is channel k + 1. Per image, every positive anchor contributes
-log p[class + 1]; among the negative anchors (state 0) the ``n_neg`` with the largest
background loss -log p[0] contribute -log p[0], where

  n_neg = min(max(neg_pos_ratio * n_pos, min_negatives), #negatives of the image)

(SSD uses 3:1; ``min_negatives`` keeps a few hard negatives in images without positives, as the
TF Object Detection API's ``min_negatives_per_image``; 0 gives SSD's plain 3 * n_pos). Ties in
background loss are broken by anchor index. Ignored anchors (state -1) contribute nothing.
The sum is divided by the number of positives in the whole batch (at least 1). Selection
uses a per-image sort (static shapes), and no gradient flows through it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def hard_negative_mask(neg_loss, state, *, neg_pos_ratio=3, min_negatives: int = 3):
  """[B, A] bool: the hardest negatives of each image (largest ``neg_loss``, ties by index)."""
  is_neg = state == 0
  n_pos = jnp.sum(state == 1, axis=-1)
  want = jnp.maximum(jnp.floor(n_pos.astype(jnp.float32) * neg_pos_ratio).astype(jnp.int32),
                     min_negatives)
  n_neg = jnp.minimum(want, jnp.sum(is_neg, axis=-1))
  key = jnp.where(is_neg, jax.lax.stop_gradient(neg_loss).astype(jnp.float32), -jnp.inf)
  order = jnp.argsort(-key, axis=-1, stable=True)
  b, a = key.shape
  rank = jnp.zeros((b, a), jnp.int32).at[jnp.arange(b)[:, None], order].set(
      jnp.broadcast_to(jnp.arange(a, dtype=jnp.int32), (b, a)))
  return is_neg & (rank < n_neg[:, None])


def ce_ohem_loss(logits, classes, state, *, neg_pos_ratio=3, min_negatives: int = 3):
  """Scalar float32 loss; logits [B, A, C+1], classes [B, A] int (used where state == 1),
  state [B, A] int in {1 positive, 0 negative, -1 ignored}."""
  logits = jnp.asarray(logits)
  classes = jnp.asarray(classes)
  state = jnp.asarray(state)
  if logits.ndim != 3 or logits.shape[-1] < 2:
    raise ValueError(f"logits must be [B, A, C+1] with background at channel 0; got {logits.shape}")
  if classes.shape != logits.shape[:2] or state.shape != logits.shape[:2]:
    raise ValueError(f"classes and state must be [B, A] = {logits.shape[:2]}; "
                     f"got {classes.shape} and {state.shape}")
  if not neg_pos_ratio >= 0:
    raise ValueError(f"neg_pos_ratio must be >= 0 (SSD uses 3); got {neg_pos_ratio!r}")
  if int(min_negatives) != min_negatives or min_negatives < 0:
    raise ValueError(f"min_negatives must be a non-negative integer; got {min_negatives!r}")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  is_pos = state == 1
  target = jnp.where(is_pos, classes.astype(jnp.int32) + 1, 0)
  target = jnp.clip(target, 0, logits.shape[-1] - 1)
  ce = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
  hard = hard_negative_mask(-logp[..., 0], state, neg_pos_ratio=neg_pos_ratio,
                            min_negatives=int(min_negatives))
  total = jnp.sum(jnp.where(is_pos | hard, ce, 0.0))
  return total / jnp.maximum(jnp.sum(is_pos), 1).astype(jnp.float32)
