"""Feature Pyramid Network (Lin et al. 2017, "Feature Pyramid Networks", Sec. 3)
in the RetinaNet variant (Lin et al. 2017, "Focal Loss", Sec. 4 "Feature Pyramid
Network Backbone").

For levels l = min_level..5:  L_l = 1x1 conv(C_l);
  top-down:  M_5 = L_5,  M_l = L_l + crop(nearest_upsample_x2(M_{l+1}), size of L_l);
  output:    P_l = 3x3 conv(M_l).
Extra levels (RetinaNet): P6 = 3x3/2 conv(C5), P7 = 3x3/2 conv(ReLU(P6)).

Since backbone level l has spatial size ceil(H/2**l), the x2 upsampled map is
at least as large as the lateral and is cropped to it (bottom/right) for odd sizes.
Stride-2 convs pad 1 on each side, which gives ceil(h/2), so P_l is ceil(H/2**l)
for l = 6, 7 too.  Conv init: uniform with variance 1/fan_in (Detectron
"c2_xavier_fill"), bias 0.
Param names: 'lateral{l}', 'output{l}', 'p6', 'p7'.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

_c2_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def upsample_nearest_to(x, height: int, width: int):
  """Nearest-neighbour x2 upsampling of NHWC ``x``, cropped to (height, width)."""
  x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  if x.shape[1] < height or x.shape[2] < width:
    raise ValueError(
        f"upsampled map {x.shape[1:3]} is smaller than the lateral ({height}, {width}); "
        "backbone levels must have sizes ceil(H / 2**l)"
    )
  return x[:, :height, :width, :]


class FPN(nn.Module):
  """RetinaNet FPN: features {'C2'..'C5'} -> {level (int): P_level} for min..max_level.

  Attributes:
    min_level: 2 or 3.  max_level: 5, 6 or 7.  filters: channels of every P_l.
    dtype: compute dtype (params float32).
  """

  min_level: int = 3
  max_level: int = 7
  filters: int = 256
  dtype: Any = jnp.float32

  def _conv(self, kernel: int, stride: int, name: str) -> nn.Conv:
    p = (kernel - 1) // 2
    return nn.Conv(
        self.filters,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        kernel_init=_c2_xavier,
        bias_init=nn.initializers.zeros,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=name,
    )

  @nn.compact
  def __call__(self, features):
    if self.min_level not in (2, 3):
      raise ValueError(f"FPN min_level must be 2 or 3, got {self.min_level}")
    if self.max_level not in (5, 6, 7):
      raise ValueError(f"FPN max_level must be 5, 6 or 7, got {self.max_level}")
    needed = [f"C{l}" for l in range(self.min_level, 6)]
    missing = [k for k in needed if k not in features]
    if missing:
      raise ValueError(f"FPN features lack {missing}; got keys {sorted(features)}")

    laterals = {
        l: self._conv(1, 1, f"lateral{l}")(features[f"C{l}"].astype(self.dtype))
        for l in range(self.min_level, 6)
    }
    merged = {5: laterals[5]}
    for l in range(4, self.min_level - 1, -1):
      lat = laterals[l]
      merged[l] = lat + upsample_nearest_to(merged[l + 1], lat.shape[1], lat.shape[2])
    outputs = {l: self._conv(3, 1, f"output{l}")(merged[l]) for l in range(self.min_level, 6)}
    if self.max_level >= 6:
      outputs[6] = self._conv(3, 2, "p6")(features["C5"].astype(self.dtype))
    if self.max_level >= 7:
      outputs[7] = self._conv(3, 2, "p7")(nn.relu(outputs[6]))
    return outputs
