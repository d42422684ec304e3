"""Networks of the low-resolution face landmark paper (lr_face_landmarks.txt, §3.1-3.2, Fig. 3, 5).

Five networks, three module classes (NHWC, inputs float in [-1, 1], outputs float32):

* :class:`HighToLowGenerator` -- G1 (§3.1, Fig. 3a): HR face ``[B, H, W, 3]`` + noise z -> LR face
  ``[B, H/4, W/4, 3]`` in [-1, 1] (128 x 128 -> 32 x 32).
* :class:`ResidualDiscriminator` -- D1 (§3.1, Fig. 3b; spectral normalisation Eq. 3) and D3
  (§3.2.3, "identical to the one used in high to low discriminator, except the input is an LR
  image concatenated with the heatmap"): ``[B, h, w, C] -> [B]`` logits.
* :class:`HeatmapUNet` -- G2 (§3.2.1, Fig. 5) and D2 (§3.2.2, "follows the same architecture as
  the heatmap generator", input heatmaps ⊕ image, output reconstructed heatmaps):
  ``[B, h, w, C] -> [B, h, w, out_channels]`` (N + 1 heatmaps), linear output.

Widths. The paper gives no channel counts. Every network has ``features`` (width of its first
level, 64) that doubles per level and is capped at ``max_features`` (512): level i has width
``min(features * 2**i, max_features)``. Tiny values (``features=4, max_features=16``) make CPU
demos and tests cheap.

Residual block (all networks, :class:`ResidualBlock`)::

    y = conv3x3 - [BN] - ReLU - conv3x3 - [BN];  s = x, or conv1x1 - [BN] when channels change
    out = ReLU(y + s)                           (He et al. 2016, post-activation)

"BatchNorm is used after every convolution layer" (§3.1): in G1 every conv (also the 1x1 skip
projections and the channel-changing convs) is followed by BN, except the final 3-channel conv
whose output goes to tanh. Plain convs between residual groups are conv3x3 - BN - ReLU.
BN is flax's ``nn.BatchNorm`` via ``jaxdet.models.norm.make_norm('batch_norm')``: running
statistics in 'batch_stats', momentum 0.9, eps 1e-5. Conv kernels are He-normal, biases 0 (the
paper gives no initialisation).

G1 layer mapping (§3.1 text and Fig. 3a, "each -> represents two residual blocks followed by a
convolution layer"; for a 128 x 128 input, w_i = min(features * 2**i, max_features))::

    z [B, noise_dim] -> Dense(H * W) -> [B, H, W, 1]; concat to the image -> 4 channels  'noise_fc'
    stem: conv3x3 -> w_0 + BN + ReLU, max-pool 2x2       128 -> 64                  'stem'
    encoder group g = 0..3 ("eight residual blocks each followed by a convolution layer to
    increase dimensionality", 4 arrows x 2 blocks):
      2 residual blocks at w_g, conv3x3 -> w_{g+1} + BN + ReLU, max-pool 2x2
                                                       64 -> 32 -> 16 -> 8 -> 4     'enc{g}_*'
    decoder group j = 0..2 ("six residual units followed by convolution layers to reduce the
    dimensionality", 3 arrows x 2 blocks, 4 x 4 -> 32 x 32):
      2 residual blocks, nearest-neighbour x2 upsampling, conv3x3 -> w_{2-j} + BN + ReLU
                                                       4 -> 8 -> 16 -> 32           'dec{j}_*'
    conv3x3 -> 3, tanh ("one convolution layer ... to output a three channel image")  'conv_out'

Reaching 4 x 4 from 128 takes five 2x2 poolings but Fig. 3a has four encoder arrows, so the
stem pools once (as a ResNet stem does). Upsampling is nearest-neighbour followed by the
channel-reducing conv (no learned de-conv: no checkerboard artefacts, and cheap on CPU). Input
sizes must be multiples of 32 (bottleneck H/32, output H/4).

D1 / D3 (§3.1 "constructed in a similar way, except max-pooling is used only in the last ...
layers considering the inputs ... are low resolution 32 x 32 images"; Fig. 3b "each ->
represents one residual block followed by a convolution layer. Max-pooling is applied only in
the last two layers")::

    stem: conv3x3 -> w_0 + ReLU                                                'stem'
    stage s = 0..num_stages-1: residual block at w_s, conv3x3 -> w_{s+1} + ReLU,
      max-pool 2x2 for the last ``num_pools`` stages (2, Fig. 3b; the text says three)  'stage{s}_*'
    global sum pool (SN-GAN, Miyato et al. 2018) or mean pool, Dense(1) -> [B]          'fc'

``spectral_norm=True`` (default, Eq. 3 ``W_SN = W / sigma(W)``) wraps *every* conv and the final
Dense in flax's ``nn.SpectralNorm`` (one power-iteration step per call, SN-GAN's setting; the
vector u and the estimate sigma live in the 'batch_stats' collection and are updated when
``train=True``, i.e. ``update_stats=train``). A conv kernel [kh, kw, in, out] is normalised as
the matrix [kh*kw*in, out]. The SN discriminator has no BatchNorm (SN-GAN's discriminators have
none: BN would rescale the features and undo the Lipschitz bound); ``batch_norm=True`` adds BN
after every conv (e.g. for D3 with ``spectral_norm=False``).

G2 / D2 U-Net (§3.2.1, Fig. 5: "16 residual blocks where both encoder and decoder have eight
residual blocks ... four groups of two blocks each and spatial resolution is halved after each
[group] using max pooling"; "->" two residual blocks, dashed: skip connections)::

    stem: conv3x3 -> w_0 [+ BN] + ReLU                                          'stem'
    encoder group g = 0..3: 2 residual blocks -> w_g (skip_g saved), max-pool 2x2
                                                     32 -> 16 -> 8 -> 4 -> 2    'enc{g}_block{0,1}'
    decoder group j = 0..3 (g = 3 - j): nearest x2 upsampling, concat [up, skip_g],
      2 residual blocks -> w_g (the first one's 1x1 projection absorbs the concat)
                                                     2 -> 4 -> 8 -> 16 -> 32    'dec{j}_block{0,1}'
    conv1x1 -> out_channels, linear                                             'conv_out'

The output is linear: G2's heatmaps are regressed with the squared error of Eq. 10 and D2's
reconstructions with Eq. 5-6 (no sigmoid in the paper). BN (``batch_norm=True`` by default)
follows every conv but the output conv. Input sizes must be multiples of 16.

Parameter counts at the defaults (features 64, max_features 512; N + 1 = 20): G1 31.5 M (128 x 128
input), D1 10.18 M, D3 10.19 M, G2 28.41 M, D2 28.42 M -- most of it in the 512-wide residual
blocks of the coarsest levels; lower ``max_features`` for lighter networks.

Calling convention (all three)::

    variables = net.init(rng, *inputs, train=False)          # rng: 'params' (SN's u needs it too)
    out = net.apply(variables, *inputs, train=False)         # eval: running BN stats, SN u fixed
    out, upd = net.apply(variables, *inputs, train=True, mutable=['batch_stats'])
                                                             # train: batch BN stats, SN u updated
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models.norm import make_norm

KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # He et al. 2015
GLOBAL_POOLS = ("sum", "mean")


def level_width(features: int, max_features: int, level: int) -> int:
  """Width of level ``level``: ``min(features * 2**level, max_features)``."""
  return min(features * 2 ** level, max_features)


def _check_widths(name: str, features: int, max_features: int) -> None:
  if features < 1 or max_features < features:
    raise ValueError(f"{name}: need 1 <= features <= max_features, got features={features}, "
                     f"max_features={max_features}")


def _check_nhwc(name: str, x, multiple: int) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} input must be NHWC [B, H, W, C], got shape {x.shape}")
  if x.shape[1] % multiple or x.shape[2] % multiple:
    raise ValueError(f"{name} needs H and W divisible by {multiple}, got {x.shape[1:3]}")


def max_pool2(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def upsample2(x):
  """Nearest-neighbour x2 upsampling of NHWC."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ConvUnit(nn.Module):
  """conv (kernel k, 'SAME') [+ spectral norm] [+ BN] [+ ReLU]. Params under 'conv' ('conv_sn'
  holds SN's u / sigma in 'batch_stats'), BN under 'bn'."""

  features: int
  kernel: int = 3
  batch_norm: bool = True
  spectral_norm: bool = False
  relu: bool = True
  power_iterations: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = nn.Conv(self.features, (self.kernel, self.kernel), padding="SAME",
                   kernel_init=KERNEL_INIT, dtype=self.dtype, param_dtype=jnp.float32,
                   name="conv")
    if self.spectral_norm:
      x = nn.SpectralNorm(conv, n_steps=self.power_iterations, name="conv_sn")(
          x, update_stats=train)
    else:
      x = conv(x)
    if self.batch_norm:
      x = make_norm("batch_norm", self.dtype, train)(name="bn")(x)
    return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
  """``ReLU(conv3x3-[BN]-ReLU-conv3x3-[BN](x) + skip(x))``; skip = identity, or conv1x1-[BN]
  ('proj') when the channel count changes. ``features`` is the output width."""

  features: int
  batch_norm: bool = True
  spectral_norm: bool = False
  power_iterations: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    unit = dict(batch_norm=self.batch_norm, spectral_norm=self.spectral_norm,
                power_iterations=self.power_iterations, dtype=self.dtype)
    y = ConvUnit(self.features, 3, relu=True, name="conv1", **unit)(x, train)
    y = ConvUnit(self.features, 3, relu=False, name="conv2", **unit)(y, train)
    skip = x
    if x.shape[-1] != self.features:
      skip = ConvUnit(self.features, 1, relu=False, name="proj", **unit)(x, train)
    return nn.relu(y + skip.astype(y.dtype))


class HighToLowGenerator(nn.Module):
  """G1 (§3.1, Fig. 3a): ``(I_HR [B, H, W, 3], z [B, noise_dim]) -> I_LRG [B, H/4, W/4, 3]``.

  Attributes:
    noise_dim: length of z (64); projected by 'noise_fc' to one H x W channel.
    features: width of the stem and of encoder group 0 (64); doubles per level.
    max_features: width cap (512).
    num_encoder_groups: encoder arrows of Fig. 3a (4 -> 8 residual blocks).
    num_decoder_groups: decoder arrows (3 -> 6 residual units, 4 x 4 -> 32 x 32).
    blocks_per_group: residual blocks per arrow (2).
    out_channels: 3 (RGB).
    dtype: compute dtype (params float32); the output is float32 in [-1, 1] (tanh).

  The output size is H / 2**(1 + E - D) (E, D the group counts; H/4 by default).
  """

  noise_dim: int = 64
  features: int = 64
  max_features: int = 512
  num_encoder_groups: int = 4
  num_decoder_groups: int = 3
  blocks_per_group: int = 2
  out_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hr, z, train: bool = False):
    _check_widths("HighToLowGenerator", self.features, self.max_features)
    if self.num_decoder_groups > self.num_encoder_groups + 1:
      raise ValueError("HighToLowGenerator: more decoder than encoder levels "
                       f"({self.num_decoder_groups} > {self.num_encoder_groups} + 1)")
    _check_nhwc("HighToLowGenerator", hr, 2 ** (self.num_encoder_groups + 1))
    b, h, w, _ = hr.shape
    if z.shape != (b, self.noise_dim):
      raise ValueError(f"HighToLowGenerator: z must be [B, noise_dim] = {(b, self.noise_dim)}, "
                       f"got {z.shape}")
    width = lambda level: level_width(self.features, self.max_features, level)
    unit = dict(batch_norm=True, dtype=self.dtype)
    noise = nn.Dense(h * w, dtype=self.dtype, param_dtype=jnp.float32, name="noise_fc")(z)
    x = jnp.concatenate([hr.astype(self.dtype), noise.reshape(b, h, w, 1).astype(self.dtype)], -1)
    x = max_pool2(ConvUnit(width(0), 3, name="stem", **unit)(x, train))
    for g in range(self.num_encoder_groups):
      for i in range(self.blocks_per_group):
        x = ResidualBlock(width(g), name=f"enc{g}_block{i}", **unit)(x, train)
      x = ConvUnit(width(g + 1), 3, name=f"enc{g}_conv", **unit)(x, train)
      x = max_pool2(x)
    for j in range(self.num_decoder_groups):
      for i in range(self.blocks_per_group):
        x = ResidualBlock(x.shape[-1], name=f"dec{j}_block{i}", **unit)(x, train)
      x = upsample2(x)
      x = ConvUnit(width(self.num_decoder_groups - 1 - j), 3, name=f"dec{j}_conv", **unit)(x, train)
    x = nn.Conv(self.out_channels, (3, 3), padding="SAME", kernel_init=KERNEL_INIT,
                dtype=self.dtype, param_dtype=jnp.float32, name="conv_out")(x)
    return jnp.tanh(x.astype(jnp.float32))


class ResidualDiscriminator(nn.Module):
  """D1 (§3.1, Fig. 3b) and D3 (§3.2.3): ``[B, h, w, C] -> [B]`` float32 logits.

  Attributes:
    features: stem width (64); doubles per stage.
    max_features: width cap (512).
    num_stages: "->" arrows of Fig. 3b, each a residual block and a conv (4).
    num_pools: stages followed by 2x2 max-pooling, the last ones (2: Fig. 3b caption; §3.1's
      text says three). 32 x 32 -> 8 x 8 before the global pool.
    spectral_norm: Eq. 3 on every conv and the final Dense (True; D1's setting).
    batch_norm: BN after every conv (False; see the module docstring).
    global_pool: 'sum' (SN-GAN) or 'mean' over the final feature map.
    power_iterations: power-iteration steps per call of each SN layer (1, SN-GAN).
    dtype: compute dtype (params float32).

  Any input channel count: 3 for D1 (LR image), 3 + N + 1 for D3 (LR image ⊕ heatmaps).
  """

  features: int = 64
  max_features: int = 512
  num_stages: int = 4
  num_pools: int = 2
  spectral_norm: bool = True
  batch_norm: bool = False
  global_pool: str = "sum"
  power_iterations: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_widths("ResidualDiscriminator", self.features, self.max_features)
    if self.global_pool not in GLOBAL_POOLS:
      raise ValueError(f"ResidualDiscriminator: global_pool must be one of {GLOBAL_POOLS}, "
                       f"got {self.global_pool!r}")
    if not 0 <= self.num_pools <= self.num_stages:
      raise ValueError(f"ResidualDiscriminator: need 0 <= num_pools <= num_stages, got "
                       f"{self.num_pools}, {self.num_stages}")
    _check_nhwc("ResidualDiscriminator", x, 2 ** self.num_pools)
    width = lambda level: level_width(self.features, self.max_features, level)
    if self.power_iterations < 1:
      raise ValueError(f"ResidualDiscriminator: power_iterations must be >= 1, got "
                       f"{self.power_iterations}")
    unit = dict(batch_norm=self.batch_norm, spectral_norm=self.spectral_norm,
                power_iterations=self.power_iterations, dtype=self.dtype)
    x = ConvUnit(width(0), 3, name="stem", **unit)(x.astype(self.dtype), train)
    for s in range(self.num_stages):
      x = ResidualBlock(width(s), name=f"stage{s}_block", **unit)(x, train)
      x = ConvUnit(width(s + 1), 3, name=f"stage{s}_conv", **unit)(x, train)
      if s >= self.num_stages - self.num_pools:
        x = max_pool2(x)
    x = x.astype(jnp.float32)
    x = jnp.sum(x, axis=(1, 2)) if self.global_pool == "sum" else jnp.mean(x, axis=(1, 2))
    fc = nn.Dense(1, kernel_init=KERNEL_INIT, dtype=jnp.float32, param_dtype=jnp.float32,
                  name="fc")
    if self.spectral_norm:
      out = nn.SpectralNorm(fc, n_steps=self.power_iterations, name="fc_sn")(
          x, update_stats=train)
    else:
      out = fc(x)
    return out[:, 0].astype(jnp.float32)


class HeatmapUNet(nn.Module):
  """G2 (§3.2.1, Fig. 5) and D2 (§3.2.2): ``[B, h, w, C] -> [B, h, w, out_channels]`` (linear).

  Attributes:
    out_channels: N + 1 heatmaps (N landmarks + background); required.
    features: width of the stem and of encoder group 0 (64); doubles per group.
    max_features: width cap (512).
    num_groups: encoder groups = decoder groups (4 -> 16 residual blocks with 2 per group).
    blocks_per_group: 2.
    batch_norm: BN after every conv but the output conv (True).
    head_init_std: std of the output conv's normal initialisation (0.001, as the heatmap head of
      Xiao et al., "Simple Baselines", 2018): the net starts near the all-zero heatmaps instead
      of He-normal noise of variance ~2 per pixel, which a short schedule spends its first
      hundreds of steps removing.
    dtype: compute dtype (params float32); the output is float32.

  Input channels are free: 3 for G2 (LR or HR image), N + 1 + 3 for D2 (heatmaps ⊕ image).
  """

  out_channels: int
  features: int = 64
  max_features: int = 512
  num_groups: int = 4
  blocks_per_group: int = 2
  batch_norm: bool = True
  head_init_std: float = 0.001
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_widths("HeatmapUNet", self.features, self.max_features)
    if self.out_channels < 1 or self.num_groups < 1 or self.blocks_per_group < 1:
      raise ValueError(f"HeatmapUNet: out_channels, num_groups and blocks_per_group must be "
                       f">= 1, got {self.out_channels}, {self.num_groups}, "
                       f"{self.blocks_per_group}")
    _check_nhwc("HeatmapUNet", x, 2 ** self.num_groups)
    width = lambda level: level_width(self.features, self.max_features, level)
    unit = dict(batch_norm=self.batch_norm, dtype=self.dtype)
    x = ConvUnit(width(0), 3, name="stem", **unit)(x.astype(self.dtype), train)
    skips = []
    for g in range(self.num_groups):
      for i in range(self.blocks_per_group):
        x = ResidualBlock(width(g), name=f"enc{g}_block{i}", **unit)(x, train)
      skips.append(x)
      x = max_pool2(x)
    for j in range(self.num_groups):
      g = self.num_groups - 1 - j
      x = jnp.concatenate([upsample2(x), skips[g]], axis=-1)
      for i in range(self.blocks_per_group):
        x = ResidualBlock(width(g), name=f"dec{j}_block{i}", **unit)(x, train)
    x = nn.Conv(self.out_channels, (1, 1),
                kernel_init=nn.initializers.normal(self.head_init_std), dtype=self.dtype,
                param_dtype=jnp.float32, name="conv_out")(x)
    return x.astype(jnp.float32)
