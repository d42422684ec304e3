"""Orbax checkpoints of the whole train state.

``<workdir>/checkpoints/<step>/`` holds the ``LoopState`` (step, run RNG, every network's
params and optimizer state, experiment extras such as ALWA windows or BEGAN's k_t) and a JSON
record (data position, config, the experiment's ``metadata()``), saved asynchronously, last
``keep`` kept. Rerunning the same command restores the latest step and continues the same
trajectory; ``read_only=True`` opens a finished run without ever writing to it.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from absl import logging as absl_logging


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save and not read_only)
    # orbax warns "Given directory is read only" on every read-only open: that is the intent.
    verbosity = absl_logging.get_verbosity()
    if read_only:
      absl_logging.set_verbosity(absl_logging.ERROR)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options)
    finally:
      absl_logging.set_verbosity(verbosity)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, abstract_state: Any, step: int | None = None):
    """Restores into the shapes/shardings of ``abstract_state`` (ShapeDtypeStructs)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def meta(self, step: int | None = None) -> dict:
    """The JSON record of checkpoint ``step`` (default: the latest) without the state."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

