"""A small LightCNN-style face embedding network for the identification protocol of the
low-resolution landmark paper (§4.3 "Experiments with network trained from scratch", Table 2a).

§4.3 trains "29 layer LightCNN models" (Wu et al., "A Light CNN for Deep Face Representation
with Noisy Labels", 2018) on TinyFace faces aligned with the predicted landmarks, and "since
inputs to the network are images of size 32 x 32, we disable first two max-pooling layers".

LightCNN's building block is the Max-Feature-Map (MFM 2/1): a convolution (or fc layer) with 2C
output channels followed by the elementwise maximum of its two halves of C channels, a
competitive activation in place of ReLU. LightCNN-29 (no batch norm; 128 x 128 grey inputs
there, RGB here) is, with the parameter names used here::

    conv1      MFM 5x5 / 48                                  'conv1'
    pool1      max 2x2                                       (disabled for 32 x 32, §4.3)
    stage 1    1 x residual block at 48                      'stage1_res{i}/mfm{1,2}'
               group: MFM 1x1 / 48, MFM 3x3 / 96             'stage1_group/mfm_{1x1,3x3}'
    pool2      max 2x2                                       (disabled for 32 x 32, §4.3)
    stage 2    2 x residual block at 96, group -> 192
    pool3      max 2x2
    stage 3    3 x residual block at 192, group -> 128
    stage 4    4 x residual block at 128, group -> 128
    pool4      max 2x2
    fc         MFM fc / 256 (the embedding)                  'fc/dense'
    (dropout 0.5, then the classifier over the training identities: in the trainer)

with the residual block ``x + MFM3x3(MFM3x3(x))``. ``LightCNN`` builds that layout with
configurable size: ``width`` scales the channel widths as ``width * (1, 2, 4, 8/3, 8/3)``
(``width=48`` gives LightCNN-29's 48 / 96 / 192 / 128 / 128), ``blocks`` is the number of
residual blocks per stage (LightCNN-29: ``(1, 2, 3, 4)``), ``pools`` says after which of conv1 /
stage 1 / stage 2 / stage 4 a max-pooling runs (LightCNN-29 on 32 x 32 faces, §4.3:
``(False, False, True, True)``), and ``embed_dim`` is the MFM fc output (LightCNN-29: 256).

The defaults are tiny (``width=4``: channels 4 / 8 / 16 / 11 / 11, no residual blocks,
``embed_dim=64``) so that 300 training steps of batch 32 on 32 x 32 faces run in under a minute
on a 2-core CPU (~0.1 s a step + ~15 s of compilation);
``LightCNN(**LIGHTCNN29)`` is the paper's network for 32 x 32 inputs.

Input: float ``[B, S, S, 3]`` (the protocol feeds ``uint8 / 127.5 - 1``); output: float32
``[B, embed_dim]`` raw embeddings (the protocol L2-normalises them, cosine similarity).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# LightCNN-29 (Wu et al. 2018, Table / Fig. of the 29-layer network) with the first two max
# poolings disabled for 32 x 32 inputs (§4.3).
LIGHTCNN29 = dict(width=48, blocks=(1, 2, 3, 4), pools=(False, False, True, True), embed_dim=256)
WIDTH_RATIOS = (1.0, 2.0, 4.0, 8.0 / 3.0, 8.0 / 3.0)   # conv1, stage 1..4 outputs (48-based)


def mfm(x):
  """Max-Feature-Map 2/1: ``[..., 2C] -> [..., C]``, the elementwise max of the two halves
  ``x[..., :C]`` and ``x[..., C:]`` (LightCNN's activation, §4.3)."""
  c2 = x.shape[-1]
  if c2 % 2:
    raise ValueError(f"MFM needs an even number of channels, got {c2}.")
  return jnp.maximum(x[..., : c2 // 2], x[..., c2 // 2:])


def lecun_normal_flat(key, shape, dtype=jnp.float32):
  """``nn.initializers.lecun_normal()`` (truncated normal, variance 1 / fan_in with fan_in =
  prod(shape[:-1])), drawn as a flat vector and reshaped: the same distribution, but XLA:CPU
  compiles the 4-d draw of a conv kernel pathologically slowly (~4 s for a 3x3x4x8 kernel vs
  0.3 s flat), which made ``init`` of the small network take ~8 s."""
  fan_in = 1
  for d in shape[:-1]:
    fan_in *= d
  size = fan_in * shape[-1]
  std = (1.0 / max(1, fan_in)) ** 0.5 / 0.87962566103423978   # std of N(0, 1) truncated at +-2
  return (jax.random.truncated_normal(key, -2.0, 2.0, (size,), dtype) * std).reshape(shape)


def conv2d_same(x, kernel, impl: str = "auto"):
  """Stride-1 'same' convolution ``[B, H, W, Ci] * [k, k, Ci, Co] -> [B, H, W, Co]`` (odd k).

  ``impl='lax'``: ``lax.conv_general_dilated``. ``impl='im2col'``: the k*k shifted copies of the
  padded input concatenated on channels, times the reshaped kernel (the same function; a test
  compares them). On CPU, XLA differentiates some convolutions w.r.t. the kernel very slowly
  (~150 ms for a 32 x 32, 16 -> 64 channel 3x3 layer at batch 32 vs ~25 ms as a matmul), which
  made the 32 x 32 stages of §4.3's LightCNN (first two poolings disabled) dominate CPU training;
  ``'auto'`` picks im2col on the CPU backend and lax elsewhere.
  """
  k, k2, ci, co = kernel.shape
  if k != k2 or k % 2 == 0:
    raise ValueError(f"conv2d_same needs an odd square kernel, got {kernel.shape}.")
  if impl == "auto":
    impl = "im2col" if jax.default_backend() == "cpu" else "lax"
  if impl == "lax":
    p = (k - 1) // 2
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if impl != "im2col":
    raise ValueError(f"conv impl {impl!r}: use 'auto', 'lax' or 'im2col'.")
  p = (k - 1) // 2
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=-1)
  return cols @ kernel.reshape(k * k * ci, co)


class MFMConv(nn.Module):
  """Stride-1 'same' convolution to ``2 * features`` channels + MFM -> ``features`` channels.
  Parameters (the layout of ``nn.Conv``): ``kernel [k, k, C_in, 2 * features]`` (LeCun normal,
  ``lecun_normal_flat``),
  ``bias [2 * features]`` (zeros). ``impl``: see ``conv2d_same``."""

  features: int
  kernel: int = 3
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ci = x.shape[-1]
    kernel = self.param("kernel", lecun_normal_flat,
                        (self.kernel, self.kernel, ci, 2 * self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (2 * self.features,), jnp.float32)
    y = conv2d_same(x.astype(self.dtype), kernel.astype(self.dtype), self.impl)
    return mfm(y + bias.astype(self.dtype))


class MFMDense(nn.Module):
  """Fully connected layer to ``2 * features`` + MFM -> ``features`` ('dense' submodule:
  ``kernel [C_in, 2 * features]``, ``bias``)."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(2 * self.features, dtype=self.dtype, param_dtype=jnp.float32,
                 kernel_init=lecun_normal_flat, name="dense")(x)
    return mfm(y)


class ResidualBlock(nn.Module):
  """LightCNN-29 residual block: ``x + MFM3x3(MFM3x3(x))`` (same width in and out)."""

  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    y = MFMConv(c, 3, self.impl, dtype=self.dtype, name="mfm1")(x)
    y = MFMConv(c, 3, self.impl, dtype=self.dtype, name="mfm2")(y)
    return x + y


class Group(nn.Module):
  """LightCNN's "group": MFM 1x1 (in -> in) then MFM 3x3 (in -> ``features``)."""

  features: int
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = MFMConv(x.shape[-1], 1, self.impl, dtype=self.dtype, name="mfm_1x1")(x)
    return MFMConv(self.features, 3, self.impl, dtype=self.dtype, name="mfm_3x3")(x)


def _max_pool(x):
  # 2x2 / 2 with ceil mode (PyTorch LightCNN uses ceil_mode=True): odd sides keep their last row.
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class LightCNN(nn.Module):
  """LightCNN-style embedding network (module docstring; §4.3, Table 2a).

  Attributes:
    width: conv1 channels; the stages use ``round(width * WIDTH_RATIOS)`` (48: LightCNN-29).
    blocks: residual blocks per stage (4 stages; LightCNN-29: (1, 2, 3, 4)).
    pools: max-pool 2x2 after conv1, stage 1, stage 2, stage 4 (LightCNN-29: all; §4.3 disables
      the first two for 32 x 32 faces).
    embed_dim: size of the MFM fc embedding (LightCNN-29: 256).
    dropout: dropout rate on the embedding when ``train`` (LightCNN-29 applies 0.5 between the
      embedding and its classifier; 0 here by default: the tiny network does not need it).
      Needs an rng 'dropout' when training.
    impl: convolution implementation ('auto', 'lax', 'im2col'; ``conv2d_same``).
  """

  width: int = 4
  blocks: tuple[int, ...] = (0, 0, 0, 0)
  pools: tuple[bool, ...] = (False, False, True, True)
  embed_dim: int = 64
  dropout: float = 0.0
  impl: str = "auto"
  dtype: Any = jnp.float32

  @property
  def widths(self) -> tuple[int, ...]:
    return tuple(max(1, int(round(self.width * r))) for r in WIDTH_RATIOS)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if len(self.blocks) != 4 or len(self.pools) != 4:
      raise ValueError(f"LightCNN: blocks {self.blocks} and pools {self.pools} need 4 entries "
                       f"(stages 1-4; pools after conv1, stage 1, stage 2, stage 4).")
    if x.ndim != 4:
      raise ValueError(f"LightCNN: input must be [B, H, W, C], got shape {x.shape}.")
    w = self.widths
    x = x.astype(self.dtype)
    x = MFMConv(w[0], 5, self.impl, dtype=self.dtype, name="conv1")(x)
    if self.pools[0]:
      x = _max_pool(x)
    for s in range(4):
      for b in range(self.blocks[s]):
        x = ResidualBlock(self.impl, dtype=self.dtype, name=f"stage{s + 1}_res{b}")(x)
      x = Group(w[s + 1], self.impl, dtype=self.dtype, name=f"stage{s + 1}_group")(x)
      if s == 0 and self.pools[1]:
        x = _max_pool(x)
      elif s == 1 and self.pools[2]:
        x = _max_pool(x)
      elif s == 3 and self.pools[3]:
        x = _max_pool(x)
    x = MFMDense(self.embed_dim, dtype=self.dtype, name="fc")(x.reshape(x.shape[0], -1))
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x.astype(jnp.float32)
