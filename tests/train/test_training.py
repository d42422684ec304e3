"""End-to-end training system: loss goes down, 1 vs 8 devices vs 2 processes, kill + resume."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

# The costly fixture is session-scoped; pytest-xdist runs each file on one worker
# (--dist loadfile, pyproject.toml), so it is built once.

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import tiny  # noqa: E402


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("bench") / "b")
  tiny.tiny_config(root)  # builds the small benchmark once
  return root


def _env(**extra):
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


def _run_scenario(args, env):
  out = subprocess.run([sys.executable, os.path.join(HERE, "tiny.py"), *args], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_training_on_one_batch_reduces_the_loss(data_root):
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.loop import init_or_restore, make_step

  cfg = tiny.tiny_config(data_root, **{"optim.base_lr": 0.02})
  mesh = shard_lib.make_mesh()
  exp = registry.build(cfg, mesh)
  state, shardings = init_or_restore(exp, None)
  step = jax.jit(make_step(exp), donate_argnums=0,
                 out_shardings=(shardings, shard_lib.replicated(mesh)))
  batch = shard_lib.to_global(next(exp.train_batches(0)), mesh)
  losses = []
  for _ in range(25):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.7 * losses[0], losses


def test_same_step_on_1_device_8_devices_and_2_processes(data_root):
  single = _run_scenario(["single", data_root], _env())
  eight = _run_scenario(["single", data_root],
                        _env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert single["devices"] == 1 and eight["devices"] == 8
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, "tiny.py"), "distributed", data_root,
       f"127.0.0.1:{port}", str(i)], env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (o, e) in zip(procs, outs):
    assert p.returncode == 0, e[-3000:]
  dist = [json.loads([l for l in o.splitlines() if l.startswith("RESULT ")][-1][7:])
          for o, _ in outs]
  assert dist[0]["processes"] == 2 and dist[0]["devices"] == 2
  for other in (eight, *dist):
    np.testing.assert_allclose(other["loss"], single["loss"], rtol=1e-5)
    np.testing.assert_allclose(other["loss2"], single["loss2"], rtol=1e-4)
    np.testing.assert_allclose(other["checksum"], single["checksum"], rtol=1e-5)


def _main(workdir, data_root, *extra):
  cmd = [sys.executable, "-m", "jaxdet.main", f"--config={HERE}/tiny_cli_config.py:{data_root}",
         f"--workdir={workdir}", *extra]
  return cmd


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, data_root):
  """An uninterrupted 8-step CLI run (checkpoints every 2 steps, final evaluation)."""
  workdir = str(tmp_path_factory.mktemp("ref") / "run")
  ref = subprocess.run(_main(workdir, data_root), env=_env(), capture_output=True, text=True,
                       timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]
  assert "train_step compiled 1 time(s)" in ref.stdout + ref.stderr
  return workdir


def _final_eval(workdir):
  with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
    return json.loads(f.read().splitlines()[-1])


def _restore_state(workdir, step):
  import orbax.checkpoint as ocp
  from jaxdet.train.checkpoint import Checkpointer
  ck = Checkpointer(workdir)
  restored = ck.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ck.close()
  return restored["state"]


def test_kill_and_rerun_resumes_to_the_same_result(tmp_path, data_root, reference_run):
  env = _env()
  killed_dir = str(tmp_path / "killed")
  proc = subprocess.Popen(_main(killed_dir, data_root), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed_dir, "checkpoints", "4")
  deadline = time.time() + 300
  while not os.path.isdir(ckpt) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = subprocess.run(_main(killed_dir, data_root), env=env, capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  out = resumed.stdout + resumed.stderr
  assert "Resumed from" in out, out[-2000:]

  a, b = _final_eval(reference_run), _final_eval(killed_dir)
  assert a["step"] == b["step"] == 8
  for k in ("AP", "AP50", "AP75"):
    np.testing.assert_allclose(b[k], a[k], atol=1e-6)
  sa, sb = _restore_state(reference_run, 8), _restore_state(killed_dir, 8)
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


def test_eval_mode_reproduces_the_final_evaluation(reference_run, data_root):
  with open(os.path.join(reference_run, "config.json")) as f:
    train_config = f.read()
  out = subprocess.run(_main(reference_run, data_root, "--mode=eval",
                             "--config.eval.score_threshold=0.05"), env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  # The training run's config stays as it was; eval writes its own.
  with open(os.path.join(reference_run, "config.json")) as f:
    assert f.read() == train_config
  assert os.path.exists(os.path.join(reference_run, "config.eval.json"))
  with open(os.path.join(reference_run, "eval_metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f.read().splitlines()]
  assert lines[-1]["step"] == lines[-2]["step"] == 8
  for k in ("AP", "AP50", "AP75", "APs"):
    np.testing.assert_allclose(lines[-1][k], lines[-2][k], atol=1e-9)


def test_predict_mode_writes_json_and_images(reference_run, data_root, tmp_path):
  from jaxdet.data import benchmark
  paths = benchmark.ensure_benchmark(data_root, num_train=24, num_val=8, image_size=64,
                                     verbose=False)
  out_dir = str(tmp_path / "pred")
  out = subprocess.run(_main(reference_run, data_root, "--mode=predict",
                             f"--config.predict.input_dir={paths['val_images']}",
                             f"--config.predict.output_dir={out_dir}",
                             "--config.eval.score_threshold=0.0"),
                       env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(out_dir, "detections.json")) as f:
    dets = json.load(f)
  images = sorted(os.listdir(paths["val_images"]))
  assert {d["file_name"] for d in dets} <= set(images) and dets
  assert len([f for f in os.listdir(out_dir) if f.endswith("_det.png")]) == len(images)
  valid_ids = set(paths["category_ids"])
  assert all(d["category_id"] in valid_ids and len(d["bbox"]) == 4 for d in dets)


def test_robustness_mode_reports_ap50_per_corruption(reference_run, data_root):
  out = subprocess.run(_main(reference_run, data_root, "--mode=robustness"), env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(reference_run, "robustness.json")) as f:
    result = json.load(f)
  assert result["step"] == 8
  assert set(result["AP50"]) == {"clean", "black_patch", "random_patch", "flipped_patch",
                                 "gaussian_noise"}
  # The clean score is the AP50 of the regular final evaluation.
  np.testing.assert_allclose(result["AP50"]["clean"], _final_eval(reference_run)["AP50"],
                             atol=1e-9)
  assert all(0.0 <= v <= 1.0 for v in result["AP50"].values())
  # Not VOC data (config.eval.voc_metrics is off): the reported metric is COCO AP50.
  assert result["metric"] == "coco_ap50" and result["scores"] == result["AP50"]
  assert "coco_ap50 = " in out.stdout + out.stderr


def test_load_trained_gives_the_detections_of_eval_mode(reference_run, data_root, tmp_path):
  """A finished run rebuilt by load_trained (classes from the checkpoint, training data not
  opened) detects exactly what --mode=eval wrote."""
  import shutil
  from jaxdet.experiments.trained import load_trained
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_run, workdir)
  # The 8-step model scores below the default threshold: keep every detection.
  out = subprocess.run(_main(workdir, data_root, "--mode=eval",
                             "--config.eval.score_threshold=0.0"), env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  run = load_trained(workdir)
  assert run.step == 8
  run.experiment.config.eval.score_threshold = 0.0
  run.experiment.config.data.train_json = "/nonexistent/train.json"  # never read
  results = run.experiment.detect(run.state, run.experiment.eval_batches())
  with open(os.path.join(workdir, "detections_step8.json")) as f:
    written = json.load(f)
  assert len(results) == len(written) > 0
  key = lambda d: (d["image_id"], -d["score"], d["category_id"], tuple(d["bbox"]))
  for got, want in zip(sorted(results, key=key), sorted(written, key=key)):
    assert got["image_id"] == want["image_id"] and got["category_id"] == want["category_id"]
    np.testing.assert_allclose(got["bbox"], want["bbox"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-6)
  assert run.experiment._train_source is None  # the training data was never opened


def test_load_trained_errors_say_what_to_run(tmp_path, reference_run):
  import shutil
  from jaxdet.experiments.trained import load_trained
  with pytest.raises(FileNotFoundError, match="python -m jaxdet.main"):
    load_trained(str(tmp_path / "missing"))
  partial = tmp_path / "partial"
  shutil.copytree(reference_run, partial)
  shutil.rmtree(partial / "checkpoints" / "8")
  with pytest.raises(RuntimeError, match=r"stopped at step 6 of 8.*rerunning the same command"):
    load_trained(str(partial))
  assert load_trained(str(partial), step=6).step == 6
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 3"):
    load_trained(str(partial), step=3)


def test_predict_skips_unreadable_images_only_when_asked(reference_run, data_root, tmp_path):
  import shutil
  from jaxdet.data import benchmark
  paths = benchmark.ensure_benchmark(data_root, num_train=24, num_val=8, image_size=64,
                                     verbose=False)
  folder = tmp_path / "images"
  shutil.copytree(paths["val_images"], folder)
  (folder / "broken.png").write_bytes(b"not a png")
  args = [f"--config.predict.input_dir={folder}", f"--config.predict.output_dir={tmp_path / 'p'}"]
  out = subprocess.run(_main(reference_run, data_root, "--mode=predict", *args), env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 2
  assert "broken.png" in out.stderr and "--config.data.skip_bad_images=True" in out.stderr
  out = subprocess.run(_main(reference_run, data_root, "--mode=predict", *args,
                             "--config.data.skip_bad_images=True"), env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  pngs = [f for f in os.listdir(tmp_path / "p") if f.endswith("_det.png")]
  assert len(pngs) == len(os.listdir(paths["val_images"]))   # every readable image, not broken
