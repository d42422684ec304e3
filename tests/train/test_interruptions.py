"""Kills and pre-emption: SIGTERM checkpoints and resumes exactly; metric files keep one line per
step; an evaluation cut by a kill is redone."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import toy_gan  # noqa: E402

from jaxdet.train import checkpoint as ckpt_lib  # noqa: E402
from jaxdet.train import loop  # noqa: E402
from jaxdet.train import sharding as shard_lib  # noqa: E402
from jaxdet.train.preemption import PREEMPTED_EXIT_CODE  # noqa: E402

CONFIG = os.path.join(HERE, "toy_gan_config.py")
STEPS = ["--config.train.num_steps=200", "--config.train.checkpoint_every=50",
         "--config.train.eval_every=40", "--config.train.log_every=10"]


def _main(workdir, *extra, sleep="0.002"):
  return [sys.executable, "-m", "jaxdet.main", f"--config={CONFIG}:{sleep}",
          f"--workdir={workdir}", *STEPS, *extra]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _final_state(workdir):
  c = toy_gan.ToyGAN.config_schema()
  exp = toy_gan.ToyGAN(c, shard_lib.make_mesh())
  ck = ckpt_lib.Checkpointer(workdir, read_only=True)
  state = loop.restore(exp, ck, 200)
  ck.close()
  return jax.device_get(state)


def _records(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return [json.loads(l) for l in f]


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _wait_for(path, proc, timeout=300):
  deadline = time.time() + timeout
  while not os.path.exists(path) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.005)
  assert proc.poll() is None, f"the run ended before {path} appeared"


def _reference(tmp_path):
  ref = str(tmp_path / "ref")
  out = subprocess.run(_main(ref), env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return ref


def _check_files(workdir, ref):
  """One line per log / eval step, equal to the uninterrupted run's (times aside)."""
  for name, skip in (("train_metrics.jsonl", ("img_per_s", "compilations")),
                     ("eval_metrics.jsonl", ())):
    got, want = _records(workdir, name), _records(ref, name)
    assert [r["step"] for r in got] == [r["step"] for r in want], name
    for g, w in zip(got, want):
      assert {k: v for k, v in g.items() if k not in skip} == \
          {k: v for k, v in w.items() if k not in skip}, name


def test_sigterm_checkpoints_the_current_step_and_resumes_exactly(tmp_path):
  ref = _reference(tmp_path)
  run = str(tmp_path / "run")
  proc = subprocess.Popen(_main(run), env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _wait_for(os.path.join(run, "checkpoints", "50"), proc)
  time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == PREEMPTED_EXIT_CODE, err[-2000:]
  stopped = int(err.split("stopped after step ")[1].split()[0])
  assert 50 < stopped < 200 and "Rerun the same command" in err
  ck = ckpt_lib.Checkpointer(run, read_only=True)
  assert ck.latest_step() == stopped     # a checkpoint at the step it stopped, not step 50
  ck.close()
  out = subprocess.run(_main(run), env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"Resumed from" in out.stdout + out.stderr
  assert _same(_final_state(run), _final_state(ref))
  _check_files(run, ref)


def test_kill_during_evaluation_redoes_it_and_keeps_one_line_per_step(tmp_path):
  ref = _reference(tmp_path)
  run = str(tmp_path / "run")
  slow_eval = ["--config.gan.eval_sleep=2"]
  proc = subprocess.Popen(_main(run, *slow_eval), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  _wait_for(os.path.join(run, "evaluating_120"), proc)   # after checkpoint 100, in eval 120
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # train_metrics has lines up to 120 and eval 40, 80; the resume starts at 100.
  assert max(r["step"] for r in _records(run, "train_metrics.jsonl")) == 120
  out = subprocess.run(_main(run), env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  _check_files(run, ref)
  assert _same(_final_state(run), _final_state(ref))


def test_kill_during_the_evaluation_of_a_checkpointed_step_redoes_it(tmp_path):
  ref = _reference(tmp_path)
  run = str(tmp_path / "run")
  # Steps 200 (last) is checkpointed and then evaluated: kill inside that evaluation.
  proc = subprocess.Popen(_main(run, "--config.gan.eval_sleep=2"), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for(os.path.join(run, "evaluating_200"), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 200 not in [r["step"] for r in _records(run, "eval_metrics.jsonl")]
  out = subprocess.run(_main(run), env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Redoing the evaluation at step 200" in out.stdout + out.stderr
  _check_files(run, ref)
