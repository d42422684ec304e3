"""The loop with a two-network experiment: separate updates, extra state, exact resume, schema."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import toy_gan  # noqa: E402

from jaxdet.train import checkpoint as ckpt_lib  # noqa: E402
from jaxdet.train import loop  # noqa: E402
from jaxdet.train import sharding as shard_lib  # noqa: E402

CONFIG = os.path.join(HERE, "toy_gan_config.py")


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def _experiment(**gan):
  c = toy_gan.ToyGAN.config_schema()
  c.gan.update(gan)
  return toy_gan.ToyGAN(c, shard_lib.make_mesh())


def test_g_step_leaves_d_bit_identical_and_vice_versa():
  exp = _experiment()

  state, _ = loop.init_or_restore(exp, None)
  step = jax.jit(loop.make_step(exp))
  batches = exp.train_batches(0)
  before = jax.device_get(state.experiment)
  state, _ = step(state, shard_lib.to_global(next(batches), exp.mesh))   # step 0: D
  after_d = jax.device_get(state.experiment)
  assert _leaves_equal(after_d["G"], before["G"])               # params and Adam state
  assert not _leaves_equal(after_d["D"].params, before["D"].params)
  assert not _leaves_equal(after_d["D"].opt_state, before["D"].opt_state)
  assert float(after_d["k_t"]) != float(before["k_t"])
  state, _ = step(state, shard_lib.to_global(next(batches), exp.mesh))   # step 1: G
  after_g = jax.device_get(state.experiment)
  assert _leaves_equal(after_g["D"], after_d["D"])              # params, momentum buffer
  assert float(after_g["k_t"]) == float(after_d["k_t"])
  assert not _leaves_equal(after_g["G"].params, after_d["G"].params)
  assert not _leaves_equal(after_g["G"].opt_state, after_d["G"].opt_state)
  assert int(state.step) == 2


def test_checkpoint_holds_both_networks_and_k_t(tmp_path):
  exp = _experiment()
  loop.train_and_evaluate(exp, str(tmp_path))
  ck = ckpt_lib.Checkpointer(str(tmp_path), read_only=True)
  state = loop.restore(exp, ck, 40)
  ck.close()
  assert set(state.experiment) == {"G", "D", "k_t"}
  assert 0.0 < float(state.experiment["k_t"]) <= 1.0
  assert int(state.step) == 40
  # Rerunning a finished run restores the same state and trains no further.
  exp2 = _experiment()
  loop.train_and_evaluate(exp2, str(tmp_path))
  ck = ckpt_lib.Checkpointer(str(tmp_path), read_only=True)
  assert ck.latest_step() == 40
  ck.close()


def _main(workdir, *extra, sleep="0.002"):
  return [sys.executable, "-m", "jaxdet.main", f"--config={CONFIG}:{sleep}",
          f"--workdir={workdir}", "--config.train.num_steps=300",
          "--config.train.checkpoint_every=25", "--config.train.eval_every=100", *extra]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


def _state(workdir, step):
  exp = _experiment()
  ck = ckpt_lib.Checkpointer(workdir, read_only=True)
  state = loop.restore(exp, ck, step)
  ck.close()
  return jax.device_get(state)


def test_sigkill_and_rerun_is_bit_identical(tmp_path):
  ref_dir, killed_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
  ref = subprocess.run(_main(ref_dir), env=_env(), capture_output=True, text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]

  proc = subprocess.Popen(_main(killed_dir), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  marker = os.path.join(killed_dir, "checkpoints", "100")
  deadline = time.time() + 300
  while not os.path.isdir(marker) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.01)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = subprocess.run(_main(killed_dir), env=_env(), capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from" in resumed.stdout + resumed.stderr

  a, b = _state(ref_dir, 300), _state(killed_dir, 300)
  assert _leaves_equal(a, b)   # every network's params and optimizer state, k_t, step, RNG


def test_typo_in_a_gan_config_is_rejected_with_the_closest_key(tmp_path):
  out = subprocess.run(_main(str(tmp_path / "w"), "--config.gan.lambda_kk=0.1"), env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert "config.gan.lambda_kk" in out.stderr and "Did you mean 'config.gan.lambda_k'" in out.stderr
  # The same typo inside a config is rejected by the experiment's schema before anything runs.
  from jaxdet.run import run
  from jaxdet.train.config_check import ConfigError
  c = toy_gan.ToyGAN.config_schema()
  c.gan.lamda_k = 0.1
  with pytest.raises(ConfigError, match=r"config.gan.lamda_k.*Did you mean 'config.gan.lambda_k'"):
    run(c, str(tmp_path / "w2"))
  # Detector keys are not GAN keys.
  c = toy_gan.ToyGAN.config_schema()
  c.unlock()
  c.loss = {"cls": "focal"}
  with pytest.raises(ConfigError, match="Unknown config key 'config.loss'"):
    run(c, str(tmp_path / "w3"))


def test_a_mode_the_experiment_lacks_is_a_clear_error(tmp_path):
  out = subprocess.run(_main(str(tmp_path / "w"), "--mode=robustness"), env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert "--mode='robustness' is not a mode of experiment" in out.stderr
  assert "train, eval" in out.stderr
