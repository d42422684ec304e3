"""Mask R-CNN R50-FPN on COCO 2017 (detectron2 ``mask_rcnn_R_50_FPN_1x``: 38.6 box AP, 35.2 mask
AP): the Faster R-CNN FPN recipe of configs/faster_rcnn_coco.py plus the mask branch (14x14
RoIAlign, 4 convs, deconv to 28x28 class-specific masks, Mask R-CNN §3); box and mask AP.

    python -m jaxdet.main --config=configs/mask_rcnn_coco.py --workdir=runs/mask_rcnn_coco
    variants: ':r101', ':alwa' (ALWA_2 on the RPN losses), ':alwa_roi' (and on the box head),
      ':demo' (the embedded benchmark and its instance masks, CPU-sized)
Needs COCO's instances_*.json (they carry the segmentations); TFDS coco has no masks.
"""
from jaxdet.experiments.defaults import parse_variants, sibling_config
from jaxdet.experiments.mask_rcnn import mask_rcnn_defaults

VARIANTS = ("r101", "alwa", "alwa_roi", "demo")


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/mask_rcnn_coco.py: unknown variant(s) {sorted(unknown)}; valid: "
                     f"{', '.join(VARIANTS)}.")
  c = sibling_config(__file__, "faster_rcnn_coco").apply_recipe(mask_rcnn_defaults(), variants)
  if "demo" in variants:   # narrow: XLA CPU convs at 64 wide cost 3.5 s a step; objects <= 56 px
    c.model.mask_dim, c.data.mask_size = 16, 56
  return c
