"""AP-loss RetinaNet on the embedded benchmark (CPU-sized; see configs/demo.py).

The AP-loss recipe of configs/aploss_voc.py (2 anchor scales, delta 1, authors' target
assignment, smooth L1 on variance-scaled deltas) on the demo model and data, trained
from scratch (GroupNorm instead of frozen BN, since there is no pretrained backbone).
The paper's lr (1e-3 per 16 images) is for a pretrained backbone; from scratch the demo
uses 0.01.

    python -m jaxdet.main --config=configs/aploss_demo.py --workdir=runs/aploss_demo
    python -m jaxdet.main --config=configs/aploss_demo.py --workdir=runs/aploss_demo --mode=robustness
Variants: ':focal', ':ohem', ':auc' (the paper's baselines), ':quick'.
"""
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
  spec = importlib.util.spec_from_file_location(f"jaxdet_{name}_config", os.path.join(HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None):
  variants = set((arg or "").split(",")) - {""}
  c = _load("demo").get_config("quick" if "quick" in variants else "")
  _load("aploss_voc").apply_aploss(c, variants)
  c.model.norm, c.model.frozen_stages = "group_norm", -1   # from scratch
  c.optim.base_lr, c.optim.warmup_steps = 0.01, 200
  return c
