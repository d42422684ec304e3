"""SSD as an experiment: RetinaNet's one-stage recipe on SSD's network, default boxes and input.

Everything that makes a one-stage *method* is shared with ``RetinaNetExperiment``: the
classification loss (``config.loss.cls``: focal / AP / AUC / CE + OHEM), the box regression
loss, consistent optimization (``config.consistent``: the refined default boxes come from SSD's
own regression, ``jaxdet.models.ssd`` adds the stage-2 box predictor), ALWA weights, gradient
accumulation, inference and the eval / predict / robustness modes. This class changes only

* the network: ``jaxdet.models.ssd.SSD`` (VGG-16 + L2Norm or ResNet, extra layers, per-map 3x3
  predictors), configured by ``config.ssd``;
* the default boxes: ``jaxdet.ops.ssd_anchors.ssd_anchors`` (SSD §2.2) from
  ``config.ssd.min_sizes / max_sizes / steps / aspect_ratios``, encoded with SSD's variances
  (``config.loss.box_weights = (10, 10, 5, 5)``);
* the input: SSD's augmentation in training (``config.ssd.augment``,
  ``jaxdet.data.ssd_augment``) and a fixed-size warp to ``data.image_size`` at test time, as
  SSD512 is run (§3: "input size 512 x 512"; boxes are mapped back per axis).

Matching (SSD §2.2 "Matching strategy": each ground truth's best default box, then every box
with IoU > 0.5) is the shared matcher with ``positive_iou = negative_iou = 0.5``,
``allow_low_quality`` and ``low_quality_rematch``. ``ssd_defaults()`` holds SSD's recipe (this
matching, the variances, softmax CE + 3:1 OHEM, smooth L1 with beta 1, the test settings); the
configs (``configs/ssd512_voc.py``, ``ssd512_coco.py``) choose data, loss variant and schedule.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from jaxdet.experiments.defaults import detector_defaults
from jaxdet.experiments.detection import DTYPES
from jaxdet.experiments.retinanet import RetinaNetExperiment
from jaxdet.models.ssd import BACKBONES, SSD, SSD512_EXTRAS
from jaxdet.ops import ssd_anchors
from jaxdet.train.config_check import ConfigError


def ssd_defaults():
  """``detector_defaults()`` plus the ``config.ssd`` block (SSD512 VOC layout)."""
  c = detector_defaults()
  c.experiment = "ssd"
  s = c.ssd = ml_collections.ConfigDict()
  s.backbone = "vgg16"             # vgg16 (SSD §3) | resnet (model.depth / width / norm /
                                   # frozen_stages; source maps C3, C4, C5 + extras)
  s.vgg_width = 1.0                # channel multiplier of VGG-16 and the extra layers (1: the
                                   # real network; ImageNet weights need 1)
  s.group_norm = False             # GroupNorm after every base / extra conv (from scratch only)
  s.l2norm_scale = 20.0            # initial conv4_3 L2Norm scale (§3.1, ParseNet)
  s.extras = SSD512_EXTRAS         # (1x1 channels, out, kernel, stride, pad) per extra layer:
                                   # SSD512's conv8 .. conv12 (VGG); one fewer for ResNet
  s.min_sizes = ssd_anchors.SSD512_VOC.min_sizes   # per source map, px (s_k of Eq. 4)
  s.max_sizes = ssd_anchors.SSD512_VOC.max_sizes   # per map: the extra sqrt(s_k s_k+1) box
  s.steps = ssd_anchors.SSD512_VOC.steps           # stride of each map; map k is ceil(image / step)
  s.aspect_ratios = ssd_anchors.SSD512_VOC.aspect_ratios  # extra ratios (w/h) per map, with 1/r
  s.clip = False                   # default boxes crossing the border kept as they are (the
                                   # released Caffe SSD512 models: PriorBox clip: false) | True:
                                   # corners clamped to the image | 'cxcywh': ssd.pytorch's clamp
  s.augment = True                 # SSD's train augmentation (photometric, zoom-out, min-IoU
                                   # crop, flip (data.hflip), resize); False: flip + warp only
  s.zoom_out_max_ratio = 4.0       # zoom-out canvas up to this x the image side (§3.6: 16x the
                                   # area); <= 1: no zoom-out (for images of tiny objects)
  # SSD's matching, box coder and loss (§2.2): each GT's best default box, then IoU > 0.5
  # positive, the rest negative; offsets divided by the variances (0.1, 0.1, 0.2, 0.2);
  # softmax CE with 3:1 hard negatives + smooth L1 (beta 1), alpha = 1.
  l = c.loss
  l.cls, l.ohem_neg_pos_ratio = "ce_ohem", 3
  l.positive_iou = l.negative_iou = 0.5
  l.allow_low_quality = l.low_quality_rematch = True
  l.reg, l.smooth_l1_beta = "smooth_l1", 1.0
  l.box_weights = ssd_anchors.SSD_BOX_WEIGHTS
  l.cls_weight = l.reg_weight = 1.0
  # ssd.pytorch's test settings: score > 0.01, NMS 0.45, 200 boxes per image.
  c.eval.score_threshold, c.eval.nms_iou, c.eval.max_detections = 0.01, 0.45, 200
  c.data.image_size = (512, 512)
  return c


class SSDExperiment(RetinaNetExperiment):
  name = "ssd"

  @classmethod
  def config_schema(cls):
    return ssd_defaults()

  def __init__(self, config, mesh, **kwargs):
    s = config.ssd
    if s.backbone not in BACKBONES:
      raise ConfigError(f"config.ssd.backbone={s.backbone!r}: use one of {BACKBONES}.")
    if config.consistent.enabled and config.consistent.variant != "consistent":
      raise ConfigError(
          f"config.consistent.variant={config.consistent.variant!r}: SSD implements the "
          "'consistent' variant (Fig. 4(d): one more box predictor per map, the class "
          "predictor shared); the cascade variants need RetinaNet's subnets.")
    if s.backbone == "vgg16" and config.model.remat not in ("", "none"):
      raise ConfigError(f"config.model.remat={config.model.remat!r} rematerialises ResNet parts; "
                        "the VGG-16 base has none. Use --config.model.remat=none (or "
                        "config.ssd.backbone='resnet').")
    if any(len(e) != 5 for e in s.extras):
      raise ConfigError(f"config.ssd.extras={s.extras!r}: each extra layer is (1x1 channels, "
                        "out channels, kernel, stride, pad).")
    for key in ("min_sizes", "max_sizes", "aspect_ratios"):
      if len(s[key]) != len(s.steps):
        raise ConfigError(f"config.ssd.{key} has {len(s[key])} entries but config.ssd.steps has "
                          f"{len(s.steps)}: give one per source map.")
    super().__init__(config, mesh, **kwargs)

  def anchors_per_location(self):
    """K of every source map (a tuple: SSD's maps differ)."""
    return ssd_anchors.num_anchors_per_location(self.config.ssd.aspect_ratios)

  def anchors_for(self, size):
    s = self.config.ssd
    anchors = ssd_anchors.ssd_anchors(size, s.min_sizes, s.max_sizes, s.steps, s.aspect_ratios,
                                      clip=s.clip)
    return anchors, ssd_anchors.level_slices(size, s.steps, s.aspect_ratios)

  def _make_model(self):
    c = self.config
    m, s, k = c.model, c.ssd, c.consistent
    stages = (1, 1)
    if k.enabled:
      from jaxdet.losses.consistent import check_config
      check_config(k)
      stages = (int(k.cls_stages), int(k.reg_stages))
    return SSD(num_classes=self.head_classes(), anchors_per_location=self.num_per_loc,
               steps=tuple(float(v) for v in s.steps), backbone=s.backbone,
               extras=tuple(tuple(int(v) for v in e) for e in s.extras),
               vgg_width=float(s.vgg_width), group_norm=bool(s.group_norm), depth=m.depth,
               width=m.width, norm=m.norm, frozen_stages=m.frozen_stages,
               l2norm_scale=float(s.l2norm_scale), softmax=c.loss.cls == "ce_ohem",
               prior_prob=m.prior_prob, cls_stages=stages[0], reg_stages=stages[1],
               dtype=DTYPES[m.dtype])

  def loader_options(self, train: bool) -> dict:
    d = self.config.data
    opts = {"warp": True}
    if train and self.config.ssd.augment:
      ratio = float(self.config.ssd.zoom_out_max_ratio)
      opts.update(augment="ssd", fill_mean=tuple(np.asarray(d.pixel_mean, np.float64) * 255.0),
                  augment_options={"zoom_out": ratio > 1.0, "max_ratio": max(ratio, 1.0),
                                   "flip": bool(d.hflip)})
    return opts
