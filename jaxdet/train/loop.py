"""The training loop that runs any experiment (big_vision-style sections).

An *experiment* (``jaxdet.experiments.base.Experiment``) supplies a pure ``init(rng)`` and
``train_step(state, batch, step, rng)``, a host-side batch iterator that starts at any step,
and ``evaluate``. This module owns what is common: the ``LoopState`` (step, run RNG,
non-finite guard, the experiment's state), sharded init, restore-or-init, the jitted donated
step, logging, checkpoints and periodic evaluation. Rerunning the same command after a kill
resumes from the latest checkpoint with the same data position and RNG.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.train import checkpoint as ckpt_lib
from jaxdet.train import sharding as shard_lib
from jaxdet.train.preemption import Preempted, StopSignal
from jaxdet.train.reporting import EVAL_METRICS_FILE, Reporter, read_records
from jaxdet.train.state import LoopState, NetworkState


class NonFiniteLossError(RuntimeError):
  pass


class TraceCounter:
  """Counts how often a function is traced (= compiled) by jax.jit."""

  def __init__(self, fn):
    self.fn, self.count = fn, 0

  def __call__(self, *args, **kwargs):
    self.count += 1
    return self.fn(*args, **kwargs)


def _check_finite(state: LoopState, last_good_step: int | None, workdir: str) -> None:
  bad = int(jax.device_get(state.first_nonfinite_step))
  if bad >= 0:
    if last_good_step is not None:
      where = (f"the last good checkpoint (step {last_good_step}) is kept; after changing the "
               f"config, rerun the same command to resume from it")
    else:
      where = (f"no checkpoint had been written yet; after changing the config, rerun to start "
               f"again (remove {os.path.join(workdir, 'checkpoints')} first if it exists)")
    raise NonFiniteLossError(
        f"A training metric became NaN/Inf at step {bad}; training stopped and {where}. "
        f"Lower config.optim.base_lr, raise config.optim.warmup_steps or set "
        f"config.optim.grad_clip_norm.")


def _evaluated_steps(workdir: str) -> set[int]:
  return {int(r["step"]) for r in read_records(os.path.join(workdir, EVAL_METRICS_FILE))}


def _is_eval_step(step: int, tcfg) -> bool:
  return bool(tcfg.eval_every and step % tcfg.eval_every == 0) or step == tcfg.num_steps


def _abstract_state(experiment):
  """(ShapeDtypeStructs, replicated shardings) of the ``LoopState`` of ``experiment``."""
  mesh = experiment.mesh
  abstract = jax.eval_shape(lambda key: _fresh_state(experiment, key),
                            jax.random.PRNGKey(experiment.config.seed))
  shardings = jax.tree.map(lambda _: shard_lib.replicated(mesh), abstract)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  return target, shardings


def _is_network(x) -> bool:
  return isinstance(x, NetworkState)


def _fresh_state(experiment, key) -> LoopState:
  # The experiment initialises from the seed's key; the run key is a fold of it, so
  # per-step keys never repeat the initialisation's.
  return LoopState.create(experiment.init(key), jax.random.fold_in(key, 1))


def init_or_restore(experiment, checkpointer: ckpt_lib.Checkpointer | None):
  """Returns (LoopState, its shardings): restored from the latest checkpoint or fresh (always
  fresh with ``checkpointer=None``, e.g. in tests and benchmarks)."""
  target, shardings = _abstract_state(experiment)
  latest = None if checkpointer is None else checkpointer.latest_step()
  if latest is None:
    state = jax.jit(lambda key: _fresh_state(experiment, key), out_shardings=shardings)(
        jax.random.PRNGKey(experiment.config.seed))
    state = state.replace(experiment=experiment.load_pretrained(state.experiment))
  else:
    state, _ = checkpointer.restore(target, latest)
  return state, shardings


def restore(experiment, checkpointer: ckpt_lib.Checkpointer, step: int | None = None) -> LoopState:
  """The ``LoopState`` of checkpoint ``step`` (default: the latest); no fresh init."""
  target, _ = _abstract_state(experiment)
  state, _ = checkpointer.restore(target, step)
  return state


def make_step(experiment):
  """The loop step around ``experiment.train_step``: per-step key, step count, NaN guard."""

  def loop_step(state: LoopState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    exp_state, metrics = experiment.train_step(state.experiment, batch, state.step, rng)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, state.step,
                          state.first_nonfinite_step)
    return state.replace(step=state.step + 1, experiment=exp_state,
                         first_nonfinite_step=first_bad), metrics

  return loop_step


def train_and_evaluate(experiment, workdir: str) -> dict:
  """Trains ``experiment`` to config.train.num_steps; returns the last eval metrics."""
  cfg = experiment.config
  tcfg = cfg.train
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tcfg.keep_checkpoints)
  state, shardings = init_or_restore(experiment, checkpointer)
  start = int(jax.device_get(state.step))
  reporter = Reporter(workdir, total_steps=tcfg.num_steps, start_step=start,
                      progress=tcfg.progress_bar,
                      progress_metrics=experiment.progress_metrics, resume_step=start)
  if start:
    reporter.message(f"Resumed from {checkpointer.directory}/{start} (step {start}).")
  else:
    nets = [x for x in jax.tree.leaves(state.experiment, is_leaf=_is_network)
            if _is_network(x)]
    sizes = ", ".join(f"{sum(p.size for p in jax.tree.leaves(n.params)) / 1e6:.2f}M" for n in nets)
    reporter.message(f"Starting {cfg.experiment} on {jax.device_count()} device(s) "
                     f"({jax.process_count()} process(es)), {sizes or 'no'} params.")

  try:
    with StopSignal() as stop:
      return _train_loop(experiment, workdir, state, shardings, checkpointer, reporter, start,
                         stop)
  finally:  # also on NaN/Inf or an exception: finish pending asynchronous checkpoint writes
    checkpointer.close()
    reporter.close()


def _evaluate(experiment, state: LoopState, workdir: str, step: int, reporter: Reporter) -> dict:
  metrics = experiment.evaluate(state.experiment, workdir=workdir, step=step)
  reporter.eval_line(step, metrics)
  images = experiment.eval_images(state.experiment, step=step)
  if images:
    reporter.images(step, images)
  return metrics


def _accumulator_to_meta(acc, n_acc: int) -> dict | None:
  if acc is None:
    return None
  host = jax.device_get(acc)
  return {"count": n_acc, "sums": {k: [float(v), str(np.asarray(v).dtype)] for k, v in host.items()}}


def _accumulator_from_meta(meta: dict):
  saved = meta.get("log_accumulator")
  if not saved:
    return None, 0
  return ({k: np.asarray(v, dtype) for k, (v, dtype) in saved["sums"].items()},
          int(saved["count"]))


def _train_loop(experiment, workdir, state, shardings, checkpointer, reporter, start, stop):
  cfg = experiment.config
  tcfg = cfg.train
  mesh = experiment.mesh
  last_metrics: dict = {}
  if start and _is_eval_step(start, tcfg) and start not in _evaluated_steps(workdir):
    # Killed during (or just before) the evaluation of the checkpoint it resumes from.
    reporter.message(f"Redoing the evaluation at step {start}, interrupted before it finished.")
    last_metrics = _evaluate(experiment, state, workdir, start, reporter)
  if start >= tcfg.num_steps:
    reporter.message(f"Training already finished at step {start}; "
                     f"see {os.path.join(workdir, EVAL_METRICS_FILE)}.")
    return last_metrics

  traced_step = TraceCounter(make_step(experiment))
  step_fn = jax.jit(traced_step, donate_argnums=0,
                    out_shardings=(shardings, shard_lib.replicated(mesh)))
  batches = experiment.train_batches(start_step=start)
  last_good = checkpointer.latest_step()
  # Metric sums of the current log interval; a resume mid-interval continues the checkpoint's,
  # so every logged average is the uninterrupted run's.
  acc, n_acc = _accumulator_from_meta(checkpointer.meta(start) if start else {})
  t_last, step_last = time.time(), start

  for step in range(start, tcfg.num_steps):
    batch = shard_lib.to_global(next(batches), mesh)
    state, metrics = step_fn(state, batch)
    acc = metrics if acc is None else jax.tree.map(lambda a, b: a + b, acc, metrics)
    n_acc += 1
    reporter.step()
    done = step + 1
    is_last = done == tcfg.num_steps
    is_log = done % tcfg.log_every == 0 or is_last

    if is_log:
      _check_finite(state, last_good, workdir)
      values = {k: float(v) / n_acc for k, v in jax.device_get(acc).items()}
      dt = time.time() - t_last
      values["img_per_s"] = (done - step_last) * tcfg.batch_size / max(dt, 1e-9)
      values["compilations"] = traced_step.count
      reporter.scalars(done, values)
      acc, n_acc, t_last, step_last = None, 0, time.time(), done

    stopping = stop.should_stop(at_sync_point=is_log)
    if done % tcfg.checkpoint_every == 0 or is_last or stopping:
      _check_finite(state, last_good, workdir)
      checkpointer.save(done, state, {"step": done,
                                      "examples_seen": done * tcfg.batch_size,
                                      "config": cfg.to_json_best_effort(),
                                      "metadata": experiment.metadata(),
                                      "log_accumulator": _accumulator_to_meta(acc, n_acc)})
      last_good = done

    if stopping:
      checkpointer.wait()
      raise Preempted(stop.received, done, checkpointer.directory)

    if _is_eval_step(done, tcfg):
      if last_good == done:
        # Let this step's checkpoint finish first: a kill during the (long) evaluation then
        # resumes here and only redoes the evaluation.
        checkpointer.wait()
      last_metrics = _evaluate(experiment, state, workdir, done, reporter)

  reporter.message(f"train_step compiled {traced_step.count} time(s).")
  return last_metrics


def restore_latest(experiment, workdir: str, mode: str) -> LoopState:
  """The latest checkpoint of ``workdir``, opened read-only, for ``--mode=<mode>``."""
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    if checkpointer.latest_step() is None:
      raise FileNotFoundError(
          f"--mode={mode} found no checkpoint under {checkpointer.directory}; train first with "
          f"--mode=train and the same --workdir.")
    return restore(experiment, checkpointer)
  finally:
    checkpointer.close()


def evaluate_latest(experiment, workdir: str) -> dict:
  """Restores the latest checkpoint in ``workdir`` (read-only) and evaluates it (``--mode=eval``)."""
  state = restore_latest(experiment, workdir, "eval")
  step = int(jax.device_get(state.step))
  reporter = Reporter(workdir, total_steps=0, start_step=0, progress=False)
  try:
    return _evaluate(experiment, state, workdir, step, reporter)
  finally:
    reporter.close()
