"""Learning-rate schedule and optimizer vs hand-written references."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.train import optim
from jaxdet.train.state import NetworkState


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
  opt = optim.make_optimizer(cfg, 16, labels)
  net = NetworkState.create(params=params, optimizer=opt)
  grads = {"frozen_w": jnp.full(3, 5.0), "w": jnp.full(3, 2.0)}
  new = net.apply_gradients(opt, grads, jnp.int32(0))
  np.testing.assert_array_equal(new.params["frozen_w"], params["frozen_w"])
  # SGD first step: -lr * (g + wd * p) (momentum buffer starts at the gradient).
  np.testing.assert_allclose(new.params["w"] - 1.0, -0.01 * (2.0 + 1e-4), rtol=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_update_equals_optax_with_the_schedule_inside(name):
  """Applying lr(loop step) after the direction is bit-identical to optax's own
  sgd / adamw with the schedule as its learning rate, when updates happen every step."""
  cfg = _cfg(name=name, warmup_steps=3, decay_steps=(5,), weight_decay=1e-3)
  opt = optim.make_optimizer(cfg, 16)
  if name == "sgd":
    ref_tx = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(opt.schedule, momentum=0.9))
  else:
    ref_tx = optax.adamw(opt.schedule, b1=cfg.beta1, b2=cfg.beta2, weight_decay=1e-3)
  params = {"w": jnp.linspace(-1.0, 1.0, 7)}
  net, ref_params, ref_state = NetworkState.create(params=params, optimizer=opt), params, None
  ref_state = ref_tx.init(params)
  for step in range(8):
    grads = {"w": jnp.sin(jnp.arange(7.0) + step)}
    net = net.apply_gradients(opt, grads, jnp.int32(step))
    upd, ref_state = ref_tx.update(grads, ref_state, ref_params)
    ref_params = optax.apply_updates(ref_params, upd)
    np.testing.assert_array_equal(net.params["w"], ref_params["w"])


def test_schedule_counts_loop_steps_not_updates():
  """A network updated only at loop step 7 gets lr(7), not lr(0)."""
  cfg = _cfg(momentum=0.0, weight_decay=0.0, warmup_steps=10, decay_steps=())
  opt = optim.make_optimizer(cfg, 16)
  net = NetworkState.create(params={"w": jnp.zeros(())}, optimizer=opt)
  new = net.apply_gradients(opt, {"w": jnp.ones(())}, jnp.int32(7))
  np.testing.assert_allclose(float(new.params["w"]), -float(opt.schedule(7)), rtol=1e-7)
  assert float(opt.schedule(7)) != float(opt.schedule(0))


def test_unknown_optimizer_is_an_error():
  import pytest
  with pytest.raises(ValueError, match="config.optim.name"):
    optim.make_optimizer(_cfg(name="lamb"), 16)
