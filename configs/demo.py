"""RetinaNet on the embedded benchmark: trains and evaluates on a laptop CPU.

The benchmark (built on first use from image data shipped in scikit-image and
scikit-learn, no download) has 128x128 photos with small pasted objects, so the
model is a narrow ResNet-18 with GroupNorm trained from scratch and a light
head on P3-P5 with smaller anchors.

    python -m jaxdet.main --config=configs/demo.py --workdir=runs/demo
    variants: ':quick' (a few hundred steps, smoke test)
"""
from jaxdet.experiments.defaults import detector_defaults, parse_variants


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("quick",), config="configs/demo.py")
  c = detector_defaults()
  c.data.source = "benchmark"
  c.data.image_size = (128, 128)
  c.data.short_side = c.data.max_side = 128
  c.data.max_boxes = 16
  c.data.scale_jitter = (1.0, 1.0)
  c.model.depth, c.model.width = 18, 16
  c.model.norm, c.model.frozen_stages = "group_norm", -1
  c.model.min_level, c.model.max_level = 3, 5
  c.model.fpn_filters = c.model.head_filters = 64
  c.model.head_convs, c.model.head_norm = 2, "group_norm"
  c.model.anchor_size = 2.0          # 16 px anchors at stride 8: many objects are < 32 px
  c.loss.smooth_l1_beta = 0.11
  c.optim.base_lr, c.optim.base_batch = 0.02, 16
  c.optim.warmup_steps = 200
  c.optim.decay_steps = (900, 1_100)
  c.train.batch_size, c.train.num_steps = 16, 1_200
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 50, 200, 600
  c.eval.batch_size = 32
  if "quick" in variants:
    c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 200, 200, 100
    c.optim.decay_steps = (150,)
  return c
