"""A NaN/Inf loss stops the run with a clear message and keeps the last good checkpoint."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import loop_defaults
from jaxdet.train import loop
from jaxdet.train import sharding as shard_lib
from jaxdet.train.optim import Optimizer
from jaxdet.train.state import NetworkState


class ToyExperiment(Experiment):
  """Fits w to 1; the loss becomes NaN from step ``bad_step`` on."""
  name = "toy"

  @classmethod
  def config_schema(cls):
    c = loop_defaults()
    c.experiment = cls.name
    c.train.update(dict(num_steps=10, log_every=1, checkpoint_every=2, eval_every=0,
                        keep_checkpoints=10, batch_size=1, progress_bar=False))
    return c

  def __init__(self, bad_step):
    super().__init__(self.config_schema(), shard_lib.make_mesh())
    self.bad_step = bad_step
    self.opt = Optimizer(tx=optax.identity(), schedule=lambda step: 0.1)
    self.evaluated = []

  def init(self, rng):
    return NetworkState.create(params={"w": jnp.zeros(())}, optimizer=self.opt)

  def train_step(self, state, batch, step, rng):
    def loss_fn(p):
      loss = (p["w"] - batch["x"][0]) ** 2
      return jnp.where(step >= self.bad_step, jnp.nan, loss)
    loss, g = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(self.opt, g, step), {"loss": loss}

  def train_batches(self, start_step):
    while True:
      yield {"x": np.ones((1,), np.float32)}

  def evaluate(self, state, *, workdir, step):
    self.evaluated.append(step)
    return {"AP": 0.0}


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  exp = ToyExperiment(bad_step=5)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"NaN/Inf at step 5.*last good checkpoint \(step 4\) is kept.*rerun"):
    loop.train_and_evaluate(exp, str(tmp_path))
  from jaxdet.train.checkpoint import Checkpointer
  ck = Checkpointer(str(tmp_path))
  assert ck.latest_step() == 4
  ck.close()


def test_finite_run_reaches_the_end_and_evaluates_once(tmp_path):
  exp = ToyExperiment(bad_step=10**9)
  loop.train_and_evaluate(exp, str(tmp_path))
  assert exp.evaluated == [10]
  # Rerunning a finished run does not train or evaluate again.
  exp2 = ToyExperiment(bad_step=10**9)
  loop.train_and_evaluate(exp2, str(tmp_path))
  assert exp2.evaluated == []


def test_nan_before_any_checkpoint_does_not_promise_a_resume(tmp_path):
  exp = ToyExperiment(bad_step=0)
  with pytest.raises(loop.NonFiniteLossError, match="no checkpoint had been written yet") as e:
    loop.train_and_evaluate(exp, str(tmp_path))
  assert "resume" not in str(e.value)
