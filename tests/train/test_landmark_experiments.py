"""The two landmark stages end to end on a tiny embedded face benchmark: high-to-low training,
generation of the LR datasets (resumable, byte-identical), stage 2 in setting S4 (G2, D2, D3,
k_t), its evaluation and the identification mode; and each update touching only its network."""
import importlib.util
import os

import jax
import numpy as np
import pytest

# The costly fixture is session-scoped; pytest-xdist runs each file on one worker
# (--dist loadfile, pyproject.toml), so it is built once.

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _config(name, arg, bench):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  c.data.benchmark_root = bench
  c.data.benchmark_train, c.data.benchmark_test, c.data.benchmark_identities = 24, 16, 3
  c.data.num_workers = 0
  c.train.batch_size, c.train.progress_bar = 8, False
  c.eval.batch_size = 8
  return c


@pytest.fixture(scope="session")
def stage1(tmp_path_factory):
  """A finished 4-step high-to-low run and its generated LR sets."""
  from jaxdet.run import run
  root = tmp_path_factory.mktemp("faces")
  bench, workdir = str(root / "bench"), str(root / "h2l")
  c = _config("high_to_low", "demo,quick", bench)
  c.generator.features = c.generator.max_features = 8
  c.discriminator.features = c.discriminator.max_features = 8
  c.train.num_steps = c.train.eval_every = 4
  c.generate.shard_size, c.generate.batch_size = 8, 8
  metrics = run(c, workdir, "train")
  run(c, workdir, "generate")
  return c, bench, workdir, metrics


def test_high_to_low_trains_evaluates_and_generates_resumably(stage1):
  from jaxdet.data.generated_faces import GeneratedFaceSource, shard_path
  from jaxdet.data.face_benchmark import FaceBenchmarkSource
  from jaxdet.run import run
  c, bench, workdir, metrics = stage1
  assert {"pixel_rmse", "d_real", "d_fake", "generated_colour_gap"} <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  gen_dir = os.path.join(workdir, "generated")
  train = GeneratedFaceSource(gen_dir, "train")
  hr = FaceBenchmarkSource(bench, "hr_train", scheme="19")
  assert len(train) == len(hr) == 24 and train.scheme == "19"
  # The LR truth is the HR truth scaled by 32 / 128; images are G1's 32 x 32 faces.
  np.testing.assert_allclose(train[5].landmarks, hr[5].landmarks / 4, rtol=1e-6)
  assert train[5].image.shape == (32, 32, 3)
  # Kill-and-rerun: a deleted shard is regenerated with the same bytes (noise fixed per face).
  path = shard_path(gen_dir, "train", 1)
  before = np.load(path)["image"]
  os.remove(path)
  os.remove(os.path.join(gen_dir, "train", "done.json"))
  run(c, workdir, "generate")
  np.testing.assert_array_equal(np.load(path)["image"], before)


def _stage2(stage1, setting, tmp_path):
  c1, bench, workdir, _ = stage1
  c = _config("lr_landmarks", f"{setting},demo,quick", bench)
  c.data.generated_dir = os.path.join(workdir, "generated")
  for net in (c.generator, c.d2, c.d3):
    net.features = net.max_features = 8
  c.generator.blocks_per_group = c.d2.blocks_per_group = 1   # 8-block U-Nets: quicker to compile
  c.identify.steps, c.identify.batch_size, c.identify.width = 3, 8, 4
  return c


def test_s4_trains_evaluates_and_identifies(stage1, tmp_path):
  from jaxdet.run import run
  c = _stage2(stage1, "s4", tmp_path)
  workdir = str(tmp_path / "s4")
  metrics = run(c, workdir, "train")
  for name in ("real_lr_test", "generated_test"):
    assert np.isfinite(metrics[f"{name}_nrmse"]) and 0 <= metrics[f"{name}_auc@0.07"] <= 100
  assert os.path.exists(os.path.join(workdir, "ced_6.png"))
  ident = run(c, workdir, "identify")
  assert {"aligned_s4_top1", "aligned_true_landmarks_top1", "not_aligned_mAP"} <= set(ident)


def test_each_update_touches_only_its_network(stage1, tmp_path):
  """One S3 step with G2's learning rate at 0: G2 stays bit-identical while D2 moves, and k_t
  follows Eq. 8 from D2's losses (the S4 run above trains G2 itself)."""
  from jaxdet.experiments import registry
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib

  def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  c = _stage2(stage1, "s3", tmp_path)
  c.loss.lambda_k, c.loss.k0 = 0.5, 0.5
  c.optim_G.base_lr = 0.0
  exp = registry.build(c, shard_lib.make_mesh())
  state, _ = loop.init_or_restore(exp, None)
  batch = next(iter(exp.train_batches(0)))
  before = jax.device_get(state.experiment)
  state, m = jax.jit(loop.make_step(exp))(state, shard_lib.to_global(batch, exp.mesh))
  after = jax.device_get(state.experiment)
  assert same(before["G"].params, after["G"].params)
  assert not same(before["D2"].params, after["D2"].params)
  expected = np.clip(0.5 + 0.5 * (0.5 * float(m["l_real"]) - float(m["l_fake"])), 0, 1)
  np.testing.assert_allclose(float(after["k_t"].k), expected, rtol=1e-5)
