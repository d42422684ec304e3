"""The training loop that runs any experiment (big_vision-style sections).

An *experiment* (see ``jaxdet.experiments.base.Experiment``) supplies pure
``init(rng) -> TrainState`` and ``train_step(state, batch) -> (state,
metrics)``, a host-side batch iterator that starts at any step, and an
``evaluate(state)``. This module owns what is common: mesh, sharded init,
restore-or-init, the jitted donated step, logging, NaN/Inf guard,
checkpoints, periodic evaluation. Rerunning the same command after a kill
resumes from the latest checkpoint with the same data position and RNG.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from jaxdet.train import checkpoint as ckpt_lib
from jaxdet.train import sharding as shard_lib
from jaxdet.train.reporting import Reporter


class NonFiniteLossError(RuntimeError):
  pass


class TraceCounter:
  """Counts how often a function is traced (= compiled) by jax.jit."""

  def __init__(self, fn):
    self.fn, self.count = fn, 0

  def __call__(self, *args, **kwargs):
    self.count += 1
    return self.fn(*args, **kwargs)


def _check_finite(state, last_good_step: int | None, reporter: Reporter) -> None:
  bad = int(jax.device_get(state.first_nonfinite_step))
  if bad >= 0:
    where = (f"the last good checkpoint (step {last_good_step}) is kept"
             if last_good_step is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"The training loss became NaN/Inf at step {bad}; training stopped and "
        f"{where}. Lower config.optim.base_lr, raise config.optim.warmup_steps or "
        f"set config.optim.grad_clip_norm, then rerun the same command to resume.")


def _last_eval_step(workdir: str) -> int | None:
  path = os.path.join(workdir, "eval_metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lines = [l for l in f if l.strip()]
  return json.loads(lines[-1])["step"] if lines else None


def init_or_restore(experiment, workdir: str, checkpointer: ckpt_lib.Checkpointer):
  """Returns (state, state_shardings): restored from the latest checkpoint or fresh."""
  mesh = experiment.mesh
  rng = jax.random.PRNGKey(experiment.config.seed)
  abstract = jax.eval_shape(experiment.init, rng)
  shardings = jax.tree.map(lambda _: shard_lib.replicated(mesh), abstract)
  latest = checkpointer.latest_step()
  if latest is None:
    state = jax.jit(experiment.init, out_shardings=shardings)(rng)
    if hasattr(experiment, "load_pretrained"):
      state = experiment.load_pretrained(state)
  else:
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    state, _ = checkpointer.restore(target, latest)
  return state, shardings


def train_and_evaluate(experiment, workdir: str) -> dict:
  """Trains ``experiment`` to config.train.num_steps; returns the last eval metrics."""
  cfg = experiment.config
  tcfg = cfg.train
  mesh = experiment.mesh
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tcfg.keep_checkpoints)
  state, shardings = init_or_restore(experiment, workdir, checkpointer)
  start = int(jax.device_get(state.step))
  reporter = Reporter(workdir, total_steps=tcfg.num_steps, start_step=start,
                      progress=tcfg.progress_bar)
  if start:
    reporter.message(f"Resumed from {checkpointer.directory}/{start} (step {start}).")
  else:
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    reporter.message(f"Starting {cfg.experiment} on {jax.device_count()} device(s) "
                     f"({jax.process_count()} process(es)), {n_params / 1e6:.2f}M params.")

  try:
    return _train_loop(experiment, workdir, state, shardings, checkpointer, reporter, start)
  finally:  # also on NaN/Inf or Ctrl-C: finish pending asynchronous checkpoint writes
    checkpointer.close()
    reporter.close()


def _train_loop(experiment, workdir, state, shardings, checkpointer, reporter, start):
  cfg = experiment.config
  tcfg = cfg.train
  mesh = experiment.mesh
  traced_step = TraceCounter(experiment.train_step)
  step_fn = jax.jit(traced_step, donate_argnums=0,
                    out_shardings=(shardings, shard_lib.replicated(mesh)))
  batches = experiment.train_batches(start_step=start)
  last_good = checkpointer.latest_step()
  last_metrics: dict = {}
  acc, n_acc, t_last, step_last = None, 0, time.time(), start

  for step in range(start, tcfg.num_steps):
    batch = shard_lib.to_global(next(batches), mesh)
    state, metrics = step_fn(state, batch)
    acc = metrics if acc is None else jax.tree.map(lambda a, b: a + b, acc, metrics)
    n_acc += 1
    reporter.step()
    done = step + 1
    is_last = done == tcfg.num_steps

    if done % tcfg.log_every == 0 or is_last:
      _check_finite(state, last_good, reporter)
      values = {k: float(v) / n_acc for k, v in jax.device_get(acc).items()}
      dt = time.time() - t_last
      values["img_per_s"] = (done - step_last) * tcfg.batch_size / max(dt, 1e-9)
      values["compilations"] = traced_step.count
      reporter.scalars(done, values)
      acc, n_acc, t_last, step_last = None, 0, time.time(), done

    if done % tcfg.checkpoint_every == 0 or is_last:
      _check_finite(state, last_good, reporter)
      checkpointer.save(done, state, {"step": done,
                                      "examples_seen": done * tcfg.batch_size,
                                      "config": cfg.to_json_best_effort()})
      last_good = done

    if (tcfg.eval_every and done % tcfg.eval_every == 0) or is_last:
      last_metrics = experiment.evaluate(state, workdir=workdir, step=done)
      reporter.eval_line(done, last_metrics)

  if start >= tcfg.num_steps and _last_eval_step(workdir) != tcfg.num_steps:
    # Killed after the final checkpoint but before its evaluation finished.
    last_metrics = experiment.evaluate(state, workdir=workdir, step=start)
    reporter.eval_line(start, last_metrics)
  elif start >= tcfg.num_steps:
    reporter.message(f"Training already finished at step {start}; "
                     f"see {os.path.join(workdir, 'eval_metrics.jsonl')}.")
  reporter.message(f"train_step compiled {traced_step.count} time(s).")
  return last_metrics


def evaluate_latest(experiment, workdir: str) -> dict:
  """Restores the latest checkpoint in ``workdir`` and evaluates it."""
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=experiment.config.train.keep_checkpoints)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(
        f"--mode=eval found no checkpoint under {checkpointer.directory}; "
        f"train first with --mode=train and the same --workdir.")
  state, _ = init_or_restore(experiment, workdir, checkpointer)
  step = int(jax.device_get(state.step))
  reporter = Reporter(workdir, total_steps=0, start_step=0, progress=False)
  metrics = experiment.evaluate(state, workdir=workdir, step=step)
  reporter.eval_line(step, metrics)
  reporter.close()
  checkpointer.close()
  return metrics
