"""Normalisation layers for detection backbones and heads.

* ``FrozenBatchNorm`` -- batch normalisation with fixed affine statistics, the
  standard choice when fine-tuning an ImageNet backbone with small per-device
  batches (RetinaNet, Lin et al. 2017; AP-loss, Chen et al. §4.1.1: "We fix the
  batch normalization layers to be frozen in training phase"):
      y = (x - mean) / sqrt(var + eps) * scale + bias.
  All four arrays live in the ``'batch_stats'`` collection (not ``'params'``),
  so an optimizer built over ``params`` never sees them and no gradient is
  taken for them.  They are never updated.  ``'batch_stats'`` is also the
  collection that ``flax.linen.BatchNorm`` uses, so a training loop handles one
  extra collection for every norm kind.
* ``GroupNorm`` -- group normalisation (Wu & He 2018, Eq. 1-3) whose group
  count is chosen from the channel count at call time: the largest g <= 32
  that divides the channels (so tiny test models with 8 or 16 channels work).
* ``make_norm(kind, dtype, train)`` -- a factory ``factory(name=...) -> Module``
  for kind in ``NORM_KINDS``.

Variable names (used by ``weights.py`` key layout) for every kind:
``scale``, ``bias`` (affine) and ``mean``, ``var`` (statistics, BN kinds only).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

NORM_KINDS = ("frozen_bn", "batch_norm", "group_norm")

# torchvision / Detectron2 FrozenBatchNorm2d and nn.BatchNorm2d use eps=1e-5.
BN_EPS = 1e-5
GN_EPS = 1e-5
GN_MAX_GROUPS = 32


class FrozenBatchNorm(nn.Module):
  """Batch norm with all statistics and affine parameters held fixed.

  Variables (collection ``'batch_stats'``, float32, shape [C]):
  ``mean`` (init 0), ``var`` (init 1), ``scale`` (init 1), ``bias`` (init 0).
  Computation is ``x * a + b`` with ``a = scale / sqrt(var + eps)`` and
  ``b = bias - mean * a`` folded in float32 and then cast to ``dtype``.
  """

  epsilon: float = BN_EPS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    scale = self.variable("batch_stats", "scale", lambda: jnp.ones((c,), jnp.float32))
    bias = self.variable("batch_stats", "bias", lambda: jnp.zeros((c,), jnp.float32))
    a = scale.value * (1.0 / jnp.sqrt(var.value + self.epsilon))
    b = bias.value - mean.value * a
    return x.astype(self.dtype) * a.astype(self.dtype) + b.astype(self.dtype)


def num_groups_for(channels: int, max_groups: int = GN_MAX_GROUPS) -> int:
  """Largest group count g <= max_groups that divides ``channels``."""
  if channels < 1:
    raise ValueError(f"channels must be >= 1, got {channels}")
  for g in range(min(max_groups, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1  # unreachable: g = 1 always divides


class GroupNorm(nn.Module):
  """Group norm; statistics over (H, W, C/g) per group, computed in float32.

  Params ``scale`` (init 1) and ``bias`` (init 0), shape [C], float32.
  """

  max_groups: int = GN_MAX_GROUPS
  epsilon: float = GN_EPS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    g = num_groups_for(c, self.max_groups)
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    xg = x.astype(jnp.float32).reshape(x.shape[:-1] + (g, c // g))
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)  # spatial + in-group channels
    mean = jnp.mean(xg, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
    y = ((xg - mean) * (1.0 / jnp.sqrt(var + self.epsilon))).reshape(x.shape)
    return (y * scale + bias).astype(self.dtype)


def make_norm(kind: str, dtype: Any = jnp.float32, train: bool = False) -> Callable[..., nn.Module]:
  """Return ``factory(name=None) -> nn.Module`` building a norm layer of ``kind``.

  kind: 'frozen_bn' (``FrozenBatchNorm``), 'batch_norm' (``flax.linen.BatchNorm``
  with running statistics in 'batch_stats', ``use_running_average = not train``,
  momentum 0.9 == torch momentum 0.1, eps 1e-5) or 'group_norm' (``GroupNorm``).
  """
  if kind == "frozen_bn":
    return functools.partial(FrozenBatchNorm, dtype=dtype)
  if kind == "batch_norm":
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=BN_EPS,
        dtype=dtype,
        param_dtype=jnp.float32,
    )
  if kind == "group_norm":
    return functools.partial(GroupNorm, dtype=dtype)
  raise ValueError(f"norm kind {kind!r} is unknown; choose one of {list(NORM_KINDS)}")
