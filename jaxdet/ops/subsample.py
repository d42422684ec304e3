"""The subsampling operator F of the low-resolution landmark paper (§3.1 Eq. 4, §4.1, Fig. 4 row 2).

F makes the "subsampled" LR image from an HR face: the target of G1's pixel loss
``l_pixel = 1/(WH) sum (F(I_HR) - I_LRG)^2`` (Eq. 4) and the training input of setting S1 (§4.1,
"subsampled version ... using average pooling after applying Gaussian smoothing").

How we read the paper. §3.1 says F passes ``I_HR`` "through four average pooling layers", but
also that ``I_HR`` is 128 x 128 and ``I_LRG`` 32 x 32, and §4.1 speaks of average pooling after
Gaussian smoothing. Four 2 x 2 poolings would give 8 x 8, so we read "four" as the factor 4:
F = Gaussian smoothing, then 2 x 2 average pooling ``log2(factor)`` times (128 -> 32 is two 2 x 2
poolings), which is exactly one ``factor x factor`` non-overlapping average. Any integer factor is
accepted (one ``factor x factor`` average; for powers of two that equals the repeated 2 x 2
pooling).

The smoothing std is not given in the paper; ``DEFAULT_SIGMA = 1.0`` HR pixels (a mild
anti-aliasing blur on top of the 4 x 4 box, whose own std is ~1.1 px). The Gaussian is truncated
at ``int(4 sigma + 0.5)`` pixels and normalised to sum 1, with half-sample symmetric ("reflect" in
scipy.ndimage: ``d c b a | a b c d``) padding; the scipy-free ``subsample_jnp`` and the
scipy-based ``subsample_np`` implement the same operator and are tested against each other.
Averaging ``factor x factor`` blocks maps continuous coordinates by exactly ``1 / factor``
(block ``k`` spans ``[k f, (k + 1) f)``, centre ``k + 0.5`` after pooling), so LR landmarks are
HR landmarks divided by ``factor``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_SIGMA = 1.0
TRUNCATE = 4.0


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian taps ``exp(-x^2 / (2 sigma^2))``, ``|x| <= int(4 sigma + 0.5)``."""
  if sigma <= 0:
    return np.ones(1, np.float64)
  radius = int(TRUNCATE * float(sigma) + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / float(sigma)) ** 2)
  return k / k.sum()


def _check(shape, factor: int, sigma: float, what: str):
  if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
    raise ValueError(f"factor must be an int >= 1, got {factor!r}")
  if sigma < 0 or not math.isfinite(sigma):
    raise ValueError(f"sigma must be a finite number >= 0 (0: no smoothing), got {sigma!r}")
  h, w = shape
  if h % factor or w % factor:
    raise ValueError(f"{what}: height and width {h} x {w} must be multiples of the subsampling "
                     f"factor {factor} (F averages non-overlapping {factor} x {factor} blocks).")


def subsample_jnp(images, factor: int = 4, sigma: float = DEFAULT_SIGMA) -> jax.Array:
  """F on a batch (jnp, jit-able): Gaussian blur (``sigma`` HR px) then ``factor x factor`` mean.

  Args:
    images: ``[B, H, W, C]`` (any real dtype; computed in float32). ``H`` and ``W`` must be
      multiples of ``factor``.
    factor: subsampling factor (4: 128 -> 32).
    sigma: Gaussian smoothing std in input pixels; 0 disables the blur.

  Returns:
    float32 ``[B, H / factor, W / factor, C]`` (same value range as the input; not rounded).
  """
  x = jnp.asarray(images, jnp.float32)
  if x.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {x.shape}")
  _check(x.shape[1:3], factor, sigma, "subsample_jnp")
  taps = gaussian_kernel_1d(sigma)
  r = len(taps) // 2
  if r:
    for axis in (1, 2):   # separable blur: rows, then columns
      n = x.shape[axis]
      pad = [(0, 0)] * 4
      pad[axis] = (r, r)
      xp = jnp.pad(x, pad, mode="symmetric")   # numpy 'symmetric' == scipy.ndimage 'reflect'
      acc = jnp.zeros_like(x)
      for t, wt in enumerate(taps):
        acc = acc + float(wt) * jax.lax.slice_in_dim(xp, t, t + n, axis=axis)
      x = acc
  b, h, w, c = x.shape
  f = int(factor)
  return x.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))


def subsample_np(image, factor: int = 4, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
  """F on one host image (numpy + scipy.ndimage; an implementation independent of the jnp one).

  Args:
    image: ``[H, W, C]`` or ``[H, W]`` uint8 or float.
    factor, sigma: as in ``subsample_jnp``.

  Returns:
    float32 ``[H / factor, W / factor(, C)]`` in the input's value range (round and clip it to get
    a uint8 image).
  """
  from scipy import ndimage

  img = np.asarray(image, np.float64)
  if img.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W, C] or [H, W], got shape {img.shape}")
  _check(img.shape[:2], factor, sigma, "subsample_np")
  if sigma > 0:
    sig = (sigma, sigma) + (0,) * (img.ndim - 2)
    img = ndimage.gaussian_filter(img, sig, mode="reflect", truncate=TRUNCATE)
  f = int(factor)
  # Block averages as an explicit sum over the f x f phases (not a reshape-mean).
  out = np.zeros((img.shape[0] // f, img.shape[1] // f) + img.shape[2:], np.float64)
  for di in range(f):
    for dj in range(f):
      out += img[di::f, dj::f]
  return (out / (f * f)).astype(np.float32)


def subsample_uint8(image, factor: int = 4, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
  """``subsample_np`` rounded and clipped to a uint8 image (the loader's S1 LR input)."""
  return np.clip(np.round(subsample_np(image, factor, sigma)), 0, 255).astype(np.uint8)
