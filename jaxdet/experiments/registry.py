"""Experiment names (``config.experiment``) -> experiment classes, imported lazily."""
from __future__ import annotations

import importlib

EXPERIMENTS = {
    "retinanet": "jaxdet.experiments.retinanet:RetinaNetExperiment",
}


def build(config, mesh):
  name = config.experiment
  if name not in EXPERIMENTS:
    raise ValueError(f"config.experiment={name!r} is not known; valid: {sorted(EXPERIMENTS)}.")
  module, cls = EXPERIMENTS[name].split(":")
  return getattr(importlib.import_module(module), cls)(config, mesh)
