"""``--mode=robustness``: AP50 of a trained detector under the corruptions of
AP-loss Table 3 (black / random / flipped patch at each object's centre, Gaussian
noise with sigma^2 = 0.01), next to the clean score.

Each corruption is applied to the original image with its ground-truth boxes
before resizing (``jaxdet.evaluation.robustness``), with a per-image RNG so the
numbers are reproducible. Results: ``<workdir>/robustness.json`` and one line
per run in ``<workdir>/robustness_metrics.jsonl``.
"""
from __future__ import annotations

import json
import os

import jax

from jaxdet.evaluation import robustness


def evaluate_robustness(experiment, workdir: str) -> dict:
  from jaxdet.train import checkpoint as ckpt_lib
  from jaxdet.train import loop
  from jaxdet.train.reporting import Reporter

  checkpointer = ckpt_lib.Checkpointer(workdir)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f"--mode=robustness found no checkpoint under "
                            f"{checkpointer.directory}; train first.")
  state, _ = loop.init_or_restore(experiment, workdir, checkpointer)
  checkpointer.close()
  step = int(jax.device_get(state.step))
  names = list(experiment.config.eval.robustness)
  for name in names:
    robustness.get_corruption(name)  # fails early on an unknown name
  reporter = Reporter(workdir, total_steps=0, start_step=0, progress=False)
  ap50 = {}
  for name in names:
    fn = robustness.get_corruption(name)
    metrics = experiment.evaluate(state, workdir=workdir, step=step, tag=f"_{name}",
                                  transform=None if name == "clean" else fn)
    if jax.process_index() == 0:
      ap50[name] = metrics["AP50"]
      reporter.message(f"robustness {name:>15s}: AP50 = {metrics['AP50']:.4f}")
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "robustness.json"), "w") as f:
      json.dump({"step": step, "AP50": ap50}, f, indent=2)
    reporter.eval_line(step, {f"AP50_{k}": v for k, v in ap50.items()},
                       filename="robustness_metrics.jsonl")
  reporter.close()
  return ap50
