"""Faster R-CNN on COCO 2017 (detectron2 1x recipes): R50-FPN by default, R50-C4 (MTGAN's
baseline, its Tables 2-6: 36.5 AP / 18.4 APs on minival) and R101-FPN.

Short side 800 / max 1333, SGD momentum 0.9, wd 1e-4, lr 0.02 per 16 images (linear scaling),
1000-step linear warm-up from 0.001, 90k iterations, /10 at 60k and 80k; RPN and RoI-head
defaults in ``jaxdet.experiments.faster_rcnn``.

    python -m jaxdet.main --config=configs/faster_rcnn_coco.py --workdir=runs/faster_rcnn_coco
    variants: ':fpn' (default), ':c4', ':r101', ':tfds' (coco/2017 prepared with
      `tfds build coco/2017`), ':alwa' (ALWA_2 on the RPN losses, ALWA paper Tables 3-4),
      ':alwa_roi' (and on the box head), ':demo' (the embedded benchmark on a laptop CPU, tiny
      ResNet-18 FPN; combine with ':c4')
Expects config.data.train_json / train_images / val_json / val_images (COCO layout) unless a
tfds or demo variant is used.
"""
from jaxdet.experiments.defaults import parse_variants, use_coco2017_json
from jaxdet.experiments.faster_rcnn import faster_rcnn_defaults

VARIANTS = ("fpn", "c4", "r101", "tfds", "alwa", "alwa_roi", "demo")


def use_c4(c) -> None:
  """R50-C4: RPN on res4 with 15 anchors (32-512 px x 3 ratios), res5 box head on 14x14 RoIs."""
  c.model.design = "c4"
  c.model.anchor_size, c.model.anchor_scales = 2.0, (1.0, 2.0, 4.0, 8.0, 16.0)
  c.model.pooler_resolution = 14
  c.rpn.pre_nms_topk_train, c.rpn.pre_nms_topk_test = 12_000, 6_000   # detectron2 C4 configs
  c.rpn.post_nms_topk_train, c.rpn.post_nms_topk_test = 2_000, 1_000


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/faster_rcnn_coco.py: unknown variant(s) {sorted(unknown)}; valid: "
                     f"{', '.join(VARIANTS)}.")
  if {"fpn", "c4"} <= variants:
    raise ValueError("configs/faster_rcnn_coco.py: ':fpn' and ':c4' are two designs; pick one.")
  return apply_recipe(faster_rcnn_defaults(), variants)


def apply_recipe(c, variants: set[str]):
  """The COCO (or demo) recipe of ``variants`` on ``c`` (a Faster R-CNN schema or one that
  extends it, e.g. Mask R-CNN's); returns ``c``."""
  if "demo" in variants:
    _demo(c)
  else:
    use_coco2017_json(c.data)
    c.data.image_size, c.data.aspect_ratio_grouping = (800, 1344), True   # + 1344 x 800 bucket
    c.data.short_side, c.data.max_side = 800, 1333
    c.data.num_workers = 16
    c.model.depth = 101 if "r101" in variants else 50
    c.model.norm, c.model.frozen_stages = "frozen_bn", 1
    c.model.pretrained = "weights/resnet%d_imagenet.npz" % c.model.depth
    c.model.dtype = "bfloat16"
    c.optim.decay_steps = (60_000, 80_000)
    c.train.batch_size, c.train.num_steps = 16, 90_000
    c.train.eval_every, c.train.checkpoint_every = 10_000, 2_000
    c.eval.batch_size = 16
    if "tfds" in variants:
      c.data.source, c.data.tfds_name = "tfds", "coco/2017"
  if "c4" in variants:
    use_c4(c)
    if "demo" in variants:   # 16-64 px anchors on the 8 x 8 res4 map of a 128 px image
      c.model.anchor_size, c.model.anchor_scales = 1.0, (1.0, 2.0, 4.0)
      c.rpn.pre_nms_topk_train, c.rpn.post_nms_topk_train = 600, 300
      c.rpn.pre_nms_topk_test, c.rpn.post_nms_topk_test = 300, 100
      # res5 runs once per RoI: 8 x 8 RoIs (4 x 4 after res5) and 16 RoIs per image keep a
      # step at ~0.55 s on 2 CPU cores (14 x 14 and 64 RoIs: ~10 s).
      c.model.pooler_resolution, c.roi_head.num_samples = 8, 16
  if "alwa" in variants or "alwa_roi" in variants:
    c.alwa.enabled, c.alwa.statistic = True, "alwa2"
    c.alwa.roi_head = "alwa_roi" in variants
  return c


def _demo(c) -> None:
  """The embedded benchmark (128 x 128, small objects): ResNet-18 at 1/4 width, GroupNorm, from
  scratch; fewer anchors / proposals / RoIs than COCO, same losses and heads."""
  c.data.source = "benchmark"
  c.data.image_size, c.data.short_side, c.data.max_side = (128, 128), 128, 128
  c.data.max_boxes = 16
  c.model.depth, c.model.width = 18, 16
  c.model.norm, c.model.frozen_stages = "group_norm", -1
  c.model.fpn_filters, c.model.fc_dim = 64, 256
  c.model.anchor_size = 4.0                      # 16 px at P2 ... 256 at P6
  c.rpn.batch_size_per_image = 128
  c.rpn.pre_nms_topk_train, c.rpn.post_nms_topk_train = 600, 300
  c.rpn.pre_nms_topk_test, c.rpn.post_nms_topk_test = 300, 100
  c.roi_head.num_samples = 32                   # 0.6 s a step on 2 CPU cores (64: 0.8 s)
  c.optim.base_lr, c.optim.base_batch = 0.02, 16
  c.optim.warmup_steps, c.optim.warmup_factor = 200, 0.001
  c.optim.decay_steps = (900, 1_100)
  c.train.batch_size, c.train.num_steps = 16, 1_200
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 50, 200, 600
  c.eval.batch_size = 32
