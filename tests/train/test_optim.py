"""Learning-rate schedule and optimizer vs hand-written references."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdet.train import optim


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      name="sgd", base_lr=0.01, base_batch=16, momentum=0.9, beta1=0.9, beta2=0.999,
      weight_decay=1e-4, warmup_steps=500, warmup_factor=1 / 3, decay_steps=(60, 80),
      decay_factor=0.1, grad_clip_norm=0.0))
  c.update(kw)
  return c


def _reference_lr(step, peak, warmup, factor, boundaries, decay):
  lr = peak
  if step < warmup:
    lr *= factor + (1 - factor) * step / warmup
  for b in boundaries:
    if step >= b:
      lr *= decay
  return lr


def test_schedule_matches_reference_with_linear_scaling():
  cfg = _cfg(warmup_steps=50, decay_steps=(600, 800))
  sched = optim.learning_rate_schedule(cfg, global_batch=8)
  for step in [0, 1, 25, 49, 50, 51, 599, 600, 799, 800, 10_000]:
    want = _reference_lr(step, 0.01 * 8 / 16, 50, 1 / 3, (600, 800), 0.1)
    np.testing.assert_allclose(float(sched(step)), want, rtol=1e-6)


def test_schedule_without_warmup_or_decay():
  cfg = _cfg(warmup_steps=0, decay_steps=())
  sched = optim.learning_rate_schedule(cfg, global_batch=16)
  np.testing.assert_allclose(float(sched(12345)), 0.01, rtol=1e-7)


def test_frozen_params_get_no_update_and_no_decay():
  cfg = _cfg(warmup_steps=0, decay_steps=())
  params = {"frozen_w": jnp.ones(3), "w": jnp.ones(3)}
  labels = {"frozen_w": "frozen", "w": "trainable"}
  tx, _ = optim.make_optimizer(cfg, 16, labels)
  grads = {"frozen_w": jnp.full(3, 5.0), "w": jnp.full(3, 2.0)}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates["frozen_w"], 0.0)
  # SGD first step: -lr * (g + wd * p) (momentum buffer starts at the gradient).
  np.testing.assert_allclose(updates["w"], -0.01 * (2.0 + 1e-4), rtol=1e-6)


def test_unknown_optimizer_is_an_error():
  import pytest
  with pytest.raises(ValueError, match="config.optim.name"):
    optim.make_optimizer(_cfg(name="lamb"), 16)
