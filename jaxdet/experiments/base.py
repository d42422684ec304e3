"""The experiment interface: what the training loop (``jaxdet.train.loop``) runs.

An experiment is one recipe — a detector, a GAN on RoI crops, a landmark GAN — built from a
validated config and a mesh. The loop owns the step, the run RNG, the non-finite guard,
checkpoints, logging and periodic evaluation; the experiment owns everything else::

    class MyExperiment(Experiment):
      name = "my_experiment"                       # config.experiment

      @classmethod
      def config_schema(cls):                      # every key, with its default and a comment
        c = loop_defaults(); c.experiment = cls.name; c.my = ...; return c

      def init(self, rng):                         # -> any pytree, e.g. {"G": NetworkState, ...}
      def train_step(self, state, batch, step, rng):   # pure; jitted and donated by the loop
        return new_state, {"loss_G": ..., "loss_D": ...}
      def train_batches(self, start_step):         # host numpy batches start_step, start_step+1, ...
      def evaluate(self, state, *, workdir, step): # -> {metric: float}

``train_step`` receives the loop step (int32 scalar: data position and every learning-rate
schedule) and a per-step key (the run key folded with the step). Every metric it returns is a
scalar; any non-finite metric stops the run (the loop records the first such step). Each
network updates only its own ``NetworkState`` (``jaxdet.train.state``).

``modes()`` lists what ``python -m jaxdet.main --mode=...`` may run for this experiment,
``check_inputs`` validates what that mode will read, and ``run_mode`` runs it; the base class
gives ``train`` and ``eval``. ``metadata()`` is stored
with every checkpoint (e.g. the class list of a detector) and handed back to ``__init__``
when a finished run is rebuilt without its training data (``jaxdet.experiments.trained``).
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np


class Experiment(abc.ABC):
  name: ClassVar[str]
  # Metric names shown in the progress bar (the rest still go to TensorBoard and the JSONL).
  progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)

  def __init__(self, config, mesh, *, metadata: Mapping[str, Any] | None = None):
    self.config = config
    self.mesh = mesh
    del metadata

  # ---- what the config may say ------------------------------------------------------------
  @classmethod
  @abc.abstractmethod
  def config_schema(cls):
    """Every config key this experiment understands, with its default (an ml_collections
    ConfigDict starting from ``jaxdet.experiments.defaults.loop_defaults()``)."""

  @classmethod
  def modes(cls) -> tuple[str, ...]:
    return ("train", "eval")

  def run_mode(self, mode: str, workdir: str) -> dict:
    """Runs ``mode`` (one of ``modes()``; ``jaxdet.run`` checks that first)."""
    from jaxdet.train import loop
    if mode == "train":
      return loop.train_and_evaluate(self, workdir)
    if mode == "eval":
      return loop.evaluate_latest(self, workdir)
    raise ValueError(f"{type(self).__name__} has no mode {mode!r}; modes: {self.modes()}.")

  def check_inputs(self, mode: str, workdir: str) -> None:
    """Before ``run_mode``: open and validate everything ``mode`` will read (train, val,
    predict input) and check every shape constraint, raising an error that names the config key
    or file — in seconds, not after the first evaluation interval. Default: nothing to check."""
    del mode, workdir

  # ---- state and steps -----------------------------------------------------------------------
  @abc.abstractmethod
  def init(self, rng) -> Any:
    """Pure: the experiment state (any pytree of arrays) at step 0."""

  def load_pretrained(self, state: Any) -> Any:
    """Host-side, after ``init`` of a fresh run: load pretrained weights. Default: none."""
    return state

  @abc.abstractmethod
  def train_step(self, state: Any, batch: Mapping[str, Any], step, rng) -> tuple[Any, dict]:
    """Pure: one loop step -> (new state, scalar metrics)."""

  @abc.abstractmethod
  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of global batches ``start_step, start_step + 1, ...``."""

  @abc.abstractmethod
  def evaluate(self, state: Any, *, workdir: str, step: int) -> dict[str, float]:
    """Runs on every process; returns the metrics of ``eval_metrics.jsonl`` (process 0)."""

  def metadata(self) -> dict:
    """JSON-able facts about the data stored with each checkpoint. Default: none."""
    return {}

  def eval_images(self, state: Any, *, step: int) -> dict[str, np.ndarray]:
    """Pictures logged after each evaluation (``{name: uint8 [H, W, 3]}``). Default: none."""
    del state, step
    return {}
