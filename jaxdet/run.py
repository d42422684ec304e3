"""Dispatch of a config to its experiment and mode (``python -m jaxdet.main`` calls ``run``).

Kept importable so a notebook (Colab) can do
``jaxdet.run.run(configs.demo.get_config(), '/content/work', 'train')``.

The config is validated against the schema of the experiment it names, and the mode against
the experiment's ``modes()``, before anything is built. ``--mode=train`` writes
``<workdir>/config.json`` (what ``jaxdet.experiments.trained.load_trained`` rebuilds the run
from); every other mode writes ``<workdir>/config.<mode>.json`` and leaves the training
record alone. Modes other than train rebuild the experiment with the metadata stored in the
latest checkpoint (a detector's classes), so they do not need the training data. Then
``Experiment.check_inputs`` opens and validates everything the mode will read, so a bad val
file or an indivisible batch fails in seconds, before any training.
"""
from __future__ import annotations

import os

from jaxdet.experiments import registry
from jaxdet.train import config_check
from jaxdet.train import sharding as shard_lib
from jaxdet.train.checkpoint import Checkpointer


def check(config, mode: str = "train"):
  """Validates ``config`` and ``mode``; returns the experiment class. Raises ConfigError."""
  if "experiment" not in config:
    raise config_check.ConfigError("The config has no 'experiment' key; start it from a "
                                   "schema, e.g. jaxdet.experiments.defaults.detector_defaults().")
  try:
    experiment_cls = registry.get(config.experiment)
  except ValueError as e:
    raise config_check.ConfigError(str(e)) from None
  config_check.validate(config, experiment_cls.config_schema())
  if mode not in experiment_cls.modes():
    raise config_check.ConfigError(
        f"--mode={mode!r} is not a mode of experiment {config.experiment!r}; its modes are "
        f"{', '.join(experiment_cls.modes())}.")
  return experiment_cls


def checkpoint_metadata(workdir: str) -> dict | None:
  """``metadata()`` stored with the latest checkpoint of ``workdir`` (None: no checkpoint)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    if checkpointer.latest_step() is None:
      return None
    return checkpointer.meta().get("metadata", {})
  finally:
    checkpointer.close()


def run(config, workdir: str, mode: str = "train") -> dict:
  import jax
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file at INFO
  experiment_cls = check(config, mode)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    name = "config.json" if mode == "train" else f"config.{mode}.json"
    with open(os.path.join(workdir, name), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  metadata = None if mode == "train" else checkpoint_metadata(workdir)
  try:
    experiment = experiment_cls(config, shard_lib.make_mesh(), metadata=metadata)
    experiment.check_inputs(mode, workdir)
  except config_check.ConfigError:
    raise
  except (OSError, ValueError) as e:  # a missing / malformed file or a bad value: say it plainly
    raise config_check.ConfigError(str(e)) from e
  return experiment.run_mode(mode, workdir)
