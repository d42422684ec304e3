"""Heatmap losses of the low-resolution face landmark paper (lr_face_landmarks.txt §3.3, Eq. 5-13).

Heatmaps are NHWC ``[B, h, w, N+1]`` (N landmarks + 1 background channel), float32. Notation:
H = ground-truth heatmaps (Gaussians, σ = 2, at the downsampled landmarks), Ĥ = G2's prediction,
D2(·, I) = D2's reconstruction of heatmaps given the image (an autoencoder, §3.2.2), D3 = the
confidence discriminator's logits (§3.2.3).

* :func:`heatmap_l2` -- the squared error ``Σ_{i=1}^{N+1} (H_i - X_i)^2`` of Eq. 5, 6, 10, 11.
* :func:`d2_losses` -- D2's BEGAN loss ``l_kp^D = l_real - k_t l_fake`` (Eq. 5-7); the k_t update
  (Eq. 8) is ``jaxdet.losses.began.began_update``.
* :func:`d3_loss` -- D3's least-squares loss (Eq. 9).
* :func:`g2_loss` -- G2's ``l_G = a l_MSE + b l_kp + c l_conf`` (Eq. 10-13).

Normalisation of ``Σ_i (H_i - X_i)^2``. The paper sums over the N + 1 channels and says nothing
about pixels or images. We keep the channel *sum* and average over the h x w pixels and over
the images of the batch: per image ``mean_{pixels} Σ_c (H - X)^2`` (= (N+1) x the element-wise
MSE), then the masked batch mean. The pixel mean keeps the loss independent of the resolution
(32 x 32 LR, 128 x 128 HR-LD); the channel sum is the paper's. The same normalisation is used
for Eq. 5, 6, 10 and 11, so l_real, l_fake, l_MSE and l_kp are on one scale (what BEGAN's
gamma l_real - l_fake of Eq. 8 compares).

Masks (``valid``, optional, on every heatmap loss):
  * [B] (bool or weight): per-image weights of the batch mean (padding rows: 0).
  * [B, N+1]: per-channel weights, e.g. 0 for the channel of an invisible landmark (AFLW): the
    channel sum runs over the weighted channels, Σ_c m_bc mean_pixels (H - X)^2; an image counts
    in the batch mean with weight 1 when any of its channels has a positive weight.
  Masked entries contribute exactly 0 and receive zero gradient.

Discriminator logits follow ``jaxdet.losses.gan`` (shape [B] or [B, 1], optional [B] masks).

Gradients. Each loss differentiates everything it is given. The caller decides what is held
fixed: in D2's step the predictions Ĥ are ``stop_gradient``-ed (G2 fixed), k_t carries no
gradient (it is stopped here); in G2's step l_kp = (Ĥ - D2(Ĥ, I))^2 (Eq. 11) is differentiated
through both Ĥ and D2(Ĥ, I) with D2's parameters fixed, as BEGAN's L_G = L(G(z)).

Return values: D2 and G2 return ``(total, terms)`` with *unweighted* terms under the paper's
names (``l_real``, ``l_fake``; ``l_mse``, ``l_kp``, ``l_conf``), float32 scalars; :func:`d3_loss`
returns a float32 scalar.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.losses.gan import least_squares_d_loss, least_squares_g_loss, weighted_mean


def _heatmaps(x, name: str):
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4:
    raise ValueError(f"{name} must be heatmaps [B, h, w, N+1], got shape {x.shape}")
  return x


def _nonzero(w) -> bool:
  """True for a Python / numpy number other than 0 (traced weights are not checked)."""
  try:
    return float(w) != 0.0
  except (TypeError, jax.errors.ConcretizationTypeError):
    return False


def heatmap_l2(target, pred, valid=None):
  """``mean_b [ mean_{pixels} Σ_{c=1}^{N+1} m_bc (target - pred)^2 ]`` (Eq. 5, 6, 10, 11).

  target, pred: [B, h, w, N+1]; valid: None, [B] or [B, N+1] (see the module docstring).
  Returns a float32 scalar.
  """
  target = _heatmaps(target, "target")
  pred = _heatmaps(pred, "pred")
  if target.shape != pred.shape:
    raise ValueError(f"target and pred must have one shape, got {target.shape} and {pred.shape}")
  b, c = target.shape[0], target.shape[-1]
  if valid is None:
    return jnp.mean(jnp.sum(jnp.mean(jnp.square(target - pred), axis=(1, 2)), axis=-1))
  m = jnp.asarray(valid).astype(jnp.float32)
  if m.shape == (b,):
    image_weight, m = m, jnp.broadcast_to(m[:, None], (b, c))
  elif m.shape == (b, c):
    image_weight = jnp.any(m > 0, axis=-1)
  else:
    raise ValueError(f"valid must be [B] = {(b,)} or [B, N+1] = {(b, c)}, got {m.shape}")
  # masked entries are zeroed *before* squaring: no NaN / inf of theirs reaches the gradient
  diff = jnp.where(m[:, None, None, :] > 0, target - pred, 0.0)
  per_image = jnp.sum(m * jnp.mean(jnp.square(diff), axis=(1, 2)), axis=-1)
  return weighted_mean(per_image, image_weight)


def d2_losses(h_real, h_real_rec, h_fake, h_fake_rec, k, valid=None):
  """D2's loss, Eq. 5-7: ``l_kp^D = l_real - k_t l_fake``.

  Args:
    h_real: ground-truth heatmaps H [B, h, w, N+1] (D2's input with the generated LR image).
    h_real_rec: D2(H, I), same shape.
    h_fake: predicted heatmaps Ĥ = G2(I) (stop-gradient in D2's step).
    h_fake_rec: D2(Ĥ, I).
    k: k_t (``BeganState.k``), a scalar; gradients are stopped.
    valid: optional mask, [B] or [B, N+1], shared by both pairs (they show the same images).

  Returns:
    ``(l_real - k l_fake, {'l_real': Eq. 5, 'l_fake': Eq. 6})``.
  """
  l_real = heatmap_l2(h_real, h_real_rec, valid)
  l_fake = heatmap_l2(h_fake, h_fake_rec, valid)
  k = jax.lax.stop_gradient(jnp.asarray(k, jnp.float32))
  if k.shape != ():
    raise ValueError(f"k must be the scalar k_t, got shape {k.shape}")
  return l_real - k * l_fake, {"l_real": l_real, "l_fake": l_fake}


def d3_loss(real_logits, fake_logits_generated, fake_logits_real_lr, *, real_valid=None,
            fake_generated_valid=None, fake_real_lr_valid=None):
  """D3's least-squares loss, Eq. 9 (the sum of the three expectations, as printed)::

      E[(D3(I_LRG ⊕ H) - 1)^2] + E[D3(I_LRG ⊕ Ĥ)^2] + E[D3(I_LRR ⊕ Ĥ)^2]

  real_logits: D3 on (generated LR, ground-truth heatmaps) -- P_r of Eq. 9;
  fake_logits_generated: D3 on (generated LR, predicted heatmaps);
  fake_logits_real_lr: D3 on (real, unlabelled LR, predicted heatmaps) -- together P_g.
  Each [B_*] with its own optional [B_*] mask. Returns a float32 scalar.
  """
  return least_squares_d_loss(
      real_logits, [fake_logits_generated, fake_logits_real_lr], real_valid=real_valid,
      fake_valid=[fake_generated_valid, fake_real_lr_valid])


def g2_loss(h_gt, h_pred, h_fake_rec=None, d3_fake_logits=None, *, a: float, b: float,
            c: float, valid=None, d3_valid=None):
  """G2's loss, Eq. 10-13: ``l_G = a l_MSE + b l_kp + c l_conf``.

  Args:
    h_gt: ground-truth heatmaps H [B, h, w, N+1] of the generated LR images.
    h_pred: G2's predictions Ĥ on those images, same shape.
    h_fake_rec: D2(Ĥ, I) (D2's parameters fixed), or None when D2 is not used (settings S1, S2).
    d3_fake_logits: D3's logits on *all* predicted pairs -- (generated LR, Ĥ) and (real LR, Ĥ)
      concatenated, P_g of Eq. 12 -- [B'], or None when D3 is not used (S1-S3).
    a, b, c: the weights of Eq. 13 (the paper gives none, only a l_MSE > b l_kp > c l_conf).
    valid: optional heatmap mask [B] or [B, N+1] for l_MSE and l_kp.
    d3_valid: optional [B'] mask for l_conf.

  Returns:
    ``(total, {'l_mse': Eq. 10, 'l_kp': Eq. 11, 'l_conf': Eq. 12})``, unweighted terms; a term
    whose input is None is 0 (and its weight must then be 0).
  """
  if h_fake_rec is None and _nonzero(b):
    raise ValueError("g2_loss: b != 0 needs h_fake_rec = D2(Ĥ, I); pass b=0 without D2")
  if d3_fake_logits is None and _nonzero(c):
    raise ValueError("g2_loss: c != 0 needs d3_fake_logits; pass c=0 without D3")
  zero = jnp.zeros((), jnp.float32)
  terms = {
      "l_mse": heatmap_l2(h_gt, h_pred, valid),
      "l_kp": zero if h_fake_rec is None else heatmap_l2(h_pred, h_fake_rec, valid),
      "l_conf": zero if d3_fake_logits is None else least_squares_g_loss(d3_fake_logits,
                                                                         d3_valid),
  }
  total = a * terms["l_mse"] + b * terms["l_kp"] + c * terms["l_conf"]
  return jnp.asarray(total, jnp.float32), terms
