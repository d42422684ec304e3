"""MTGAN losses (Zhang et al., "Multi-task GAN for small object detection", §3.3, Eqs. 4-11).

The generator G super-resolves low-resolution RoI crops ``I_LR`` to ``I_SR = G(I_LR)``; the
discriminator D returns, for a batch of 64 x 64 images, a dict of raw outputs
``{'adv': [B] logit, 'cls': [B, K+1] logits (background 0), 'reg': [B, 4] (t_x, t_y, t_w, t_h)}``
(``jaxdet.models.mtgan.Discriminator``). The losses here take those dicts:

* :func:`pretrain_loss` -- Eq. 4, the pixel MSE used alone to pre-train G (§4.2 "we first train
  an MSE-based super-resolution network to initialize the generator network").
* :func:`generator_loss` -- Eq. 10 (G's sub-problem, D fixed)::

      alpha log(1 - D(G(I_LR))) - beta log D_cls(G(I_LR)) + gamma [u >= 1] SL1(t_SR - v)
      + ||G(I_LR) - I_HR||^2

* :func:`discriminator_loss` -- Eq. 11 (D's sub-problem, G fixed; the caller passes D's outputs
  on ``stop_gradient(I_SR)``)::

      -alpha (log(1 - D(G(I_LR))) + log D(I_HR)) - beta (log D_cls(G(I_LR)) + log D_cls(I_HR))
      + gamma [u >= 1] (SL1(t_HR - v) + SL1(t_SR - v))

Definitions used by every function:

* ``D(x) = sigmoid(adv logit)`` is the probability that x is a real HR image (§3.2, fc_GAN
  "uses a sigmoid loss"); the logs are evaluated stably from the logit:
  ``log D = -softplus(-l)``, ``log(1 - D) = -softplus(l)``.
* ``D_cls(x)`` is the softmax probability of the true class ``u`` (§3.2, fc_cls "uses the
  softmax"), so ``-log D_cls`` is the softmax cross-entropy
  (``jaxdet.losses.classification.softmax_cross_entropy``). ``u = 0`` is background.
* ``SL1`` is Eq. 8 (transition at |x| = 1), i.e. ``jaxdet.losses.regression.smooth_l1_loss``
  with ``beta = 1`` (``smooth_l1_beta``), summed over j in {x, y, w, h} as in Eq. 7; only RoIs
  with ``u >= 1`` contribute.
* Reduction: every term is ``1/N sum_i`` as written in Eqs. 4-11, with N the number of valid
  RoIs in the batch (the regression term too, so it is *not* normalised by the number of
  positives; Eq. 7 divides by N). The squared error of Eq. 4 is the **per-pixel mean** over
  H x W x C of each image before the mean over RoIs: the weights alpha = 0.001, beta = gamma =
  0.01 (§4.2) are SRGAN's scale (Ledig et al. 2017 Eq. 4 normalises the pixel MSE by r^2 W H and
  weights the adversarial term 10^-3), and a sum over the 12,288 values of a 64 x 64 x 3 image
  would make them negligible.
* Padding: ``valid`` (bool [B], optional) marks real RoIs; rows with ``valid = False`` or with
  ``label < 0`` (the padding label of the crop loader) contribute exactly 0 to every term and
  receive zero gradient. N = max(number of valid rows, 1), so an all-padding batch gives 0.
* Return value: ``(total, terms)`` with ``terms`` = the *weighted* contributions
  (``{'adv', 'cls', 'reg', 'mse'}`` for G, ``{'adv', 'cls', 'reg'}`` for D), float32 scalars
  whose sum is ``total``; a switched-off term is present and 0. The terms are used for the
  ablations of Table 5 ("without adv / cls / reg loss in G": ``use_adv`` / ``use_cls`` /
  ``use_reg`` False in :func:`generator_loss`) and for D built without a branch (Tables 3 and 5:
  pass ``use_adv=False`` / ``use_reg=False`` to :func:`discriminator_loss`; a missing output that
  a switched-on term needs is an error).

Adversarial term of G (``adversarial=``):

* ``'paper'`` (default): ``alpha * mean(log(1 - D(G(I_LR))))``, exactly Eq. 10 (G minimises it,
  the minimax game of Eq. 1-2). Its value is negative and it saturates (vanishing gradient) when
  D confidently rejects the SR images. It is the default because this module reproduces the
  paper as written; with G pre-trained by MSE and alpha = 0.001 the term is a small correction.
* ``'non_saturating'``: ``-alpha * mean(log D(G(I_LR)))`` (>= 0), the form SRGAN actually
  minimises (Ledig et al. 2017 Eq. 6, following Goodfellow et al. 2014), with the same fixed
  point and strong gradients when D wins.

D's adversarial term (Eq. 11) is the standard binary cross-entropy (real = 1, fake = 0) in
either case.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.losses.classification import softmax_cross_entropy
from jaxdet.losses.regression import smooth_l1_loss

ALPHA = 0.001   # §4.2: alpha = 0.001
BETA = 0.01     # §4.2: beta = gamma = 0.01
GAMMA = 0.01
SMOOTH_L1_BETA = 1.0  # Eq. 8: 0.5 x^2 if |x| < 1 else |x| - 0.5
ADVERSARIAL_FORMS = ("paper", "non_saturating")


# ---------------------------------------------------------------------------------------- helpers
def _mask(labels, valid):
  """float32 [B]: 1 for rows that count (valid and label >= 0), else 0."""
  keep = labels >= 0
  if valid is not None:
    valid = jnp.asarray(valid)
    if valid.shape != labels.shape:
      raise ValueError(f"valid must have the shape of labels {labels.shape}, got {valid.shape}")
    keep = keep & valid.astype(bool)
  return keep.astype(jnp.float32)


def _masked_mean(per_roi, mask):
  """sum_i mask_i x_i / max(sum_i mask_i, 1), with exact zeros (and zero gradient) off-mask."""
  per_roi = jnp.where(mask > 0, per_roi, 0.0)
  return jnp.sum(per_roi) / jnp.maximum(jnp.sum(mask), 1.0)


def _check_labels(labels, reg_targets):
  labels = jnp.asarray(labels)
  if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer [B] (class + 1, 0 background), got {labels.dtype} "
                     f"{labels.shape}")
  reg_targets = jnp.asarray(reg_targets, jnp.float32)
  if reg_targets.shape != labels.shape + (4,):
    raise ValueError(f"reg_targets must be [B, 4] with B = {labels.shape[0]}, got "
                     f"{reg_targets.shape}")
  return labels, reg_targets


def _output(d_out, key: str, flag: str, labels):
  if key not in d_out:
    raise ValueError(f"the discriminator output has no {key!r} (built without that branch?); "
                     f"pass {flag}=False to drop the term that needs it")
  x = jnp.asarray(d_out[key], jnp.float32)
  b = labels.shape[0]
  if key == "adv":
    if x.size != b:
      raise ValueError(f"d['adv'] must be [B] or [B, 1] logits with B = {b}, got {x.shape}")
    return x.reshape(b)
  if key == "reg" and x.shape != (b, 4):
    raise ValueError(f"d['reg'] must be [B, 4] with B = {b}, got {x.shape}")
  if key == "cls" and (x.ndim != 2 or x.shape[0] != b):
    raise ValueError(f"d['cls'] must be [B, K+1] logits with B = {b}, got {x.shape}")
  return x


def _log_d(logit):
  """log D = log sigmoid(l) = -softplus(-l)."""
  return -jax.nn.softplus(-logit)


def _log_one_minus_d(logit):
  """log(1 - D) = log sigmoid(-l) = -softplus(l)."""
  return -jax.nn.softplus(logit)


def _reg_per_roi(pred, targets, labels, beta):
  """[u >= 1] sum_j SL1(t_j - v_j), [B]."""
  per = jnp.sum(smooth_l1_loss(pred, targets, beta), axis=-1)
  return jnp.where(labels >= 1, per, 0.0)


def _pixel_mse_per_roi(sr, hr):
  sr = jnp.asarray(sr, jnp.float32)
  hr = jnp.asarray(hr, jnp.float32)
  if sr.shape != hr.shape or sr.ndim < 2:
    raise ValueError(f"sr and hr must be images of one shape [B, ...], got {sr.shape} and {hr.shape}")
  return jnp.mean(jnp.square(sr - hr), axis=tuple(range(1, sr.ndim)))


def _zero():
  return jnp.zeros((), jnp.float32)


# ---------------------------------------------------------------------------------------- losses
def pretrain_loss(sr, hr, valid=None):
  """Eq. 4: ``1/N sum_i ||G(I_LR_i) - I_HR_i||^2`` with the per-pixel mean per image.

  sr, hr: [B, H, W, C] in the same pixel space; valid: optional bool [B] (padding rows count 0).
  Returns a float32 scalar.
  """
  per = _pixel_mse_per_roi(sr, hr)
  if valid is None:
    mask = jnp.ones(per.shape, jnp.float32)
  else:
    valid = jnp.asarray(valid)
    if valid.shape != per.shape:
      raise ValueError(f"valid must be bool [B] with B = {per.shape[0]}, got {valid.shape}")
    mask = valid.astype(jnp.float32)
  return _masked_mean(per, mask)


def generator_loss(d_sr, sr, hr, labels, reg_targets, *, valid=None, alpha: float = ALPHA,
                   beta: float = BETA, gamma: float = GAMMA, use_adv: bool = True,
                   use_cls: bool = True, use_reg: bool = True, use_mse: bool = True,
                   adversarial: str = "paper", smooth_l1_beta: float = SMOOTH_L1_BETA):
  """Eq. 10, the generator's objective (to minimise; D's parameters are held fixed).

  Args:
    d_sr: D's outputs on ``sr`` (``{'adv': [B], 'cls': [B, K+1], 'reg': [B, 4]}``; 'adv' / 'reg'
      needed only when ``use_adv`` / ``use_reg``).
    sr: G(I_LR) [B, H, W, C]; hr: I_HR, same shape and pixel space.
    labels: int [B], u = class + 1 (0 background, < 0 padding).
    reg_targets: float [B, 4], v (used where u >= 1).
    valid: optional bool [B]; False rows contribute nothing.
    alpha, beta, gamma: weights of the adversarial, classification and regression terms (§4.2).
    use_adv, use_cls, use_reg, use_mse: switch single terms off (Table 5 ablations).
    adversarial: 'paper' (alpha log(1 - D(G)), Eq. 10) or 'non_saturating' (-alpha log D(G)).
    smooth_l1_beta: transition point of SL1 (1, Eq. 8).

  Returns:
    ``(total, {'adv', 'cls', 'reg', 'mse'})``: weighted terms, float32 scalars, sum = total.
  """
  if adversarial not in ADVERSARIAL_FORMS:
    raise ValueError(f"adversarial must be one of {list(ADVERSARIAL_FORMS)}, got {adversarial!r}")
  labels, reg_targets = _check_labels(labels, reg_targets)
  mask = _mask(labels, valid)
  terms = {"adv": _zero(), "cls": _zero(), "reg": _zero(), "mse": _zero()}
  if use_adv:
    logit = _output(d_sr, "adv", "use_adv", labels)
    per = _log_one_minus_d(logit) if adversarial == "paper" else -_log_d(logit)
    terms["adv"] = alpha * _masked_mean(per, mask)
  if use_cls:
    logits = _output(d_sr, "cls", "use_cls", labels)
    terms["cls"] = beta * _masked_mean(softmax_cross_entropy(logits, labels), mask)
  if use_reg:
    pred = _output(d_sr, "reg", "use_reg", labels)
    terms["reg"] = gamma * _masked_mean(_reg_per_roi(pred, reg_targets, labels, smooth_l1_beta), mask)
  if use_mse:
    per = _pixel_mse_per_roi(sr, hr)
    if per.shape != labels.shape:
      raise ValueError(f"sr / hr batch {per.shape[0]} does not match labels {labels.shape[0]}")
    terms["mse"] = _masked_mean(per, mask)
  return sum(terms.values()), terms


def discriminator_loss(d_hr, d_sr, labels, reg_targets, *, valid=None, alpha: float = ALPHA,
                       beta: float = BETA, gamma: float = GAMMA, use_adv: bool = True,
                       use_cls: bool = True, use_reg: bool = True,
                       smooth_l1_beta: float = SMOOTH_L1_BETA):
  """Eq. 11, the discriminator's objective (to minimise; G is held fixed).

  ``d_hr`` / ``d_sr``: D's outputs on I_HR and on (stop-gradient) G(I_LR) of the same RoIs, so
  both share ``labels`` (u) and ``reg_targets`` (v). Other arguments as :func:`generator_loss`;
  the default weights are those of §4.2 (the same alpha, beta, gamma appear in Eq. 11).

  Terms (weighted, mean over valid RoIs):
    adv = alpha (softplus(l_SR) + softplus(-l_HR)) = -alpha (log(1 - D(G(I_LR))) + log D(I_HR));
    cls = beta (CE(cls_SR, u) + CE(cls_HR, u));
    reg = gamma [u >= 1] sum_j (SL1(t_HR - v) + SL1(t_SR - v)).

  Returns:
    ``(total, {'adv', 'cls', 'reg'})``.
  """
  labels, reg_targets = _check_labels(labels, reg_targets)
  mask = _mask(labels, valid)
  terms = {"adv": _zero(), "cls": _zero(), "reg": _zero()}
  if use_adv:
    real = _output(d_hr, "adv", "use_adv", labels)
    fake = _output(d_sr, "adv", "use_adv", labels)
    terms["adv"] = alpha * _masked_mean(-_log_one_minus_d(fake) - _log_d(real), mask)
  if use_cls:
    per = (softmax_cross_entropy(_output(d_sr, "cls", "use_cls", labels), labels)
           + softmax_cross_entropy(_output(d_hr, "cls", "use_cls", labels), labels))
    terms["cls"] = beta * _masked_mean(per, mask)
  if use_reg:
    per = (_reg_per_roi(_output(d_hr, "reg", "use_reg", labels), reg_targets, labels, smooth_l1_beta)
           + _reg_per_roi(_output(d_sr, "reg", "use_reg", labels), reg_targets, labels,
                          smooth_l1_beta))
    terms["reg"] = gamma * _masked_mean(per, mask)
  return sum(terms.values()), terms
