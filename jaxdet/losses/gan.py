"""Generic GAN losses of the low-resolution face landmark paper (lr_face_landmarks.txt, §3.1, §3.3).

* :func:`hinge_d_loss`, :func:`hinge_g_loss` -- the hinge loss of Eq. 2 (G1 / D1).
* :func:`least_squares_d_loss`, :func:`least_squares_g_loss` -- the least-squares GAN losses of
  Eq. 9 (D3) and Eq. 12 (G2's l_conf), Mao et al. 2017 with labels real = 1, fake = 0.
* :func:`pixel_l2` -- Eq. 4, G1's pixel loss against the subsampled HR image F(I_HR)
  (F itself is ``jaxdet.ops.subsample``).
* :func:`weighted_mean` -- the masked batch mean every loss here uses.

How Eq. 2 is read. The paper prints::

    l_GAN = E_{x~Pr}[min(0, -1 + D1(x))] + E_{x^~Pg}[min(0, -1 - D1(x^))]

which is the hinge *objective that D1 maximises* (Miyato et al. 2018, Eq. 16; Lim & Ye 2017),
not a loss to minimise (as written it is <= 0 and is minimised by a D that scores real images
low). We minimise its negative and give G the usual hinge generator loss, which the paper does
not print::

    L_D = E[relu(1 - D(x))] + E[relu(1 + D(x^))]          (= -Eq. 2)
    L_G = -E[D(x^)]

Eq. 9 is used as printed: the *sum* of one real expectation and one expectation per fake kind
(D3 has two: generated LR with predicted heatmaps and real LR with predicted heatmaps), without
LSGAN's 1/2 factors::

    L_D = E[(D(x) - 1)^2] + sum_k E[D(x^_k)^2]            (Eq. 9)
    L_G = E[(D(x^) - 1)^2]                                (Eq. 12)

Eq. 4 is ``1/(WH) sum_{i,j} (F(I_HR) - I_LRG)^2`` per image; with 3 colour channels we take the
mean over H x W x C (the per-pixel squared distance averaged over channels), then the mean over
images.

Masks. Every function takes optional per-sample weights ``valid`` ([B], bool or float; real and
fake batches may differ in size and each has its own). A term is ``sum_b w_b x_b / sum_b w_b``;
rows with ``w_b = 0`` contribute exactly 0 (and zero gradient, also when x_b is NaN), and a term
whose weights are all 0 is 0. Logits may be [B] or [B, 1]. Every loss returns a float32 scalar.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def _logits(x, name: str):
  x = jnp.asarray(x, jnp.float32)
  if x.ndim == 2 and x.shape[1] == 1:
    x = x[:, 0]
  if x.ndim != 1:
    raise ValueError(f"{name} must be logits [B] or [B, 1], got shape {x.shape}")
  return x


def _clean(logits, valid):
  """Logits with zero-weight rows set to 0 *before* the loss function is applied, so that a
  NaN / inf in a padding row reaches neither the value nor the gradient."""
  if valid is None:
    return logits
  w = jnp.asarray(valid)
  if w.shape != logits.shape:
    raise ValueError(f"valid must have shape {logits.shape} (one weight per sample), got "
                     f"{w.shape}")
  return jnp.where(w > 0, logits, 0.0)


def weighted_mean(per_sample, valid=None):
  """``sum_b w_b x_b / sum_b w_b`` over the leading axis (float32 scalar).

  per_sample: [B]; valid: None (plain mean) or [B] bool / non-negative float weights. Rows with
  zero weight are replaced by 0 before the sum (the losses also zero those rows' *inputs*, so
  that no NaN reaches the gradient either); all-zero weights give 0.
  """
  x = jnp.asarray(per_sample, jnp.float32)
  if valid is None:
    return jnp.mean(x)
  w = jnp.asarray(valid).astype(jnp.float32)
  if w.shape != x.shape:
    raise ValueError(f"valid must have shape {x.shape} (one weight per sample), got {w.shape}")
  x = jnp.where(w > 0, x, 0.0)
  total = jnp.sum(w)
  return jnp.sum(w * x) / jnp.where(total > 0, total, 1.0)


# ------------------------------------------------------------------------------------- hinge
def hinge_d_loss(real_logits, fake_logits, *, real_valid=None, fake_valid=None):
  """D's hinge loss, the negative of Eq. 2: ``E[relu(1 - D(x))] + E[relu(1 + D(x^))]``.

  real_logits: D1 on real LR images I_LRR [B_r]; fake_logits: D1 on (stop-gradient) generated
  I_LRG [B_f]. Returns a float32 scalar (0 once real > 1 and fake < -1 everywhere).
  """
  real = _clean(_logits(real_logits, "real_logits"), real_valid)
  fake = _clean(_logits(fake_logits, "fake_logits"), fake_valid)
  return (weighted_mean(jnp.maximum(1.0 - real, 0.0), real_valid)
          + weighted_mean(jnp.maximum(1.0 + fake, 0.0), fake_valid))


def hinge_g_loss(fake_logits, valid=None):
  """G's hinge loss ``-E[D(x^)]`` (SN-GAN); fake_logits: D1 on G1's output, [B]."""
  return -weighted_mean(_clean(_logits(fake_logits, "fake_logits"), valid), valid)


# ----------------------------------------------------------------------------- least squares
def least_squares_d_loss(real_logits, fake_logits, *, real_valid=None, fake_valid=None):
  """Eq. 9: ``E[(D(x) - 1)^2] + sum_k E[D(x^_k)^2]``.

  fake_logits: one array [B_f] or a sequence of arrays, one per fake kind (each its own
  expectation, summed as Eq. 9 prints); fake_valid: None, one mask, or a sequence matching
  fake_logits. Returns a float32 scalar.
  """
  real = _clean(_logits(real_logits, "real_logits"), real_valid)
  fakes: Sequence = fake_logits if isinstance(fake_logits, (list, tuple)) else [fake_logits]
  if fake_valid is None or not isinstance(fake_valid, (list, tuple)):
    if fake_valid is not None and len(fakes) > 1:
      raise ValueError("fake_valid must be a sequence with one mask per fake kind")
    fake_valid = [fake_valid] * len(fakes)
  if len(fake_valid) != len(fakes):
    raise ValueError(f"fake_valid has {len(fake_valid)} masks for {len(fakes)} fake kinds")
  loss = weighted_mean(jnp.square(real - 1.0), real_valid)
  for k, (f, v) in enumerate(zip(fakes, fake_valid)):
    loss = loss + weighted_mean(jnp.square(_clean(_logits(f, f"fake_logits[{k}]"), v)), v)
  return loss


def least_squares_g_loss(fake_logits, valid=None):
  """Eq. 12: ``E[(D(x^) - 1)^2]``; fake_logits [B] (all fake kinds of the batch together)."""
  fake = _clean(_logits(fake_logits, "fake_logits"), valid)
  return weighted_mean(jnp.square(fake - 1.0), valid)


# ------------------------------------------------------------------------------------- pixel
def pixel_l2(generated, target, valid=None):
  """Eq. 4: per image ``mean_{H, W, C} (target - generated)^2``, then the (masked) batch mean.

  generated: G1's output I_LRG [B, h, w, C]; target: F(I_HR), same shape and pixel space.
  """
  generated = jnp.asarray(generated, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  if generated.shape != target.shape or generated.ndim < 2:
    raise ValueError(f"generated and target must be images of one shape [B, ...], got "
                     f"{generated.shape} and {target.shape}")
  diff = target - generated
  if valid is not None:
    w = jnp.asarray(valid)
    if w.shape != diff.shape[:1]:
      raise ValueError(f"valid must have shape {diff.shape[:1]} (one weight per image), got "
                       f"{w.shape}")
    # masked images are zeroed before squaring: their NaN / inf cannot reach the gradient
    diff = jnp.where((w > 0).reshape((-1,) + (1,) * (diff.ndim - 1)), diff, 0.0)
  per = jnp.mean(jnp.square(diff), axis=tuple(range(1, generated.ndim)))
  return weighted_mean(per, valid)
