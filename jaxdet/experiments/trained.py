"""Runs that build on runs: rebuild a finished run's experiment and restore its weights.

``load_trained(workdir)`` reads ``<workdir>/config.json`` (written by ``--mode=train``),
rebuilds the experiment it names with the metadata stored in the checkpoint (a detector's
classes: its training data is not opened), and restores the latest (or a given) checkpoint
read-only. It is how MTGAN gets its baseline detector, a student its teacher, or a run its
warm start::

    baseline = load_trained("runs/retinanet_coco")
    results = baseline.experiment.detect(baseline.state, baseline.experiment.eval_batches())

A missing, unfinished or incompatible workdir is an error that says what to run first.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from jaxdet.experiments import registry
from jaxdet.train import checkpoint as ckpt_lib
from jaxdet.train import config_check
from jaxdet.train import loop


@dataclasses.dataclass
class TrainedRun:
  experiment: Any   # the rebuilt Experiment
  state: Any        # its state at ``step`` (e.g. {"net": NetworkState, ...} for a detector)
  step: int
  config: ml_collections.ConfigDict
  workdir: str


def _train_command(workdir: str) -> str:
  return f"python -m jaxdet.main --config=<the run's config file> --workdir={workdir}"


def config_from_json(values: dict, schema: ml_collections.ConfigDict, *, where: str,
                     prefix: str = "config") -> ml_collections.ConfigDict:
  """The schema updated with a JSON config (lists become tuples where the schema has tuples)."""
  for key, value in values.items():
    path = f"{prefix}.{key}"
    if key not in schema:
      raise config_check.ConfigError(
          f"{where} has key '{path}', which experiment {schema.get('experiment', '?')!r} does "
          f"not know: the run was written by another jaxdet version. Retrain it with "
          f"this version.")
    ref = schema[key]
    if isinstance(ref, ml_collections.ConfigDict):
      config_from_json(value, ref, where=where, prefix=path)
    elif isinstance(ref, tuple):
      schema[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    else:
      schema[key] = value
  return schema


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The validated config of the training run in ``workdir``."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    what = "does not exist" if not os.path.isdir(workdir) else "holds no config.json"
    raise FileNotFoundError(f"{workdir!r} {what}: it is not a jaxdet training run. Train it first: "
                            f"{_train_command(workdir)}")
  with open(path) as f:
    values = json.load(f)
  name = values.get("experiment")
  try:
    schema = registry.schema(name)
  except ValueError as e:
    raise config_check.ConfigError(f"{path}: {e}") from None
  return config_from_json(values, schema, where=path)


def load_trained(workdir: str, step: int | None = None, *, mesh=None,
                 require_finished: bool = True) -> TrainedRun:
  """Rebuilds the run in ``workdir`` and restores checkpoint ``step`` (default: the latest).

  ``require_finished``: the latest checkpoint must be at ``config.train.num_steps`` (ignored
  when ``step`` is given).
  """
  from jaxdet.train import sharding as shard_lib
  config = load_config(workdir)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    steps = checkpointer.all_steps() if os.path.isdir(checkpointer.directory) else []
    if not steps:
      raise FileNotFoundError(
          f"{workdir!r} has a config but no checkpoint: its training stopped before the first "
          f"one (config.train.checkpoint_every={config.train.checkpoint_every}). Rerun it: "
          f"{_train_command(workdir)}")
    if step is None:
      step = max(steps)
      if require_finished and step < config.train.num_steps:
        raise RuntimeError(
            f"The run in {workdir!r} stopped at step {step} of {config.train.num_steps}. Finish "
            f"it by rerunning the same command ({_train_command(workdir)}), or pass step= / "
            f"require_finished=False to use it as it is.")
    elif step not in steps:
      raise FileNotFoundError(f"{workdir!r} has no checkpoint at step {step}; it has steps "
                              f"{sorted(steps)} (older ones are removed after "
                              f"config.train.keep_checkpoints={config.train.keep_checkpoints}).")
    metadata = checkpointer.meta(step).get("metadata", {})
    experiment = registry.build(config, mesh or shard_lib.make_mesh(), metadata=metadata)
    try:
      state = loop.restore(experiment, checkpointer, step)
    except (ValueError, KeyError, TypeError) as e:
      raise RuntimeError(
          f"The checkpoint {checkpointer.directory}/{step} does not match the experiment its "
          f"config.json describes ({type(e).__name__}: {e}). It was probably written by "
          f"another jaxdet version; retrain it: {_train_command(workdir)}") from e
  finally:
    checkpointer.close()
  return TrainedRun(experiment=experiment, state=state.experiment, step=int(step),
                    config=config, workdir=workdir)
