"""MTGAN networks (Zhang et al., "Multi-task GAN for small object detection"): the x4
super-resolution generator and the multi-task discriminator of §3.2 / Table 1.

Generator (§3.2 "Generator Network", Table 1 left)
---------------------------------------------------
``I_LR [B, h, w, 3] -> I_SR [B, 4h, 4w, 3]`` (16 x 16 RoI crops -> 64 x 64)::

    conv 9x9/64 + PReLU                                   'conv_in', 'prelu_in'
    5 x residual block:                                   'block{b}'
        conv 3x3/64 + BN + PReLU, conv 3x3/64 + BN, + x
    conv 3x3/64 + BN, + output of 'prelu_in'              'conv_mid', 'norm_mid'
    de-conv 3x3/256 stride 2 (x2) + PReLU                 'up1/{deconv,prelu}'
    de-conv 3x3/256 stride 2 (x2) + PReLU                 'up2/{deconv,prelu}'
    conv 9x9/3 + tanh                                     'conv_out'

Where the paper is explicit: the layer list, kernel sizes, widths and strides of Table 1; "five
residual blocks ... two conv layers with 3x3 kernels and 64 feature maps followed by
batch-normalization layers and parametric ReLU" and "two up-sampling fractionally-strided conv
layers, three conv layers" (§3.2); weights N(0, 0.02), biases 0 (§4.2).

Where it is silent, the generator follows SRGAN (Ledig et al. 2017, Fig. 4), which MTGAN cites
as the design it extends (§3.1 "our proposed method (MTGAN) extends classical SRGAN"):

* PReLU after the first 9x9 conv and after each up-sampling layer; inside a residual block the
  second BN is *not* followed by an activation before the skip sum (conv-BN-PReLU-conv-BN, + x).
* The long skip: the output of the first conv is added after 'conv_mid'/'norm_mid'
  (``long_skip=True``; set False for the plain chain that Table 1 draws).
* PReLU is channel-shared (one slope per layer, init 0.25: He et al. 2015 §2.1-2.3 and
  PyTorch's ``nn.PReLU()`` default; the paper's implementation is PyTorch, §4.2).
  ``prelu_per_channel=True`` gives one slope per channel instead.
* Every conv / de-conv has a bias (§4.2 "the biases are initialized with 0"; PyTorch's default
  ``bias=True``), also those followed by BN, where it is redundant but harmless.
* BN (``norm='batch_norm'``: running statistics in 'batch_stats', momentum 0.9 == torch 0.1,
  eps 1e-5) has the usual init scale 1, bias 0: the N(0, 0.02) of §4.2 is applied to conv /
  de-conv kernels only (a zero-mean BN scale would switch the features off).
* The de-conv is PyTorch's ``ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)``
  (exact x2 size: ``out[2i - 1 + a] += x[i] W[a]``), implemented as ``nn.ConvTranspose`` with
  ``transpose_kernel=True`` and padding (1, 2); its kernel is ``[3, 3, out, in]`` (= torch
  ``weight.permute(2, 3, 1, 0)``). The second de-conv maps 256 -> 256 channels (Table 1 lists
  256 kernels for both), so 'conv_out' sees 256 channels.
* Output range: ``output='tanh'`` (default) squashes to [-1, 1], the pixel space of SRGAN
  (§3.2 there: HR images scaled to [-1, 1]). The experiment must therefore feed ``I_LR`` and
  ``I_HR`` as ``uint8 / 127.5 - 1`` (the pixel MSE of Eq. 4 is computed in that space), and the
  discriminator sees real and fake images in that same space. ``output='linear'`` leaves the
  last conv unbounded (any normalised pixel space, e.g. ImageNet mean/std).

Parameter count at paper size (``features=64, up_features=256, num_blocks=5``, channel-shared
PReLU): 1,223,243 trainable parameters (+ 1,408 BN running statistics in 'batch_stats'); the
test derives this number layer by layer from Table 1.

Discriminator (§3.2 "Discriminator Network", Table 1 right, §4.2)
----------------------------------------------------------------
A ResNet-50/101 (``jaxdet.models.resnet.ResNet``, parameters under 'backbone/' so ImageNet
weights load with ``weights.load_backbone_weights``) on 64 x 64 RoI images, global average
pooling of C5 (2 x 2 for a 64 x 64 input), and three parallel fc layers (§3.2 "we add three
parallel fc layers behind the last average pooling layer"):

* ``'adv'``  [B]      fc_GAN logit; ``sigmoid`` of it is D's probability that the input is a real
  HR image (the sigmoid is applied inside the loss, in the stable log-sigmoid form).
* ``'cls'``  [B, K+1] fc_cls logits; softmax over K+1 classes, **background at index 0**
  (p_cls = (p_0, ..., p_K) and the indicator [u >= 1] of Eq. 7 make 0 the background; the
  RoI crops store label = class + 1).
* ``'reg'``  [B, 4]   fc_reg (t_x, t_y, t_w, t_h), class-agnostic: one box per RoI, compared
  with the crop's ``reg_target`` v (Eq. 7).

fc weights N(0, 0.1), biases 0 (§4.2). ``adv_branch=False`` / ``reg_branch=False`` drop 'adv' /
'reg' for the ablations "D without adversarial branch" and "w/o reg+ branch" (§4.3, Tables 3
and 5). Outputs are float32 whatever the compute ``dtype``.

Table 1's discriminator column (conv 3x3/64 stride 2, then "layer1..4" with 128/256/512/1024
kernels of size 1) matches no standard ResNet-50; since §4.2 uses ResNet-50/101 "pre-trained on
ImageNet", the trunk here is the standard (torchvision v1.5) ResNet, which is what such weights
fit. The paper does not say how BN is run in D; the default ``norm='frozen_bn'`` is the usual
choice for fine-tuning an ImageNet trunk on small batches ('batch_norm' and 'group_norm' are
available, the latter for training from scratch).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models.norm import make_norm
from jaxdet.models.resnet import RESNET_SPECS, ResNet

GENERATOR_INIT_STD = 0.02  # §4.2: "zero-mean Gaussian distribution with standard deviation 0.02"
HEAD_INIT_STD = 0.1        # §4.2: "The fc layers are initialized by ... standard deviation 0.1"
PRELU_INIT = 0.25          # He et al. 2015; PyTorch nn.PReLU() default
OUTPUTS = ("tanh", "linear")


class PReLU(nn.Module):
  """Parametric ReLU (He et al. 2015): ``max(x, 0) + a * min(x, 0)``.

  Param ``alpha``: shape ``()`` (channel-shared, default) or ``[C]`` (``per_channel``), float32,
  init ``init``.
  """

  per_channel: bool = False
  init: float = PRELU_INIT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = (x.shape[-1],) if self.per_channel else ()
    alpha = self.param("alpha", nn.initializers.constant(self.init), shape, jnp.float32)
    x = x.astype(self.dtype)
    return jnp.where(x >= 0, x, alpha.astype(self.dtype) * x)


def _gen_conv(features: int, kernel: int, dtype: Any, name: str) -> nn.Conv:
  p = (kernel - 1) // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      padding=((p, p), (p, p)),
      use_bias=True,
      kernel_init=nn.initializers.normal(GENERATOR_INIT_STD),
      bias_init=nn.initializers.zeros,
      dtype=dtype,
      param_dtype=jnp.float32,
      name=name,
  )


class ResidualBlock(nn.Module):
  """conv 3x3 + BN + PReLU, conv 3x3 + BN, + input (SRGAN Fig. 4; MTGAN §3.2)."""

  features: int = 64
  norm: str = "batch_norm"
  prelu_per_channel: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, self.dtype, train)
    y = _gen_conv(self.features, 3, self.dtype, "conv1")(x)
    y = norm(name="norm1")(y)
    y = PReLU(self.prelu_per_channel, dtype=self.dtype, name="prelu")(y)
    y = _gen_conv(self.features, 3, self.dtype, "conv2")(y)
    y = norm(name="norm2")(y)
    return x + y.astype(x.dtype)


class SubPixelDeconv(nn.Module):
  """The 3x3 stride-2 de-conv of Table 1 (torch padding 1, output_padding 1), computed as one
  2x2 convolution to 4 phases followed by depth-to-space.

  Same parameters (``kernel`` [3, 3, features, in_features], the layout of ``nn.ConvTranspose``
  with ``transpose_kernel=True``; ``bias``) and the same function as that layer (a test compares
  them to float rounding): output pixel 2j of an axis is x[j] W[1], pixel 2j+1 is
  x[j] W[2] + x[j+1] W[0]. Written this way because XLA:CPU differentiates transposed
  convolutions ~30x slower than regular ones (10 s vs 0.3 s for one 32x32x64 -> 64x64 layer at
  batch 64), which made the generator step dominate CPU runs.
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.normal(GENERATOR_INIT_STD),
                        (3, 3, self.features, cin), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    w = jnp.swapaxes(kernel, 2, 3).astype(self.dtype)     # [3, 3, in, out]
    taps = {0: {0: 1}, 1: {0: 2, 1: 0}}   # output phase -> {input offset: kernel index}
    phases = jnp.zeros((2, 2, cin, 2, 2, self.features), self.dtype)
    for py in (0, 1):
      for px in (0, 1):
        for a, ky in taps[py].items():
          for b, kx in taps[px].items():
            phases = phases.at[a, b, :, py, px, :].set(w[ky, kx])
    phases = phases.reshape(2, 2, cin, 4 * self.features)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (0, 1), (0, 1), (0, 0)))
    y = jax.lax.conv_general_dilated(x, phases, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w_, _ = y.shape
    y = y.reshape(n, h, w_, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h, 2 * w_, self.features) + bias.astype(self.dtype)


class UpsampleBlock(nn.Module):
  """Learned x2 up-sampling: de-conv 3x3 stride 2 (torch padding 1, output_padding 1) + PReLU."""

  features: int = 256
  prelu_per_channel: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = SubPixelDeconv(self.features, dtype=self.dtype, name="deconv")(x)
    return PReLU(self.prelu_per_channel, dtype=self.dtype, name="prelu")(x)


class Generator(nn.Module):
  """MTGAN generator (Table 1): ``I_LR [B, h, w, 3] -> I_SR [B, 4h, 4w, out_channels]``.

  Attributes:
    features: width of the first conv, the residual blocks and 'conv_mid' (64 in Table 1).
    up_features: width of the two de-conv layers (256 in Table 1).
    num_blocks: residual blocks (5 in Table 1).
    out_channels: 3 (RGB).
    norm: norm of the residual blocks and 'conv_mid' ('batch_norm' as §3.2; see norm.py).
    long_skip: add the first conv's output after 'norm_mid' (SRGAN; see the module docstring).
    prelu_per_channel: one PReLU slope per channel instead of one per layer.
    output: 'tanh' (SR in [-1, 1]) or 'linear'.
    dtype: compute dtype (params float32); the output is float32.

  ``train=True`` uses batch statistics and updates 'batch_stats' (``mutable=['batch_stats']``).
  """

  features: int = 64
  up_features: int = 256
  num_blocks: int = 5
  out_channels: int = 3
  norm: str = "batch_norm"
  long_skip: bool = True
  prelu_per_channel: bool = False
  output: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.output not in OUTPUTS:
      raise ValueError(f"Generator output must be one of {list(OUTPUTS)}, got {self.output!r}")
    if min(self.features, self.up_features, self.out_channels) < 1 or self.num_blocks < 0:
      raise ValueError(
          f"Generator widths must be >= 1 and num_blocks >= 0, got features={self.features}, "
          f"up_features={self.up_features}, out_channels={self.out_channels}, "
          f"num_blocks={self.num_blocks}")
    if x.ndim != 4:
      raise ValueError(f"Generator input must be NHWC [B, h, w, C], got shape {x.shape}")
    x = x.astype(self.dtype)
    x = _gen_conv(self.features, 9, self.dtype, "conv_in")(x)
    x = PReLU(self.prelu_per_channel, dtype=self.dtype, name="prelu_in")(x)
    skip = x
    for b in range(self.num_blocks):
      x = ResidualBlock(self.features, self.norm, self.prelu_per_channel, self.dtype,
                        name=f"block{b}")(x, train)
    x = _gen_conv(self.features, 3, self.dtype, "conv_mid")(x)
    x = make_norm(self.norm, self.dtype, train)(name="norm_mid")(x)
    if self.long_skip:
      x = x + skip.astype(x.dtype)
    for u in (1, 2):
      x = UpsampleBlock(self.up_features, self.prelu_per_channel, self.dtype, name=f"up{u}")(x)
    x = _gen_conv(self.out_channels, 9, self.dtype, "conv_out")(x)
    x = x.astype(jnp.float32)
    return jnp.tanh(x) if self.output == "tanh" else x


class Discriminator(nn.Module):
  """MTGAN multi-task discriminator (§3.2): ResNet trunk + GAP + fc_GAN / fc_cls / fc_reg.

  Attributes:
    num_classes: K, the number of object classes; 'cls' has K + 1 logits, background at 0.
    depth: ResNet depth (50 or 101 in the paper; any of ``RESNET_SPECS`` works).
    width: ResNet stem width (64 standard; smaller for tests and demos).
    norm: ResNet norm kind ('frozen_bn' | 'batch_norm' | 'group_norm').
    frozen_stages: as ``ResNet.frozen_stages`` (-1: nothing frozen).
    adv_branch: keep fc_GAN ('adv'); False for the "D without adversarial branch" ablation.
    reg_branch: keep fc_reg ('reg'); False for the "w/o reg+ branch" ablation.
    head_init_std: std of the fc weights (0.1, §4.2).
    dtype: compute dtype (params float32); outputs are float32.

  Returns ``{'adv': [B], 'cls': [B, K+1], 'reg': [B, 4]}`` (minus dropped branches).
  """

  num_classes: int
  depth: int = 50
  width: int = 64
  norm: str = "frozen_bn"
  frozen_stages: int = -1
  adv_branch: bool = True
  reg_branch: bool = True
  head_init_std: float = HEAD_INIT_STD
  dtype: Any = jnp.float32

  def _fc(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.normal(self.head_init_std),
        bias_init=nn.initializers.zeros,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=name,
    )

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.num_classes < 1:
      raise ValueError(f"Discriminator num_classes (K, without background) must be >= 1, "
                       f"got {self.num_classes}")
    if self.depth not in RESNET_SPECS:
      raise ValueError(f"Discriminator depth must be one of {sorted(RESNET_SPECS)}, got {self.depth}")
    if images.ndim != 4:
      raise ValueError(f"Discriminator input must be NHWC [B, H, W, C], got shape {images.shape}")
    c5 = ResNet(depth=self.depth, width=self.width, norm=self.norm,
                frozen_stages=self.frozen_stages, dtype=self.dtype,
                name="backbone")(images.astype(self.dtype), train)["C5"]
    pooled = jnp.mean(c5.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    out = {}
    if self.adv_branch:
      out["adv"] = self._fc(1, "fc_gan")(pooled)[:, 0].astype(jnp.float32)
    out["cls"] = self._fc(self.num_classes + 1, "fc_cls")(pooled).astype(jnp.float32)
    if self.reg_branch:
      out["reg"] = self._fc(4, "fc_reg")(pooled).astype(jnp.float32)
    return out
