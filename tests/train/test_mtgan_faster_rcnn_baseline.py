"""MTGAN on its paper's baseline, a Faster R-CNN run: loaded, mined, trained and evaluated.

A file of its own so that pytest-xdist (``--dist loadfile``) can run it beside the RetinaNet-
baseline MTGAN tests of test_mtgan_experiment.py instead of after them.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_mtgan_experiment import _config  # noqa: E402


def test_faster_rcnn_baseline_mine_train_evaluate(tmp_path):
  """MTGAN's paper baseline is Faster R-CNN: a finished tiny Faster R-CNN (FPN) run is loaded by
  ``load_trained``, mined, and MTGAN trains and evaluates on its RoIs."""
  from jaxdet.data.crop_shards import CropShardSource
  from jaxdet.experiments.trained import load_trained
  from jaxdet.run import run
  from test_faster_rcnn import _tiny_config
  base = str(tmp_path / "frcnn")
  run(_tiny_config(str(tmp_path / "bench"), "fpn"), base)
  assert type(load_trained(base).experiment).__name__ == "FasterRCNNExperiment"
  workdir = str(tmp_path / "mtgan")
  metrics = run(_config(base), workdir)
  labels = np.asarray(CropShardSource(os.path.join(workdir, "crops")).labels())
  assert len(labels) > 0 and (labels == 0).any()
  assert {"AP", "baseline_AP"} <= set(metrics)
  assert np.isfinite(metrics["AP"]) and np.isfinite(metrics["baseline_AP"])
