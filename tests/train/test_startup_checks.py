"""Fail before training: every source opened and every shape checked at start-up, in seconds;
nothing about the data changes silently."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tiny  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("bench") / "b")
  tiny.tiny_config(root)  # builds the small benchmark once
  return root


def _run(workdir, data_root, *extra, env_extra=None):
  cmd = [sys.executable, "-m", "jaxdet.main", f"--config={HERE}/tiny_cli_config.py:{data_root}",
         f"--workdir={workdir}", *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
  t0 = time.time()
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  return out, time.time() - t0


def _assert_failed_before_training(out, seconds, workdir):
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  assert seconds < 60, f"took {seconds:.0f} s to fail"


def test_missing_val_annotations_fail_at_start(tmp_path, data_root):
  wd = str(tmp_path / "w")
  out, seconds = _run(wd, data_root, f"--config.data.val_json={tmp_path}/nope.json")
  _assert_failed_before_training(out, seconds, wd)
  assert "config.data.val_json" in out.stderr and "nope.json" in out.stderr


def test_malformed_val_annotations_fail_at_start(tmp_path, data_root):
  bad = tmp_path / "val.json"
  bad.write_text('{"images": [{"id": 1, "file_name": "a.png", "width": 64}], '
                 '"annotations": [], "categories": [{"id": 1, "name": "x"}]}')
  wd = str(tmp_path / "w")
  out, seconds = _run(wd, data_root, f"--config.data.val_json={bad}")
  _assert_failed_before_training(out, seconds, wd)
  assert str(bad) in out.stderr and "height" in out.stderr


def test_indivisible_eval_batch_fails_at_start_naming_the_key(tmp_path, data_root):
  wd = str(tmp_path / "w")
  out, seconds = _run(wd, data_root, "--config.eval.batch_size=3",
                      env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  _assert_failed_before_training(out, seconds, wd)
  assert "config.eval.batch_size=3" in out.stderr and "--config.eval.batch_size=2" in out.stderr


def test_max_boxes_below_the_data_is_an_error_and_zero_sizes_it(tmp_path, data_root):
  wd = str(tmp_path / "w")
  out, seconds = _run(wd, data_root, "--config.data.max_boxes=2")
  _assert_failed_before_training(out, seconds, wd)
  assert "config.data.max_boxes=2" in out.stderr and "6 objects" in out.stderr
  # 0: sized from the data, every box of the fullest image is in the batch.
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  cfg = tiny.tiny_config(data_root, **{"data.max_boxes": 0})
  exp = registry.build(cfg, shard_lib.make_mesh())
  assert exp.max_boxes(exp.train_source) == 6
  full = max(range(len(exp.train_source)), key=lambda i: exp.train_source[i].num_objects)
  assert exp.train_source[full].num_objects == 6
  seen = 0
  for _, batch in zip(range(3), exp.train_batches(0)):   # 24 images = 3 batches of 8
    assert batch["boxes"].shape[1] == 6
    seen = max(seen, int(batch["box_valid"].sum(1).max()))
  assert seen == 6


def test_degenerate_boxes_are_counted_in_both_splits_and_reported(tmp_path, data_root):
  """A negative-width box is dropped from training and from the evaluated ground truth, and
  the start-up report (console and data_report.json) counts it in each split."""
  from jaxdet.data import benchmark
  paths = benchmark.ensure_benchmark(data_root, num_train=24, num_val=8, image_size=64,
                                     verbose=False)
  files = {}
  for split in ("train", "val"):
    with open(paths[f"{split}_json"]) as f:
      data = json.load(f)
    ann = dict(data["annotations"][0], id=10**6, bbox=[30.0, 30.0, -5.0, 8.0], area=40.0)
    data["annotations"].append(ann)
    files[split] = tmp_path / f"{split}.json"
    files[split].write_text(json.dumps(data))
  wd = str(tmp_path / "w")
  out, _ = _run(wd, data_root, f"--config.data.train_json={files['train']}",
                f"--config.data.val_json={files['val']}", "--config.train.num_steps=2",
                "--config.train.checkpoint_every=2")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(wd, "data_report.json")) as f:
    report = json.load(f)
  for split in ("train", "val"):
    assert report[split]["boxes_dropped_degenerate"] == 1
    assert "1 degenerate" in out.stdout
  assert report["val"]["objects"] == 30   # the benchmark's 30 objects, not 31
