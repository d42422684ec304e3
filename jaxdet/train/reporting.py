"""What a run tells the researcher: console, TensorBoard, JSONL metric files, pictures.

Only process 0 writes; on every other process each method is a no-op (``images``
returns ``[]``). Under ``<workdir>``:

* ``tensorboard/``: scalar event files (``<prefix>/<name>``: training metrics,
  eval metrics) and images; flushed after each ``scalars`` / ``images`` call.
  tensorboardX is optional: without it everything else still works.
* ``train_metrics.jsonl``: one line ``{"step": step, **values}`` per
  ``scalars(..., prefix="train")`` call, flushed at once; non-finite values are
  ``null``.
* ``eval_metrics.jsonl``: one line per ``eval_line`` call (same format).

A training run resumed from step ``s`` passes ``resume_step=s``: lines of both JSONL files
with a step after ``s`` (written after the checkpoint it resumes from, and about to be written
again) are removed, and TensorBoard purges its events after ``s``, so every step appears
exactly once however often the run was killed.
* ``images/<name>_step<step>.png``: one file per image passed to ``images``.

The console shows a tqdm bar (``progress=True``) whose postfix holds the
experiment's ``progress_metrics``, or, with ``progress=False``, one line per
``scalars`` call: ``step 200/1200  loss 0.8912  cls_loss 0.57  img/s 49.1``.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from typing import Mapping, Sequence

import jax
import numpy as np

TRAIN_METRICS_FILE = "train_metrics.jsonl"
EVAL_METRICS_FILE = "eval_metrics.jsonl"
IMAGES_DIR = "images"

# Console labels that read better than the metric key.
_LABELS = {"img_per_s": "img/s"}


def _number(key: str, value):
  """A JSON-able Python number for a scalar metric: int for integers, float or None (non-finite)."""
  a = np.asarray(value)
  if a.size != 1 or a.ndim > 1:
    raise TypeError(f"Metric {key!r} must be a scalar, got shape {a.shape}.")
  a = a.reshape(())
  if a.dtype.kind in "biu":
    return int(a)
  if a.dtype.kind == "f":
    v = float(a)
    return v if math.isfinite(v) else None
  raise TypeError(f"Metric {key!r} must be a real number, got {value!r} (dtype {a.dtype}).")


def _fmt(value) -> str:
  if value is None:
    return "nan"
  if isinstance(value, int):
    return str(value)
  return f"{value:.4g}"


def read_records(path: str) -> list[dict]:
  """The JSON lines of a metrics file ([] if it does not exist); a torn last line is skipped."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut by a kill mid-write
        continue
  return records


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites ``path`` (atomically) without the records whose step is after ``step``."""
  if not os.path.exists(path):
    return
  records = read_records(path)
  kept = [r for r in records if int(r.get("step", -1)) <= step]
  with open(path) as f:
    intact = sum(1 for _ in f) == len(records)
  if len(kept) == len(records) and intact:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  os.replace(tmp, path)


def _safe_name(name: str) -> str:
  safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))
  return safe if safe.strip(".") else "image"


class Reporter:
  """Console, TensorBoard, JSONL and PNG output of one run (process 0 only).

  Args:
    workdir: run directory; created if missing.
    total_steps: last step of the run (shown as ``step k/total``; 0 shows ``step k``).
    start_step: step the run (re)starts from; where the bar starts.
    progress: a tqdm bar on stdout; ``False`` prints one line per ``scalars`` call.
    progress_metrics: metric names shown in the bar's postfix and first on the
      console line, in this order; names missing from a ``scalars`` call are skipped.
    resume_step: a training run (re)starting at this step: records after it are removed.
  """

  def __init__(self, workdir: str, *, total_steps: int, start_step: int,
               progress: bool = True, progress_metrics: Sequence[str] = ("loss",),
               resume_step: int | None = None):
    if isinstance(progress_metrics, str):
      progress_metrics = (progress_metrics,)
    self.progress_metrics = tuple(progress_metrics)
    self.is_main = jax.process_index() == 0
    self.workdir = workdir
    self.total_steps = int(total_steps)
    self._tb = None
    self._bar = None
    self._train_file = None
    if not self.is_main:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None:
      for name in (TRAIN_METRICS_FILE, EVAL_METRICS_FILE):
        _drop_records_after(os.path.join(workdir, name), resume_step)
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=None if resume_step is None else resume_step + 1)
    except ImportError:  # TensorBoard is optional; the JSONL and console still work.
      self._tb = None
    if progress:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, file=sys.stdout, mininterval=2.0,
                       smoothing=0.05)
    self._t0 = time.time()

  def step(self, n: int = 1) -> None:
    """Advances the progress bar by ``n`` steps."""
    if self._bar is not None:
      self._bar.update(n)

  def _ordered(self, values: Mapping) -> list:
    """``values`` items: the progress metrics first (in their order), then the rest."""
    first = [k for k in self.progress_metrics if k in values]
    return first + [k for k in values if k not in first]

  def _write_scalars(self, step: int, values: Mapping, prefix: str, console: bool) -> None:
    numbers = {k: _number(k, v) for k, v in values.items()}
    if self._tb is not None:
      for k, v in numbers.items():
        if v is not None:  # e.g. APl is undefined without large objects
          self._tb.add_scalar(f"{prefix}/{k}", float(v), step)
      self._tb.flush()
    if prefix == "train":
      if self._train_file is None:
        self._train_file = open(os.path.join(self.workdir, TRAIN_METRICS_FILE), "a")
      self._train_file.write(json.dumps({"step": int(step), **numbers}) + "\n")
      self._train_file.flush()
      if self._bar is not None:
        shown = {k: _fmt(numbers[k]) for k in self.progress_metrics if k in numbers}
        self._bar.set_postfix(shown, refresh=False)
    if console and self._bar is None:
      head = f"step {int(step)}/{self.total_steps}" if self.total_steps else f"step {int(step)}"
      if prefix != "train":
        head += f"  [{prefix}]"
      parts = [f"{_LABELS.get(k, k)} {_fmt(numbers[k])}" for k in self._ordered(numbers)]
      print("  ".join([head] + parts), flush=True)

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
    """Logs scalar metrics of ``step``.

    TensorBoard gets ``<prefix>/<name>`` for each finite value (flushed). With
    ``prefix="train"`` one line ``{"step": step, **values}`` (non-finite -> null)
    is appended to ``<workdir>/train_metrics.jsonl`` and flushed, and the bar's
    postfix shows the ``progress_metrics``. Without a bar one console line is
    printed: ``step <step>/<total>``, then ``<name> <value>`` pairs (4 significant
    digits; the progress metrics first), ``[<prefix>]`` after the step unless
    the prefix is ``train``.
    """
    if not self.is_main:
      return
    self._write_scalars(step, values, prefix, console=True)

  def images(self, step: int, images: Mapping[str, np.ndarray]) -> list[str]:
    """Writes pictures of ``step`` to TensorBoard and ``<workdir>/images/``.

    Args:
      step: training step, part of the file name and the TensorBoard step.
      images: name -> uint8 ``[H, W, 3]`` or ``[H, W]`` array (see
        ``jaxdet.visualize`` for grids, boxes and landmarks). The name is the
        TensorBoard tag; in the file name every character outside
        ``[A-Za-z0-9_.-]`` becomes ``_``.

    Returns:
      The written paths ``<workdir>/images/<name>_step<step>.png`` in the order of
      ``images``; ``[]`` on processes other than 0.
    """
    checked = {}
    for name, im in images.items():
      a = np.asarray(im)
      if a.dtype != np.uint8:
        raise TypeError(f"Image {name!r} must be uint8, got dtype {a.dtype}.")
      if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or 0 in a.shape:
        raise ValueError(f"Image {name!r} must be [H, W, 3] or [H, W], got shape {a.shape}.")
      checked[name] = a
    files = {}
    for name in checked:
      fname = f"{_safe_name(name)}_step{int(step)}.png"
      if fname in files.values():
        raise ValueError(f"Image names {[n for n, f in files.items() if f == fname][0]!r} and "
                         f"{name!r} both map to the file {fname}; rename one.")
      files[name] = fname
    if not self.is_main:
      return []
    from PIL import Image
    out_dir = os.path.join(self.workdir, IMAGES_DIR)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, a in checked.items():
      path = os.path.join(out_dir, files[name])
      Image.fromarray(a).save(path)
      paths.append(path)
      if self._tb is not None:
        self._tb.add_image(str(name), a, int(step), dataformats="HWC" if a.ndim == 3 else "HW")
    if self._tb is not None:
      self._tb.flush()
    return paths

  def message(self, text: str) -> None:
    """Prints ``text`` on the console (above the bar when there is one)."""
    if not self.is_main:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def eval_line(self, step: int, metrics: Mapping[str, float],
                filename: str = EVAL_METRICS_FILE) -> None:
    """Appends {"step": ..., <metrics>} to <workdir>/<filename>, TensorBoard (eval/) and the console."""
    if not self.is_main:
      return
    # Undefined metrics (pycocotools' -1, e.g. APl without large objects) become null.
    record = {"step": int(step), **{k: float(v) if math.isfinite(float(v)) else None
                                    for k, v in metrics.items()}}
    with open(os.path.join(self.workdir, filename), "a") as f:
      f.write(json.dumps(record) + "\n")
    self._write_scalars(step, metrics, prefix="eval", console=False)
    self.message("eval @ step %d: %s" % (step, ", ".join(
        f"{k}={v:.4f}" for k, v in metrics.items())))

  def close(self) -> None:
    """Closes the bar, the TensorBoard writer and train_metrics.jsonl (idempotent)."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._train_file is not None:
      self._train_file.close()
      self._train_file = None
