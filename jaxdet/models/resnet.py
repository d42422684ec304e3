"""ResNet backbone (He et al. 2016, "Deep Residual Learning", Table 1) for detection.

Returns the feature pyramid inputs C2..C5 (strides 4, 8, 16, 32) used by FPN and
RetinaNet (Lin et al. 2017).  Basic blocks for depth 18/34, bottleneck blocks for
50/101/152 with the stride on the 3x3 conv (torchvision "v1.5").

Geometry: all convolutions and the stem max-pool use torchvision's explicit
padding ((k-1)//2 on each side), which gives ceil(H/2) for every stride-2 layer
and the same pixel alignment as torchvision, so converted ImageNet weights
compute the same features.  Hence C_l has spatial size ceil(H / 2**l).

Parameter layout (see weights.py): ``stem/{conv,norm}``,
``stage{s}/block{b}/{conv1,norm1,conv2,norm2[,conv3,norm3][,downsample_conv,downsample_norm]}``.
Convs have no bias; conv init is He-normal (fan_out), as torchvision.

Frozen stages (Detectron convention): ``frozen_stages = k`` stops gradients at
the outputs of the stem and stage1..k (k = 0: stem only; -1: nothing frozen).
Norm layers of frozen parts always run in inference mode (``train=False``), so
'batch_norm' running statistics of a frozen stage are never updated.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models.norm import make_norm

# depth -> (block kind, blocks per stage)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
FROZEN, TRAINABLE = "frozen", "trainable"

_he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  p = (kernel - 1) // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((p, p), (p, p)),
      use_bias=False,
      kernel_init=_he_normal,
      dtype=dtype,
      param_dtype=jnp.float32,
      name=name,
  )


class Stem(nn.Module):
  """7x7/2 conv (pad 3) + norm + ReLU + 3x3/2 max-pool (pad 1): stride 4."""

  width: int = 64
  norm: str = "frozen_bn"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = _conv(self.width, 7, 2, self.dtype, "conv")(x.astype(self.dtype))
    x = make_norm(self.norm, self.dtype, train)(name="norm")(x)
    x = nn.relu(x)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class BasicBlock(nn.Module):
  """Two 3x3 convs; projection shortcut (1x1/stride conv + norm) when shapes change."""

  planes: int
  stride: int = 1
  norm: str = "frozen_bn"
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, self.dtype, train)
    y = _conv(self.planes, 3, self.stride, self.dtype, "conv1")(x)
    y = nn.relu(norm(name="norm1")(y))
    y = _conv(self.planes, 3, 1, self.dtype, "conv2")(y)
    y = norm(name="norm2")(y)
    return nn.relu(y + _shortcut(self, x, norm, self.planes * self.expansion))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride here, torchvision v1.5) -> 1x1 (x4 channels)."""

  planes: int
  stride: int = 1
  norm: str = "frozen_bn"
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, self.dtype, train)
    y = _conv(self.planes, 1, 1, self.dtype, "conv1")(x)
    y = nn.relu(norm(name="norm1")(y))
    y = _conv(self.planes, 3, self.stride, self.dtype, "conv2")(y)
    y = nn.relu(norm(name="norm2")(y))
    y = _conv(self.planes * self.expansion, 1, 1, self.dtype, "conv3")(y)
    y = norm(name="norm3")(y)
    return nn.relu(y + _shortcut(self, x, norm, self.planes * self.expansion))


def _shortcut(block: nn.Module, x, norm, out_features: int):
  if block.stride == 1 and x.shape[-1] == out_features:
    return x
  s = _conv(out_features, 1, block.stride, block.dtype, "downsample_conv")(x)
  return norm(name="downsample_norm")(s)


class Stage(nn.Module):
  """``num_blocks`` residual blocks named 'block0'..; the first one has ``stride``."""

  block: str
  planes: int
  num_blocks: int
  stride: int
  norm: str = "frozen_bn"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    block_cls = BasicBlock if self.block == "basic" else Bottleneck
    for b in range(self.num_blocks):
      x = block_cls(
          planes=self.planes,
          stride=self.stride if b == 0 else 1,
          norm=self.norm,
          dtype=self.dtype,
          name=f"block{b}",
      )(x, train)
    return x


class ResNet(nn.Module):
  """ResNet-{18,34,50,101,152} returning {'C2','C3','C4','C5'} (up to ``C{num_stages+1}``).

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    width: stem channels (64 for the standard nets); every stage scales with it
      (stage s has width * 2**(s-1) planes), e.g. width=16 for tiny test models.
    norm: 'frozen_bn' | 'batch_norm' | 'group_norm' (see norm.py).
    frozen_stages: -1 none, 0 stem, k in 1..4 stem + stage1..k (stop_gradient).
    dtype: compute dtype (params stay float32).
  """

  depth: int = 50
  width: int = 64
  norm: str = "frozen_bn"
  frozen_stages: int = -1
  dtype: Any = jnp.float32
  num_stages: int = 4              # 3: stop after res4 (C4 detectors run res5 in the RoI head)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth not in RESNET_SPECS:
      raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {self.depth}")
    if not -1 <= self.frozen_stages <= 4:
      raise ValueError(f"frozen_stages must be in -1..4 (-1: none, 0: stem), got {self.frozen_stages}")
    if self.width < 1:
      raise ValueError(f"width must be >= 1, got {self.width}")
    kind, counts = RESNET_SPECS[self.depth]

    frozen = self.frozen_stages >= 0
    x = Stem(self.width, self.norm, self.dtype, name="stem")(x, train and not frozen)
    if frozen:
      x = jax.lax.stop_gradient(x)
    outputs = {}
    for s, n_blocks in enumerate(counts[:self.num_stages], start=1):
      frozen = s <= self.frozen_stages
      x = Stage(
          block=kind,
          planes=self.width * 2 ** (s - 1),
          num_blocks=n_blocks,
          stride=1 if s == 1 else 2,
          norm=self.norm,
          dtype=self.dtype,
          name=f"stage{s}",
      )(x, train and not frozen)
      if frozen:
        x = jax.lax.stop_gradient(x)
      outputs[f"C{s + 1}"] = x
    return outputs


def frozen_param_labels(params, frozen_stages: int):
  """Label each leaf of ``params`` 'frozen' or 'trainable' (for ``optax.multi_transform``).

  A leaf is 'frozen' when its path contains a module named 'stem' (frozen_stages
  >= 0) or 'stage{s}' with s <= frozen_stages.  Works on a backbone-only tree or
  on a whole detector tree (e.g. 'backbone/stage1/...').  Use it so that weight
  decay and momentum never touch frozen weights, e.g.
  ``optax.multi_transform({'trainable': sgd, 'frozen': optax.set_to_zero()}, labels)``.
  """
  if not -1 <= frozen_stages <= 4:
    raise ValueError(f"frozen_stages must be in -1..4 (-1: none, 0: stem), got {frozen_stages}")
  frozen_names = set()
  if frozen_stages >= 0:
    frozen_names.add("stem")
    frozen_names.update(f"stage{s}" for s in range(1, frozen_stages + 1))

  def label(path, _):
    keys = {str(getattr(k, "key", getattr(k, "name", k))) for k in path}
    return FROZEN if keys & frozen_names else TRAINABLE

  return jax.tree_util.tree_map_with_path(label, params)
