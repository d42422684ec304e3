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

Rematerialisation (``ResNet.remat``, ``config.model.remat``): reverse-mode differentiation keeps
every intermediate activation of the forward pass until the backward pass uses it, so the
backbone's memory grows with depth x batch x pixels. ``flax.linen.remat`` (``jax.checkpoint``)
around a part keeps only that part's *input*; its internal activations are recomputed from it
during the backward pass (one more forward of the part). Wrapping each of the S parts of a net
(stem and stages, or every residual block) cuts the stored activations from the sum over all
layers to the S part boundaries plus the internals of the one part being differentiated, for
about one extra backbone forward per step. The lifted module keeps its name, so the parameter
tree, the outputs and the gradients are those of the plain net (recomputed with the same ops;
in float32 the last bits can differ where XLA fuses the recomputation differently). Specs (``parse_remat``): ``'none'``; ``'stages'`` (stem and every stage);
``'blocks'`` (every residual block, plus the stem); or stage indices ``'0,3,4'`` (0 = stem).

The detector modules build their ``ResNet`` without this attribute (``remat=None``); it then
takes the spec of the enclosing ``backbone_remat(spec)`` context at trace time, which the
experiments' train steps set from ``config.model.remat`` around the gradient computation (the
only place where remat changes anything: without differentiation it is a plain forward).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator

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
REMAT_MODES = ("none", "stages", "blocks")

# The remat spec a ResNet built with remat=None uses (see backbone_remat).
_REMAT_CONTEXT: contextvars.ContextVar[str] = contextvars.ContextVar("jaxdet_resnet_remat",
                                                                     default="none")


def parse_remat(spec, num_stages: int = 4) -> tuple[frozenset, bool]:
  """``spec`` -> (parts to rematerialise, per block?); parts are 0 (stem) .. ``num_stages``.

  'none' -> ({}, False); 'stages' -> ({0..S}, False): each stage is one checkpointed unit;
  'blocks' -> ({0..S}, True): each residual block is one (more boundaries kept, a smaller
  recompute working set); '2,3' or (2, 3) -> those stages only. Raises ValueError otherwise.
  """
  if isinstance(spec, str):
    text = spec.strip().lower()
    if text in ("", "none"):
      return frozenset(), False
    if text in ("stages", "blocks"):
      return frozenset(range(num_stages + 1)), text == "blocks"
    try:
      parts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
      parts = None
  else:
    try:
      parts = [int(t) for t in spec]
    except (TypeError, ValueError):
      parts = None
  if not parts or any(not 0 <= p <= num_stages for p in parts):
    raise ValueError(f"remat spec {spec!r}: use one of {REMAT_MODES} or comma-separated part "
                     f"indices in 0..{num_stages} (0: stem, s: stage s), e.g. '3,4'.")
  return frozenset(parts), False


@contextlib.contextmanager
def backbone_remat(spec: str) -> Iterator[None]:
  """Within this context a ``ResNet(remat=None)`` traced for differentiation uses ``spec``.

  Tracing is synchronous, so the context only has to enclose the ``jax.value_and_grad`` /
  ``jax.lax.scan`` call that traces the model (``jax.jit`` caches the result per function).
  """
  parse_remat(spec)  # fail here, with the spec, rather than inside a trace
  token = _REMAT_CONTEXT.set(spec)
  try:
    yield
  finally:
    _REMAT_CONTEXT.reset(token)

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


@functools.lru_cache(maxsize=None)
def _remat(module_cls):
  """``module_cls`` lifted by ``nn.remat`` (same name, same variables). ``static_argnums=(2,)``
  keeps the Python bool ``train`` of ``__call__(self, x, train)`` static (self counts as 0)."""
  return nn.remat(module_cls, static_argnums=(2,))


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
  remat_blocks: bool = False       # each block a jax.checkpoint unit (ResNet remat='blocks')

  @nn.compact
  def __call__(self, x, train: bool):
    block_cls = BasicBlock if self.block == "basic" else Bottleneck
    if self.remat_blocks:
      block_cls = _remat(block_cls)
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
    remat: rematerialisation spec (``parse_remat``: 'none' | 'stages' | 'blocks' | '3,4');
      None: the enclosing ``backbone_remat`` context's ('none' outside one).
  """

  depth: int = 50
  width: int = 64
  norm: str = "frozen_bn"
  frozen_stages: int = -1
  dtype: Any = jnp.float32
  num_stages: int = 4              # 3: stop after res4 (C4 detectors run res5 in the RoI head)
  remat: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth not in RESNET_SPECS:
      raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {self.depth}")
    if not -1 <= self.frozen_stages <= 4:
      raise ValueError(f"frozen_stages must be in -1..4 (-1: none, 0: stem), got {self.frozen_stages}")
    if self.width < 1:
      raise ValueError(f"width must be >= 1, got {self.width}")
    kind, counts = RESNET_SPECS[self.depth]
    spec = _REMAT_CONTEXT.get() if self.remat is None else self.remat
    remat_parts, per_block = parse_remat(spec)  # stages past num_stages: not built here
    # Frozen parts get no backward pass, so they are never rematerialised.
    stem_cls = _remat(Stem) if 0 in remat_parts and self.frozen_stages < 0 else Stem

    frozen = self.frozen_stages >= 0
    x = stem_cls(self.width, self.norm, self.dtype, name="stem")(x, train and not frozen)
    if frozen:
      x = jax.lax.stop_gradient(x)
    outputs = {}
    for s, n_blocks in enumerate(counts[:self.num_stages], start=1):
      frozen = s <= self.frozen_stages
      remat_here = s in remat_parts and not frozen
      stage_cls = _remat(Stage) if remat_here and not per_block else Stage
      x = stage_cls(
          block=kind,
          planes=self.width * 2 ** (s - 1),
          num_blocks=n_blocks,
          stride=1 if s == 1 else 2,
          norm=self.norm,
          dtype=self.dtype,
          remat_blocks=remat_here and per_block,
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
