"""Per-element classification cross-entropies (the building blocks of focal loss and OHEM).

* Sigmoid (binary) cross-entropy, in the stable form
  ``max(x, 0) - x t + log(1 + exp(-|x|))`` = -t log sigma(x) - (1 - t) log(1 - sigma(x)).
* Softmax cross-entropy ``logsumexp(x) - x[label]`` over the last axis.

Ignored entries return 0 (and zero gradient): a negative binary target (the -1 of
:func:`jaxdet.ops.matching.class_targets`) or a negative integer label. Callers sum and normalise.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sigmoid_cross_entropy(logits, targets):
  """Elementwise binary cross-entropy with logits; targets in [0, 1] (soft allowed), < 0 ignored."""
  logits = jnp.asarray(logits)
  targets = jnp.asarray(targets, logits.dtype)
  keep = targets >= 0
  t = jnp.where(keep, targets, 0.0)
  loss = jnp.maximum(logits, 0.0) - logits * t + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.where(keep, loss, 0.0)


def softmax_cross_entropy(logits, labels):
  """``logits [..., C]``, integer ``labels [...]`` -> ``[...]`` = -log softmax(logits)[label].

  Labels < 0 are ignored (loss 0). Labels >= C cannot be checked under jit; they are clipped to C-1.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels shape {labels.shape} must equal logits shape without the class axis "
                     f"{logits.shape[:-1]}")
  keep = labels >= 0
  idx = jnp.clip(labels, 0, logits.shape[-1] - 1)
  picked = jnp.take_along_axis(logits, idx[..., None], axis=-1)[..., 0]
  loss = jax.nn.logsumexp(logits, axis=-1) - picked
  return jnp.where(keep, loss, 0.0)
