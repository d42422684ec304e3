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
from jaxdet.experiments.defaults import sibling_config, parse_variants


def get_config(arg: str | None = None):
  baselines = sibling_config(__file__, "aploss_voc").BASELINES
  variants = parse_variants(arg, ("quick",) + baselines, config="configs/aploss_demo.py")
  c = sibling_config(__file__, "demo").get_config("quick" if "quick" in variants else "")
  sibling_config(__file__, "aploss_voc").apply_aploss(c, variants)
  c.model.norm, c.model.frozen_stages = "group_norm", -1   # from scratch
  c.optim.base_lr, c.optim.warmup_steps = 0.01, 200
  return c
