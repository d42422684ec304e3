"""AP-loss RetinaNet on PASCAL VOC: 07+12 trainval -> 07 test (Chen et al., AP-loss, Sec. 4).

ResNet-50 (ablation; ':r101' for ResNet-101), anchors 2 scales {2^0, 2^0.5} x 3 ratios,
delta = 1, frozen BN, 512x512 training, test short side 600 (':500' / ':800' for the
benchmark settings), NMS 0.5 per class, SGD 0.9 / wd 1e-4, lr 1e-3 per 16 images
(2 GPUs x 8) with warm-up from 1/3 over 500 steps, 160 epochs /10 at 110 and 140.
Targets as in the authors' code: IoU >= 0.5 positive (+ anchors tied for a GT's best
IoU), < 0.4 negative; smooth L1 (beta 1) on deltas divided by (0.1, 0.1, 0.2, 0.2).

    python -m jaxdet.main --config=configs/aploss_voc.py --workdir=runs/aploss_voc
    python -m jaxdet.main --config=configs/aploss_voc.py --workdir=runs/aploss_voc --mode=robustness
Baselines of the paper: ':focal', ':ohem' (CE + OHEM 3:1), ':auc'. ':tfds' reads TFDS voc/2007 +
voc/2012 (07+12 trainval -> 07 test, as configs/retinanet_voc.py:tfds).
Augmentation here is flip + scale jitter (the paper uses SSD's photometric/expand/crop).
"""
from jaxdet.experiments.defaults import (detector_defaults, parse_variants, sibling_config,
                                         use_voc0712_json)

VOC_TRAINVAL_0712 = 16_551
BASELINES = ("focal", "ohem", "auc")     # the paper's baselines; default: AP-loss


def apply_aploss(c, variants):
  """The AP-loss recipe on top of any data/model config (shared with the COCO and demo configs)."""
  c.model.anchor_scales = (1.0, 2 ** 0.5)
  c.model.norm, c.model.frozen_stages = "frozen_bn", 1
  c.loss.cls = "ap"
  for name, cls in (("focal", "focal"), ("ohem", "ce_ohem"), ("auc", "auc")):
    if name in variants:
      c.loss.cls = cls
  c.loss.ap_delta, c.loss.ap_interpolate = 1.0, True
  c.loss.positive_iou, c.loss.negative_iou, c.loss.allow_low_quality = 0.5, 0.4, True
  c.loss.reg, c.loss.smooth_l1_beta = "smooth_l1", 1.0
  c.loss.box_weights = (10.0, 10.0, 5.0, 5.0)     # == dividing by variances (0.1, 0.1, 0.2, 0.2)
  c.eval.nms_iou = 0.5
  c.optim.base_lr, c.optim.base_batch = 1e-3, 16
  c.optim.warmup_steps, c.optim.warmup_factor = 500, 1.0 / 3.0
  return c


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("500", "800", "r101", "tfds") + BASELINES,
                            config="configs/aploss_voc.py")
  c = detector_defaults()
  use_voc0712_json(c.data)
  if "tfds" in variants:
    sibling_config(__file__, "retinanet_voc").use_voc_tfds(c.data)
  train = 800 if "800" in variants else 512
  test = 500 if "500" in variants else 800 if "800" in variants else 600
  # Training: the image fitted into train x train; evaluation keeps the aspect ratio
  # with the short side at `test` (padded to a square envelope, one static shape each).
  c.data.image_size, c.data.short_side, c.data.max_side = (train, train), train, train
  c.data.eval_short_side, c.data.eval_max_side = test, int(test * 1000 / 600)
  c.data.eval_image_size = (c.data.eval_max_side, c.data.eval_max_side)
  c.data.scale_jitter = (0.5, 1.5)
  c.data.num_workers = 16
  c.model.depth = 101 if "r101" in variants else 50
  c.model.pretrained = f"weights/resnet{c.model.depth}_imagenet.npz"
  c.model.dtype = "bfloat16"
  apply_aploss(c, variants)
  steps_per_epoch = VOC_TRAINVAL_0712 // 16
  c.train.batch_size, c.train.num_steps = 16, 160 * steps_per_epoch
  c.optim.decay_steps = (110 * steps_per_epoch, 140 * steps_per_epoch)
  c.train.eval_every, c.train.checkpoint_every = 20 * steps_per_epoch, 2_000
  c.eval.voc_metrics = True
  return c
