"""The train state: one pytree holding everything a resumed run needs.

Parameters, non-parameter model state (BatchNorm statistics), optimizer state,
the step, the RNG key and ``extra`` (experiment state that is not a parameter:
ALWA weights and loss window, BEGAN k_t, ...) live together, so one orbax
checkpoint restores the exact trajectory. The data position is the step itself
(the loader is a pure function of the global step). Non-finite losses are
recorded on device (``first_nonfinite_step``) and checked on the host at log
and checkpoint time, so a bad step never reaches a checkpoint.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  extra: Any
  first_nonfinite_step: jax.Array

  @classmethod
  def create(cls, *, params, model_state, tx, rng, extra=None):
    """A fresh state at step 0. The optax transformation ``tx`` is not stored:
    the experiment owns it (a GAN has one per network) and passes it to
    ``apply_gradients``."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               model_state=model_state, opt_state=tx.init(params), rng=rng,
               extra=extra if extra is not None else {},
               first_nonfinite_step=jnp.full((), -1, jnp.int32))

  def apply_gradients(self, tx, grads, *, loss, **updates):
    """One optimizer update; records the step if ``loss`` is not finite."""
    param_updates, opt_state = tx.update(grads, self.opt_state, self.params)
    params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), self.params, param_updates)
    bad = ~jnp.isfinite(loss)
    first_bad = jnp.where((self.first_nonfinite_step < 0) & bad, self.step,
                          self.first_nonfinite_step)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        first_nonfinite_step=first_bad, **updates)


def step_rng(state: TrainState) -> jax.Array:
  """Per-step randomness: the run key folded with the step (big_vision style)."""
  return jax.random.fold_in(state.rng, state.step)
