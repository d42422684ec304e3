"""BEGAN's equilibrium variable k_t for the heatmap discriminator D2 (lr_face_landmarks.txt §3.3,
Eq. 7-8; Berthelot, Schumm & Metz, "BEGAN: Boundary Equilibrium GANs", 2017, §3.3-3.4).

D2 is an autoencoder on heatmaps ⊕ image; with l_real (Eq. 5) and l_fake (Eq. 6) its
reconstruction errors on ground-truth and on predicted heatmaps, the paper trains

    l_D^kp  = l_real - k_t l_fake                                      (Eq. 7)
    k_{t+1} = k_t + lambda_k (gamma l_real - l_fake),   k_t in [0, 1]   (Eq. 8)

which is BEGAN's objective (BEGAN Eq. 4 / §3.4)::

    L_D = L(x) - k_t L(G(z_D))
    L_G = L(G(z_G))
    k_{t+1} = k_t + lambda_k (gamma L(x) - L(G(z_G)))     for each training step t

with gamma = E[L(G(z))] / E[L(x)] the "diversity ratio" and the convergence measure
(BEGAN §3.4.1)::

    M_global = L(x) + |gamma L(x) - L(G(z_G))|

Usage inside a jitted train step (the state is a pytree; keep it in the train state so it is
checkpointed with the networks)::

    l_d2, terms = landmark_gan.d2_losses(h, h_rec, h_hat, h_hat_rec, state.k)   # uses k_t
    state = began_update(state, terms['l_real'], terms['l_fake'], lambda_k=1e-3, gamma=0.5)

Order: step t's D2 loss uses k_t (the value *before* this step's update), as in BEGAN's
reference code, where k is a variable read by the loss and assigned after the optimiser step.

Choices and deviations:

* The update is k_{t+1} = clip(k_t + lambda_k (gamma l_real - l_fake), 0, 1): the paper says
  "k_t is bounded between 0 and 1"; BEGAN says k_t in [0, 1] and its code clips.
* "The variable is updated every t iterations" (§3.3): we update on every step, as BEGAN does
  (its t is the step index). Calling :func:`began_update` every t-th step only gives the
  paper's literal reading.
* Defaults are BEGAN's (quoted from memory of that paper, not from the landmark paper, which
  gives no values): k_0 = 0 and lambda_k = 0.001 (BEGAN §3.4: lambda_k = 0.001 in its
  experiments); gamma = 0.5, the middle of the range BEGAN explores (0.3 ... 0.7) and the usual
  default of public re-implementations.
* BEGAN updates k with L(G(z_G)), the loss of G's step; the caller here passes D2's l_fake
  (Eq. 6) of the same step, on the predictions that D2 was trained on -- the same quantity for
  the current G2, without an extra D2 forward pass.
* The losses are ``stop_gradient``-ed: k_t is a control variable, not a parameter. A NaN loss
  makes k_t NaN (not silently clipped; NaN propagates through clip) so divergence is visible.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

K0 = 0.0          # BEGAN: k_0 = 0
LAMBDA_K = 0.001  # BEGAN: lambda_k = 0.001
GAMMA = 0.5       # BEGAN: diversity ratio gamma in [0, 1]; 0.5


class BeganState(NamedTuple):
  """The equilibrium variable (a pytree).

  Attributes:
    k: f32 scalar, k_t in [0, 1], the weight of l_fake in D2's loss (Eq. 7).
  """
  k: jax.Array


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def began_init(k0: float = K0) -> BeganState:
  """k_0 (BEGAN: 0). Must lie in [0, 1]."""
  if not _is_number(k0) or not 0.0 <= float(k0) <= 1.0:
    raise ValueError(f"began_init: k0 must be a number in [0, 1], got {k0!r}")
  return BeganState(k=jnp.asarray(k0, jnp.float32))


def _scalar(x, name: str):
  x = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  if x.shape != ():
    raise ValueError(f"began_update: {name} must be a scalar (reduce it over the batch and "
                     f"devices first), got shape {x.shape}")
  return x


def began_update(state: BeganState, l_real, l_fake, *, lambda_k: float = LAMBDA_K,
                 gamma: float = GAMMA) -> BeganState:
  """Eq. 8: ``k_{t+1} = clip(k_t + lambda_k (gamma l_real - l_fake), 0, 1)``.

  Args:
    state: the BeganState whose k was used in this step's D2 loss.
    l_real: scalar, D2's reconstruction error on ground-truth heatmaps (Eq. 5).
    l_fake: scalar, D2's reconstruction error on predicted heatmaps (Eq. 6).
    lambda_k: the proportional gain (BEGAN 0.001); >= 0.
    gamma: the diversity ratio (BEGAN 0.5); in [0, 1].

  Python-number hyper-parameters are range-checked; traced ones are used as given.
  Jit-compatible; gradients through the losses are stopped.
  """
  if _is_number(lambda_k) and lambda_k < 0:
    raise ValueError(f"began_update: lambda_k must be >= 0, got {lambda_k!r}")
  if _is_number(gamma) and not 0.0 <= gamma <= 1.0:
    raise ValueError(f"began_update: gamma must be in [0, 1], got {gamma!r}")
  l_real = _scalar(l_real, "l_real")
  l_fake = _scalar(l_fake, "l_fake")
  k = state.k + lambda_k * (gamma * l_real - l_fake)
  return BeganState(k=jnp.clip(k, 0.0, 1.0).astype(jnp.float32))


def convergence_measure(l_real, l_fake, gamma: float = GAMMA):
  """BEGAN's M_global = ``l_real + |gamma l_real - l_fake|`` (a metric; gradients stopped)."""
  l_real = jax.lax.stop_gradient(jnp.asarray(l_real, jnp.float32))
  l_fake = jax.lax.stop_gradient(jnp.asarray(l_fake, jnp.float32))
  return l_real + jnp.abs(gamma * l_real - l_fake)
