"""Dispatch of a validated config to train / eval / predict / robustness.

Kept importable so a notebook (Colab) can do
``jaxdet.run.run(configs.demo.get_config(), '/content/work', 'train')``.
"""
from __future__ import annotations

import json
import os

from jaxdet.experiments import defaults, registry
from jaxdet.train import config_check, loop
from jaxdet.train import sharding as shard_lib


def run(config, workdir: str, mode: str = "train") -> dict:
  import jax
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file at INFO
  config_check.validate(config, defaults.detector_defaults())
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = shard_lib.make_mesh()
  experiment = registry.build(config, mesh)
  if mode == "train":
    return loop.train_and_evaluate(experiment, workdir)
  if mode == "eval":
    return loop.evaluate_latest(experiment, workdir)
  if mode == "predict":
    from jaxdet.evaluation import predict
    return predict.predict_folder(experiment, workdir)
  if mode == "robustness":
    from jaxdet.evaluation import robustness_eval
    return robustness_eval.evaluate_robustness(experiment, workdir)
  raise ValueError(f"--mode={mode!r}: use train, eval, predict or robustness.")
