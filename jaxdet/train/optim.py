"""Optimizer and learning-rate schedule from ``config.optim``.

SGD with momentum and decoupled-from-nothing (L2-style, as in Detectron and the
papers) weight decay, a linear warm-up and step decay::

    lr(t) = base_lr * batch / base_batch * warmup(t) * decay_factor ** #{b in boundaries : t >= b}
    warmup(t) = warmup_factor + (1 - warmup_factor) * t / warmup_steps   for t < warmup_steps

``base_lr`` is the learning rate for ``base_batch`` images (the linear scaling
rule of Goyal et al.), so changing ``config.train.batch_size`` keeps the recipe.
Parameters labelled 'frozen' (frozen backbone stages) get no update and no
weight decay.

The optax transformation returned here gives the update *direction* only; the learning rate
of the loop step is applied by ``NetworkState.apply_gradients``, so schedules count loop steps
(data position), not optimizer updates (a GAN network updated every other step, say).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(optim_cfg, global_batch: int) -> Callable[[jax.Array], jax.Array]:
  peak = optim_cfg.base_lr * global_batch / optim_cfg.base_batch
  warmup_steps = int(optim_cfg.warmup_steps)
  warmup_factor = float(optim_cfg.warmup_factor)
  boundaries = jnp.asarray(sorted(optim_cfg.decay_steps) or [2**31 - 1], jnp.int32)
  decay = float(optim_cfg.decay_factor)

  def schedule(step):
    step = jnp.asarray(step)
    if warmup_steps > 0:
      frac = jnp.minimum(step / warmup_steps, 1.0)
      warm = warmup_factor + (1.0 - warmup_factor) * frac
    else:
      warm = 1.0
    n_decays = jnp.sum(step >= boundaries)
    return peak * warm * decay ** n_decays

  return schedule


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """One network's optimizer: ``tx`` (optax, no learning rate) and ``schedule(loop_step)``."""
  tx: optax.GradientTransformation
  schedule: Callable[[jax.Array], jax.Array]


def make_optimizer(optim_cfg, global_batch: int, param_labels: Any = None) -> Optimizer:
  """Returns the ``Optimizer`` of ``config.optim`` (or any group with the same keys).

  Args:
    optim_cfg: ``config.optim`` (name, base_lr, base_batch, momentum,
      weight_decay, warmup_steps, warmup_factor, decay_steps, decay_factor,
      grad_clip_norm).
    global_batch: images per step over all devices.
    param_labels: optional pytree of 'frozen' / 'trainable' matching params.
  """
  schedule = learning_rate_schedule(optim_cfg, global_batch)
  chain = []
  if optim_cfg.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(optim_cfg.grad_clip_norm))
  if optim_cfg.name == "sgd":
    if optim_cfg.weight_decay > 0:
      chain.append(optax.add_decayed_weights(optim_cfg.weight_decay))
    if optim_cfg.momentum:
      chain.append(optax.trace(decay=optim_cfg.momentum))
  elif optim_cfg.name == "adam":
    # optax.adamw without its final scale_by_learning_rate.
    chain.append(optax.scale_by_adam(b1=optim_cfg.beta1, b2=optim_cfg.beta2))
    if optim_cfg.weight_decay > 0:
      chain.append(optax.add_decayed_weights(optim_cfg.weight_decay))
  else:
    raise ValueError(f"config.optim.name={optim_cfg.name!r}: use 'sgd' or 'adam'.")
  tx = optax.chain(*chain) if chain else optax.identity()
  if param_labels is not None:
    tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()},
                               param_labels)
  return Optimizer(tx=tx, schedule=schedule)
