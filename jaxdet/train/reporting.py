"""What a run tells the researcher: progress bar, TensorBoard, eval JSONL.

Only process 0 writes. ``<workdir>/tensorboard/`` gets scalar event files
(losses, learning rate, img/s, loss weights, eval metrics);
``<workdir>/eval_metrics.jsonl`` gets one JSON line per evaluation; the
console gets a tqdm bar with ETA and the latest loss.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping

import jax


class Reporter:

  def __init__(self, workdir: str, *, total_steps: int, start_step: int,
               progress: bool = True):
    self.is_main = jax.process_index() == 0
    self.workdir = workdir
    self._tb = None
    self._bar = None
    if not self.is_main:
      return
    os.makedirs(workdir, exist_ok=True)
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard is optional; the JSONL and console still work.
      self._tb = None
    if progress:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, file=sys.stdout, mininterval=2.0,
                       smoothing=0.05)
    self._t0 = time.time()

  def step(self, n: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
    if not self.is_main:
      return
    if self._tb is not None:
      for k, v in values.items():
        if math.isfinite(float(v)):  # e.g. APl is undefined without large objects
          self._tb.add_scalar(f"{prefix}/{k}", float(v), step)
      self._tb.flush()
    if self._bar is not None and prefix == "train":
      shown = {k: f"{float(v):.4g}" for k, v in values.items()
               if k in ("loss", "cls_loss", "reg_loss", "lr", "img_per_s", "lambda_cls", "lambda_reg")}
      self._bar.set_postfix(shown, refresh=False)

  def message(self, text: str) -> None:
    if not self.is_main:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def eval_line(self, step: int, metrics: Mapping[str, float],
                filename: str = "eval_metrics.jsonl") -> None:
    """Appends {"step": ..., <metrics>} to <workdir>/<filename> and TensorBoard."""
    if not self.is_main:
      return
    # Undefined metrics (pycocotools' -1, e.g. APl without large objects) become null.
    record = {"step": int(step), **{k: float(v) if math.isfinite(float(v)) else None
                                    for k, v in metrics.items()}}
    with open(os.path.join(self.workdir, filename), "a") as f:
      f.write(json.dumps(record) + "\n")
    self.scalars(step, metrics, prefix="eval")
    self.message("eval @ step %d: %s" % (step, ", ".join(
        f"{k}={v:.4f}" for k, v in metrics.items())))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
