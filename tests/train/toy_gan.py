"""A two-network GAN experiment of a few hundred parameters, for the loop tests.

G maps 2-D noise to 2-D points, D scores points; real points come from a fixed set through a
``StepLoader`` (so the data position is the step, as for any dataset). Even loop steps update
D (SGD with momentum and weight decay: a zero-gradient "update" would still move it), odd steps
update G (Adam). A BEGAN-like balance scalar ``k_t`` lives in the state next to the two
networks and changes on D steps, so the checkpoint must carry non-parameter state too.

Config: ``experiment = "toy_gan:ToyGAN"`` with this folder on ``sys.path`` (see
``toy_gan_config.py``).
"""
from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdet.data.loader import StepLoader
from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import loop_defaults
from jaxdet.train.optim import Optimizer
from jaxdet.train.state import NetworkState


class MLP(nn.Module):
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.out)(jnp.tanh(nn.Dense(self.hidden)(x)))


class PointLoader(StepLoader):
  """Real points: a fixed set of 64 points around (2, -1), jittered per position."""

  def __init__(self, points, sleep, **kwargs):
    super().__init__(points, **kwargs)
    self.points, self.sleep = points, sleep

  def prepare(self, position, index):
    if self.sleep:
      time.sleep(self.sleep)  # stands in for decoding, so a test can kill mid-run
    return self.points[index] + 0.05 * self.example_rng(11, position).standard_normal(2)

  def collate(self, examples):
    return {"x": np.stack([e for e in examples]).astype(np.float32)}


class ToyGAN(Experiment):
  name = "toy_gan:ToyGAN"
  progress_metrics = ("loss_D", "loss_G", "k_t")

  @classmethod
  def config_schema(cls):
    c = loop_defaults()
    c.experiment = cls.name
    c.train.update(dict(batch_size=8, num_steps=40, log_every=5, checkpoint_every=10,
                        eval_every=20, progress_bar=False))
    c.gan = g = ml_collections.ConfigDict()
    g.hidden = 8          # width of both MLPs
    g.lr_G = 0.01         # Adam
    g.lr_D = 0.05         # SGD, momentum 0.9, weight decay below
    g.weight_decay_D = 0.01
    g.lambda_k = 0.01     # k_t step (BEGAN Eq. 4 style)
    g.gamma = 1.0
    g.k_init = 0.5        # k_0
    g.sleep_per_example = 0.0   # seconds per loaded example (kill tests)
    g.eval_sleep = 0.0          # seconds per evaluation, after writing evaluating_<step>
    return c

  def __init__(self, config, mesh, **kwargs):
    super().__init__(config, mesh, **kwargs)
    g = config.gan
    self.G, self.D = MLP(g.hidden, 2), MLP(g.hidden, 1)
    self.opt_G = Optimizer(optax.scale_by_adam(), lambda step: jnp.float32(g.lr_G))
    self.opt_D = Optimizer(optax.chain(optax.add_decayed_weights(g.weight_decay_D),
                                       optax.trace(0.9)), lambda step: jnp.float32(g.lr_D))
    rng = np.random.default_rng(0)
    self.points = (np.array([2.0, -1.0]) + 0.3 * rng.standard_normal((64, 2))).astype(np.float32)

  def init(self, rng):
    kg, kd = jax.random.split(rng)
    return {"G": NetworkState.create(params=self.G.init(kg, jnp.zeros((1, 2)))["params"],
                                     optimizer=self.opt_G),
            "D": NetworkState.create(params=self.D.init(kd, jnp.zeros((1, 2)))["params"],
                                     optimizer=self.opt_D),
            "k_t": jnp.full((), self.config.gan.k_init, jnp.float32)}

  def _losses(self, g_params, d_params, k_t, real, z):
    fake = self.G.apply({"params": g_params}, z)
    logit_real = self.D.apply({"params": d_params}, real)
    logit_fake = self.D.apply({"params": d_params}, fake)
    loss_real = jax.nn.softplus(-logit_real).mean()   # -log D(x)
    loss_fake = jax.nn.softplus(logit_fake).mean()    # -log(1 - D(G(z)))
    return {"loss_D": loss_real + (0.5 + k_t) * loss_fake,
            "loss_G": jax.nn.softplus(-logit_fake).mean(),  # non-saturating
            "loss_real": loss_real, "loss_fake": loss_fake}

  def train_step(self, state, batch, step, rng):
    real = batch["x"]
    z = jax.random.normal(rng, real.shape)
    G, D, k_t = state["G"], state["D"], state["k_t"]

    def d_step(_):
      grad = jax.grad(lambda p: self._losses(G.params, p, k_t, real, z)["loss_D"])(D.params)
      terms = self._losses(G.params, D.params, k_t, real, z)
      k_new = jnp.clip(k_t + self.config.gan.lambda_k
                       * (self.config.gan.gamma * terms["loss_real"] - terms["loss_fake"]), 0, 1)
      return {"G": G, "D": D.apply_gradients(self.opt_D, grad, step), "k_t": k_new}

    def g_step(_):
      grad = jax.grad(lambda p: self._losses(p, D.params, k_t, real, z)["loss_G"])(G.params)
      return {"G": G.apply_gradients(self.opt_G, grad, step), "D": D, "k_t": k_t}

    new = jax.lax.cond(step % 2 == 0, d_step, g_step, None)
    terms = self._losses(G.params, D.params, k_t, real, z)
    return new, {"loss_D": terms["loss_D"], "loss_G": terms["loss_G"], "k_t": k_t}

  def train_batches(self, start_step):
    return iter(PointLoader(self.points, self.config.gan.sleep_per_example,
                            batch_size=self.config.train.batch_size, train=True,
                            seed=self.config.seed, num_workers=0, start_step=start_step))

  def evaluate(self, state, *, workdir, step):
    if self.config.gan.eval_sleep:
      open(f"{workdir}/evaluating_{step}", "w").close()
      time.sleep(self.config.gan.eval_sleep)
    z = jax.random.normal(jax.random.PRNGKey(123), (256, 2))
    fake = np.asarray(self.G.apply({"params": state["G"].params}, z))
    return {"mean_distance": float(np.linalg.norm(fake.mean(0) - self.points.mean(0)))}
