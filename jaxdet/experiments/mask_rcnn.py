"""Mask R-CNN (He et al., ICCV 2017) as an experiment: Faster R-CNN FPN plus a mask branch.

On top of ``jaxdet.experiments.faster_rcnn`` (RPN, proposals, RoI sampling, box head, ALWA):

* **Mask targets** (§3 "Mask Representation"; §3.1 "Training"): the mask loss is "defined only on
  positive RoIs"; the target of an RoI is "the intersection between an RoI and its associated
  ground-truth mask", ``m x m`` = 28. Ground truth reaches the device as box-frame masks
  (``config.data.mask_size`` cells per side, ``jaxdet.data.instance_masks``) and
  ``jaxdet.ops.mask_targets.mask_targets`` RoIAligns them over each fg RoI (>= 0.5). Static
  shapes: the fg RoIs are the first ``int(roi_head.num_samples * positive_fraction)`` slots of
  ``jaxdet.ops.roi_sampling`` (fg first), the mask head runs on exactly those slots and the
  padding / bg ones are masked out of the loss.
* **L_mask** (§3 Eq. 1 and "Mask Representation"): per-pixel sigmoid, average binary
  cross-entropy of the k-th mask only (k = the RoI's gt class), averaged over fg RoIs and pixels
  (``jaxdet.ops.mask_targets.mask_loss``), weight ``loss.mask_weight``; L = L_cls + L_box +
  L_mask (+ the RPN's losses, which ALWA weights when enabled, as in the ALWA authors' code).
* **Inference** (§3.1 "Inference"): "the mask branch is then applied to the highest scoring 100
  detection boxes"; the k-th mask (k = predicted class) goes through a sigmoid; on the host it is
  pasted into the original image and binarised at 0.5 (``jaxdet.evaluation.segm.paste_masks``)
  and encoded as COCO RLE, so evaluation reports mask AP (``mask_AP`` ...) next to box AP.

Only the FPN design has a mask head here (detectron2's C4 mask head shares res5 with the box head).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdet.experiments.faster_rcnn import FasterRCNNExperiment, faster_rcnn_defaults
from jaxdet.ops import mask_targets as mask_ops
from jaxdet.train.config_check import ConfigError


class InstanceDetections(NamedTuple):
  """``jaxdet.ops.postprocess.Detections`` plus the mask of each detection."""
  boxes: jax.Array      # [B, D, 4] resized-image pixels
  scores: jax.Array     # [B, D]
  classes: jax.Array    # [B, D]
  num_valid: jax.Array  # [B]
  masks: jax.Array      # [B, D, S, S] float32 probabilities of the detection's class


def mask_rcnn_defaults():
  """Every key of ``experiment='mask_rcnn'``: Faster R-CNN's plus the mask branch's
  (detectron2 ``mask_rcnn_R_50_FPN_1x``)."""
  c = faster_rcnn_defaults()
  c.experiment = "mask_rcnn"
  c.model.mask_pooler_resolution = 14   # RoIAlign of the mask head; the output is twice this
  c.model.mask_convs = 4                # 3x3 convs before the deconv (Fig. 4 right)
  c.model.mask_dim = 256
  c.loss.mask_weight = 1.0
  c.data.mask_size = 112                # box-frame gt mask cells per side (host -> device)
  return c


class MaskRCNNExperiment(FasterRCNNExperiment):
  name = "mask_rcnn"
  progress_metrics = ("loss", "rpn_cls", "rpn_reg", "cls_loss", "reg_loss", "mask_loss", "lr")

  def __init__(self, config, mesh, **kwargs):
    if config.model.design != "fpn":
      raise ConfigError(f"config.model.design={config.model.design!r}: Mask R-CNN is built on "
                        "the FPN design here; use --config.model.design=fpn.")
    if config.data.mask_size < 8:
      raise ConfigError(f"config.data.mask_size={config.data.mask_size}: the box-frame gt masks "
                        "need at least 8 cells per side (112 by default).")
    super().__init__(config, mesh, **kwargs)

  @classmethod
  def config_schema(cls):
    return mask_rcnn_defaults()

  def model_kwargs(self) -> dict:
    m = self.config.model
    return dict(super().model_kwargs(), mask=True,
                mask_pooler_resolution=m.mask_pooler_resolution, mask_convs=m.mask_convs,
                mask_dim=m.mask_dim)

  @property
  def mask_resolution(self) -> int:
    return 2 * int(self.config.model.mask_pooler_resolution)

  def check_inputs(self, mode: str, workdir: str) -> None:
    """Besides the detector checks: the train split (train) and the val split (train, eval:
    mask AP) must have instance masks, before any step runs."""
    super().check_inputs(mode, workdir)
    splits = {"train": self.train_source} if mode == "train" else {}
    if mode in ("train", "eval"):
      splits["val"] = self.val_source
    for split, source in splits.items():
      if not getattr(source, "has_masks", False):
        missing = getattr(source, "masks_missing", None)
        count = f" ({missing} annotations without a usable 'segmentation')" if missing else ""
        raise ConfigError(
            f"config.data.source={self.config.data.source!r}: its {split} split has no instance "
            f"masks{count}, which Mask R-CNN trains on and scores (mask AP). Use a COCO-format "
            "JSON whose annotations all have a 'segmentation' (config.data.source='coco_json') "
            "or the embedded benchmark (source='benchmark').")

  # ---- training ---------------------------------------------------------------------------
  def extra_head_losses(self, mdl, feats, sampled, batch) -> dict:
    h = self.config.roi_head
    f = max(int(h.num_samples * h.positive_fraction), 1)   # fg slots come first
    rois = sampled.boxes[:, :f]
    fg = sampled.is_fg[:, :f] & sampled.valid[:, :f]
    logits = mdl.mask_head(feats, rois, train=True)
    targets = mask_ops.mask_targets(batch["masks"], batch["mask_boxes"], rois,
                                    sampled.matched_gt_index[:, :f], self.mask_resolution)
    return {"mask_loss": mask_ops.mask_loss(logits, sampled.classes[:, :f], targets, fg)}

  def extra_loss_total(self, terms):
    return self.config.loss.mask_weight * terms["mask_loss"]

  # ---- inference --------------------------------------------------------------------------
  def extra_predictions(self, mdl, feats, dets):
    logits = mdl.mask_head(feats, dets.boxes, train=False)            # [B, D, S, S, K]
    cls = jnp.clip(dets.classes, 0, self.num_classes - 1)
    picked = jnp.take_along_axis(logits, cls[:, :, None, None, None], axis=-1)[..., 0]
    return InstanceDetections(*dets, masks=jax.nn.sigmoid(picked))
