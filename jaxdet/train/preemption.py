"""Graceful stop on SIGTERM / SIGINT: finish the step, write a checkpoint, exit with a code.

SLURM (``--signal``), Kubernetes and TPU maintenance send SIGTERM some time before they kill a
job; Ctrl-C sends SIGINT. ``StopSignal`` turns either into a flag that the loop reads between
steps: it finishes the current step, writes a checkpoint at it, waits for the write, and raises
``Preempted``; ``python -m jaxdet.main`` then exits with ``PREEMPTED_EXIT_CODE`` so a job script
can requeue the job, and rerunning the same command resumes exactly. A second signal of the same
kind falls back to the default behaviour (kill now).

With several processes every process must stop at the same step (the checkpoint is a
collective write), so the flag is agreed on (any process's signal stops all) only at log
intervals; a single process stops after the current step.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again" (a checkpoint was written)


class Preempted(Exception):
  """Training stopped on a signal after writing a checkpoint at ``step``."""

  def __init__(self, signal_name: str, step: int, checkpoint_dir: str):
    self.signal_name, self.step, self.checkpoint_dir = signal_name, step, checkpoint_dir
    super().__init__(f"Received {signal_name}: stopped after step {step} and wrote the checkpoint "
                     f"{checkpoint_dir}/{step}. Rerun the same command to resume from it.")


class StopSignal:
  """Records SIGTERM / SIGINT while active (a context manager); no-op off the main thread."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self) -> "StopSignal":
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signal.Signals(signum).name
    # A second signal of the same kind acts as if we had not been listening.
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def should_stop(self, at_sync_point: bool) -> bool:
    """True when this process (or, with several processes, any process) was signalled.

    Multi-process runs only decide at ``at_sync_point`` (the same steps on every process).
    """
    if jax.process_count() == 1:
      return self.received is not None
    if not at_sync_point:
      return False
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(self.received is not None))
    if np.max(flags) and self.received is None:
      self.received = "a stop signal on another process"
    return bool(np.max(flags))
