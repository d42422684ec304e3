"""A NaN/Inf loss stops the run with a clear message and keeps the last good checkpoint."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.train import loop
from jaxdet.train import sharding as shard_lib
from jaxdet.train.state import TrainState


class ToyExperiment:
  """Fits w to 1; the loss becomes NaN from step ``bad_step`` on."""

  def __init__(self, bad_step):
    self.bad_step = bad_step
    self.mesh = shard_lib.make_mesh()
    self.tx = optax.sgd(0.1)
    self.config = ml_collections.ConfigDict(dict(
        experiment="toy", seed=0,
        train=dict(num_steps=10, log_every=1, checkpoint_every=2, eval_every=0,
                   keep_checkpoints=10, batch_size=1, progress_bar=False)))
    self.evaluated = []

  def init(self, rng):
    return TrainState.create(params={"w": jnp.zeros(())}, model_state={}, tx=self.tx, rng=rng)

  def train_step(self, state, batch):
    def loss_fn(p):
      loss = (p["w"] - batch["x"][0]) ** 2
      return jnp.where(state.step >= self.bad_step, jnp.nan, loss)
    loss, g = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(self.tx, g, loss=loss), {"loss": loss}

  def train_batches(self, start_step):
    while True:
      yield {"x": np.ones((1,), np.float32)}

  def evaluate(self, state, *, workdir, step):
    self.evaluated.append(step)
    return {"AP": 0.0}


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  exp = ToyExperiment(bad_step=5)
  with pytest.raises(loop.NonFiniteLossError, match=r"NaN/Inf at step 5.*last good checkpoint \(step 4\)"):
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
