"""Greedy non-maximum suppression with a fixed-size output (on device, jit/vmap friendly).

Textbook greedy NMS (e.g. Felzenszwalb et al.; Girshick R-CNN): visit boxes by descending score
(exact score ties: lower index first), keep a box unless its IoU with an already kept box is
``> iou_threshold``. Boxes with score ``-inf`` (or NaN) are never kept.

Implementation: a ``lax.while_loop`` whose step takes the highest-scoring still-alive box
(``argmax``, which returns the lowest index on ties), emits it and kills every alive box whose
IoU with it exceeds the threshold. This is exactly the greedy order above, but it runs at most
``max_output`` steps and computes only the IoU rows of kept boxes, O(max_output * N) time and
O(N) memory instead of an N x N IoU matrix (which would be 5000^2 per image for RetinaNet's
5 levels x 1000 candidates).

Class-aware NMS masks suppression to boxes of the same class (no coordinate offset trick, so
there is no loss of float precision on large coordinates).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.ops import boxes as box_ops


def _greedy(boxes, scores, classes, iou_threshold, max_output):
  boxes = jnp.asarray(boxes, jnp.float32)
  scores = jnp.asarray(scores, jnp.float32)
  if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
    raise ValueError(f"nms expects boxes [N, 4] and scores [N] (vmap for batches); got {boxes.shape} "
                     f"and {scores.shape}")
  if int(max_output) != max_output or max_output <= 0:
    raise ValueError(f"max_output must be a positive integer; got {max_output!r}")
  max_output = int(max_output)
  n = boxes.shape[0]
  if n == 0:
    return jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool)

  alive0 = scores > -jnp.inf  # False for -inf and NaN
  masked_scores = jnp.where(alive0, scores, -jnp.inf)

  def cond(state):
    _, count, alive = state
    return (count < max_output) & jnp.any(alive)

  def body(state):
    out, count, alive = state
    i = jnp.argmax(jnp.where(alive, masked_scores, -jnp.inf)).astype(jnp.int32)
    row = box_ops.iou(boxes[i][None, :], boxes)  # [N]
    kill = row > iou_threshold
    if classes is not None:
      kill = kill & (classes == classes[i])
    alive = alive & ~kill
    alive = alive.at[i].set(False)
    out = out.at[count].set(i)
    return out, count + 1, alive

  out0 = jnp.zeros((max_output,), jnp.int32)
  out, count, _ = jax.lax.while_loop(cond, body, (out0, jnp.int32(0), alive0))
  valid = jnp.arange(max_output) < count
  return jnp.where(valid, out, 0), valid


def nms(boxes, scores, *, iou_threshold: float, max_output: int):
  """Greedy NMS on ``boxes [N, 4]`` (xyxy), ``scores [N]``.

  Returns ``(indices [max_output] int32, valid [max_output] bool)``: the kept boxes' indices in
  descending score order, valid ones first; padding entries have index 0 and valid False.
  """
  return _greedy(boxes, scores, None, iou_threshold, max_output)


def batched_nms(boxes, scores, classes, *, iou_threshold: float, max_output: int):
  """Class-aware greedy NMS: like :func:`nms`, but only boxes of equal ``classes [N]`` suppress each other."""
  classes = jnp.asarray(classes)
  if classes.shape != jnp.shape(scores):
    raise ValueError(f"classes must have the shape of scores {jnp.shape(scores)}; got {classes.shape}")
  return _greedy(boxes, scores, classes, iou_threshold, max_output)
