"""MTGAN as an experiment: mining from a trained baseline, the alternating step, evaluation."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tiny  # noqa: E402


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """A finished 8-step tiny RetinaNet run (the MTGAN baseline)."""
  root = tmp_path_factory.mktemp("mtgan")
  data_root = str(root / "bench")
  workdir = str(root / "baseline")
  out = subprocess.run([sys.executable, "-m", "jaxdet.main",
                        f"--config={HERE}/tiny_cli_config.py:{data_root}", f"--workdir={workdir}"],
                       env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def _config(baseline, **overrides):
  from jaxdet.experiments.mtgan import mtgan_defaults
  c = mtgan_defaults()
  c.mtgan.baseline_workdir = baseline
  c.mtgan.mine_rois_per_image, c.mtgan.rois_per_image, c.mtgan.test_rois = 8, 6, 8
  c.mtgan.positive_fraction, c.mtgan.pretrain_steps, c.mtgan.num_workers = 0.5, 2, 0
  c.generator.features, c.generator.up_features, c.generator.num_blocks = 8, 8, 1
  c.discriminator.depth, c.discriminator.width, c.discriminator.norm = 18, 8, "group_norm"
  c.train.batch_size, c.train.num_steps, c.train.progress_bar = 8, 6, False
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 2, 3, 6
  c.eval.crop_batch, c.eval.log_images = 16, 2
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


def test_missing_baseline_says_what_to_train(tmp_path):
  from jaxdet.run import run
  from jaxdet.train.config_check import ConfigError
  c = _config(str(tmp_path / "no_such_run"))
  with pytest.raises(ConfigError, match=r"no_such_run.*python -m jaxdet.main"):
    run(c, str(tmp_path / "w"))


def test_mine_train_evaluate_end_to_end(baseline, tmp_path):
  from jaxdet.data.crop_shards import CropShardSource
  from jaxdet.run import run
  workdir = str(tmp_path / "mtgan")
  metrics = run(_config(baseline), workdir)
  crops = CropShardSource(os.path.join(workdir, "crops"))
  labels = np.asarray(crops.labels())
  assert len(crops) > 0 and (labels >= 1).any() and (labels == 0).any()
  assert crops[0]["hr"].shape == (64, 64, 3) and crops[0]["lr"].shape == (16, 16, 3)
  # MTGAN and the baseline on the same RoIs, in one evaluation line.
  for key in ("AP", "APs", "baseline_AP", "baseline_APs"):
    assert key in metrics
  with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
    assert [json.loads(l)["step"] for l in f] == [6]
  assert os.path.exists(os.path.join(workdir, "images", "lr_sr_hr_step6.png"))


def test_pretraining_leaves_d_bit_identical_then_both_train(baseline, tmp_path):
  from jaxdet.experiments import registry
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib
  workdir = str(tmp_path / "mtgan")
  exp = registry.build(_config(baseline), shard_lib.make_mesh())
  exp.workdir = workdir
  exp.mine(workdir)

  class NoCheckpoints:
    def latest_step(self):
      return None

  state, _ = loop.init_or_restore(exp, NoCheckpoints())
  step = jax.jit(loop.make_step(exp))
  batches = exp.train_batches(0)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in
                          zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  for k in range(3):
    before = jax.device_get(state.experiment)
    state, metrics = step(state, shard_lib.to_global(next(batches), exp.mesh))
    after = jax.device_get(state.experiment)
    assert not same(after["G"].params, before["G"].params)
    if k < 2:   # pretrain_steps = 2: G trains on the MSE alone, D is untouched
      assert same(after["D"], before["D"]) and float(metrics["pretrain"]) == 1.0
    else:
      assert not same(after["D"].params, before["D"].params)
      assert float(metrics["pretrain"]) == 0.0
