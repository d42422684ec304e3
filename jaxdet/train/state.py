"""Train state: what the loop owns, and one network's parameters with its optimizer.

``LoopState`` is the one pytree a checkpoint holds. The loop owns its ``step`` (which drives
the data position and every learning-rate schedule), the run ``rng`` (folded with the step
for per-step randomness) and the non-finite guard; ``experiment`` is whatever pytree the
experiment keeps, e.g. a single ``NetworkState`` for a detector, or
``{"G": NetworkState, "D": NetworkState, "k_t": scalar}`` for a GAN.

``NetworkState`` is one network: its parameters, non-parameter collections (BatchNorm
statistics) and its own optax state. ``apply_gradients`` updates only that network, so an
alternating GAN step that updates G returns D's params *and* optimizer state untouched (no
zero-gradient update that still moves D through momentum or weight decay). The learning
rate comes from the loop step, not from an optimizer update count: a network updated every
other step still follows the schedule in loop steps.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxdet.train.optim import Optimizer


def init_key(rng) -> jax.Array:
  """A typed RBG key for ``Module.init`` from the loop's key ``rng`` (uint32[2] key data).

  XLA:CPU compiles the initializers of a deep network several times faster with the RBG
  generator than with threefry (an SSD at 32 px: 11 s against 86 s; RetinaNet ~5x); ``init``
  runs once and replicated, so RBG's sharding behaviour does not matter. ``jax.random.split``
  it for several networks. ``rng`` may also be a typed key (``jax.random.key``)."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  data = jnp.ravel(rng).astype(jnp.uint32)
  if data.shape[0] != 4:       # threefry key data, uint32[2]: RBG takes 4 words
    data = jnp.concatenate([data, data])
  return jax.random.wrap_key_data(data, impl="rbg")


@flax.struct.dataclass
class NetworkState:
  params: Any
  model_state: Any
  opt_state: Any

  @classmethod
  def create(cls, *, params, optimizer: Optimizer, model_state=None) -> "NetworkState":
    return cls(params=params, model_state=model_state if model_state is not None else {},
               opt_state=optimizer.tx.init(params))

  def apply_gradients(self, optimizer: Optimizer, grads, step, **updates) -> "NetworkState":
    """One update: ``params - lr(step) * direction(grads)``.

    ``optimizer.tx`` gives the update direction (momentum, Adam moments, weight decay,
    clipping, frozen parameters) without the learning rate; the rate of loop step ``step`` is
    applied here, as the last transformation, exactly as optax's ``scale_by_learning_rate``.
    """
    direction, opt_state = optimizer.tx.update(grads, self.opt_state, self.params)
    step_size = -1 * optimizer.schedule(step)
    params = jax.tree.map(lambda p, u: p + (jnp.array(step_size, dtype=u.dtype) * u).astype(p.dtype),
                          self.params, direction)
    return self.replace(params=params, opt_state=opt_state, **updates)


@flax.struct.dataclass
class LoopState:
  step: jax.Array
  rng: jax.Array
  first_nonfinite_step: jax.Array
  experiment: Any

  @classmethod
  def create(cls, experiment_state, rng) -> "LoopState":
    return cls(step=jnp.zeros((), jnp.int32), rng=rng,
               first_nonfinite_step=jnp.full((), -1, jnp.int32), experiment=experiment_state)
