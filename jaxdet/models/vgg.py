"""VGG-16 backbone for SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector",
Sec. 3 "Base network"; layer layout of the reference ssd.pytorch ``vgg()``) and
SSD's ``L2Norm`` (Liu et al. 2016, Sec. 3, after ParseNet, Liu et al. 2015).

VGG-16 (Simonyan & Zisserman 2015, configuration D): five blocks of 3x3 convs
(pad 1, bias, ReLU) with 64, 128, 256, 512, 512 channels (2, 2, 3, 3, 3 convs),
each followed by a 2x2/2 max-pool.  SSD's changes:

* pool3 uses ceil mode (ceil(H/2); 300 -> 38 at conv4_3, 512 -> 64); the
  other 2x2 pools floor (for even sizes both agree);
* pool5 is 3x3, stride 1, pad 1 (keeps the stride-16 resolution);
* fc6 / fc7 become ``conv6`` (3x3, 1024, dilation 6, pad 6, "a trous") and
  ``conv7`` (1x1, 1024), both with ReLU.  Their ImageNet weights are
  subsampled from fc6 / fc7 (see ``jaxdet.tools.convert_weights``).

Output: ``{'conv4_3': [B, H/8, W/8, 512], 'conv7': [B, H/16, W/16, 1024]}``
(NHWC, ReLU applied; conv4_3 is taken before pool4 and *before* L2Norm, which
the SSD head applies).

Parameter names (match the converter's keys, e.g. ``backbone/conv1_1/kernel``):
``conv1_1, conv1_2, conv2_1, conv2_2, conv3_1..3, conv4_1..3, conv5_1..3,
conv6, conv7``, each with ``kernel`` (HWIO) and ``bias``.  Conv init is
He-normal (fan_out) with zero bias, like torchvision's VGG.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models.norm import GroupNorm

# (block, number of 3x3 convs, channels) for VGG-16 (configuration D).
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
VGG16_CONV_NAMES = tuple(f"conv{b}_{i}" for b, n, _ in VGG16_BLOCKS for i in range(1, n + 1))
CEIL_MODE_POOLS = (3,)  # SSD: only pool3 has ceil_mode=True
L2NORM_INIT = 20.0      # SSD Sec. 3 / ParseNet: conv4_3 norm scale initialised to 20
L2NORM_EPS = 1e-10

_he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, dtype: Any, name: str, dilation: int = 1) -> nn.Conv:
  p = dilation * (kernel - 1) // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      padding=((p, p), (p, p)),
      kernel_dilation=(dilation, dilation),
      kernel_init=_he_normal,
      bias_init=nn.initializers.zeros,
      dtype=dtype,
      param_dtype=jnp.float32,
      name=name,
  )


def max_pool_2x2(x, ceil_mode: bool):
  """2x2/2 max-pool on NHWC; with ``ceil_mode`` an odd H/W gets one extra output
  row/column (the window hanging over the edge sees -inf padding), as torch's
  ``MaxPool2d(2, 2, ceil_mode=True)``."""
  if ceil_mode:
    pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
  else:
    pad = ((0, 0), (0, 0))
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=pad)


def scaled_channels(channels: int, width: float) -> int:
  """``round(channels * width)``, at least 1: the channel count of a ``width``-scaled layer."""
  return max(1, int(round(channels * width)))


class VGG16(nn.Module):
  """SSD's VGG-16 base network returning {'conv4_3', 'conv7'}.

  Attributes:
    dtype: compute dtype (params stay float32).
    width: channel multiplier (1.0: the real VGG-16, whose ImageNet weights load; e.g. 0.125
      for the CPU demo, every layer ``scaled_channels(c, width)`` wide).
    group_norm: a GroupNorm after every conv (before its ReLU), named ``<conv>_norm``. VGG-16
      has no normalisation; this is for training from scratch (the demo), where the 15 plain
      convs of SSD's base do not train well (DSOD, Shen et al. 2017, §3.2). Off for ImageNet
      weights (the converter's files have no norm parameters).
  """

  dtype: Any = jnp.float32
  width: float = 1.0
  group_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics or dropout: train and eval compute the same
    if not self.width > 0:
      raise ValueError(f"VGG16 width must be > 0, got {self.width!r}")

    def conv_relu(x, channels, kernel, name, dilation=1):
      x = _conv(scaled_channels(channels, self.width), kernel, self.dtype, name, dilation)(x)
      if self.group_norm:
        x = GroupNorm(dtype=self.dtype, name=f"{name}_norm")(x)
      return nn.relu(x)

    x = x.astype(self.dtype)
    outputs = {}
    for block, n_convs, channels in VGG16_BLOCKS:
      for i in range(1, n_convs + 1):
        x = conv_relu(x, channels, 3, f"conv{block}_{i}")
      if block == 4:
        outputs["conv4_3"] = x
      if block < 5:
        x = max_pool_2x2(x, ceil_mode=block in CEIL_MODE_POOLS)
    x = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))  # pool5
    x = conv_relu(x, 1024, 3, "conv6", dilation=6)
    outputs["conv7"] = conv_relu(x, 1024, 1, "conv7")
    return outputs


class L2Norm(nn.Module):
  """Per-location L2 normalisation over channels times a learned per-channel scale
  (SSD Sec. 3: conv4_3 "has a different feature scale", so its features are
  L2-normalised and rescaled, following ParseNet, Liu et al. 2015, Eq. 1-3):

      y[..., c] = scale[c] * x[..., c] / (sqrt(sum_c' x[..., c']^2) + eps)

  with ``scale`` initialised to 20 and eps = 1e-10 (ssd.pytorch).  Computed in
  float32; an all-zero location maps to 0 with a finite gradient (the square root
  is taken through a ``where`` so its derivative at 0 is never evaluated).
  Param: ``scale`` [C] float32.
  """

  scale_init: float = L2NORM_INIT
  epsilon: float = L2NORM_EPS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.constant(self.scale_init), (c,), jnp.float32)
    xf = x.astype(jnp.float32)
    sq = jnp.sum(jnp.square(xf), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0) + self.epsilon
    return (xf / norm * scale).astype(self.dtype)
