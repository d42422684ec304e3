"""What the training loop needs from an experiment (RetinaNet family, MTGAN, ...).

An experiment is built from a validated config and a mesh and provides:

- ``init(rng) -> TrainState``: pure; jitted by the loop with replicated
  out-shardings (a GAN puts ``{'G': ..., 'D': ...}`` in params/opt_state or
  keeps several states in ``extra``).
- ``train_step(state, batch) -> (state, metrics)``: pure; ``batch`` is a dict of
  global arrays sharded on 'data'; metrics are scalars (summed over a log
  interval and averaged by the loop).
- ``train_batches(start_step) -> Iterator[dict[str, np.ndarray]]``: this
  process's rows of global batches ``start_step, start_step + 1, ...``.
- ``evaluate(state, *, workdir, step) -> dict[str, float]``: runs on every
  process, returns the metrics written to ``eval_metrics.jsonl``.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol

import numpy as np


class Experiment(Protocol):
  config: Any
  mesh: Any

  def init(self, rng) -> Any: ...

  def train_step(self, state, batch) -> tuple[Any, dict]: ...

  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]: ...

  def evaluate(self, state, *, workdir: str, step: int) -> dict[str, float]: ...
