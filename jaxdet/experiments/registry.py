"""Experiment names (``config.experiment``) -> experiment classes, imported lazily.

An experiment defined outside jaxdet (a researcher's own module) is named by its import
path, ``config.experiment = "my_package.my_module:MyExperiment"``, or registered under a short
name with ``register``; either way it selects its config schema and modes like a built-in one.
"""
from __future__ import annotations

import difflib
import importlib

EXPERIMENTS = {
    "retinanet": "jaxdet.experiments.retinanet:RetinaNetExperiment",
    "ssd": "jaxdet.experiments.ssd:SSDExperiment",
    "faster_rcnn": "jaxdet.experiments.faster_rcnn:FasterRCNNExperiment",
    "mask_rcnn": "jaxdet.experiments.mask_rcnn:MaskRCNNExperiment",
    "mtgan": "jaxdet.experiments.mtgan:MTGANExperiment",
    "high_to_low": "jaxdet.experiments.high_to_low:HighToLowExperiment",
    "lr_landmarks": "jaxdet.experiments.lr_landmarks:LRLandmarksExperiment",
}


def register(name: str, target: str) -> None:
  """Makes ``config.experiment=name`` build ``target`` ('package.module:ClassName')."""
  if ":" not in target:
    raise ValueError(f"register({name!r}, {target!r}): target must be 'module:ClassName'.")
  EXPERIMENTS[name] = target


def get(name: str):
  """The experiment class registered as ``name`` (or at import path 'module:ClassName')."""
  if isinstance(name, str) and ":" in name and name not in EXPERIMENTS:
    module, cls = name.split(":", 1)
    try:
      return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"config.experiment={name!r}: cannot import it ({e}).") from None
  if name not in EXPERIMENTS:
    close = difflib.get_close_matches(str(name), sorted(EXPERIMENTS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"config.experiment={name!r} is not a known experiment.{hint} "
                     f"Valid: {', '.join(sorted(EXPERIMENTS))}.")
  module, cls = EXPERIMENTS[name].split(":")
  return getattr(importlib.import_module(module), cls)


def schema(name: str):
  """Every config key of experiment ``name`` with its default."""
  return get(name).config_schema()


def build(config, mesh, **kwargs):
  """``get(config.experiment)(config, mesh, **kwargs)``."""
  return get(config.experiment)(config, mesh, **kwargs)
