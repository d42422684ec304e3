"""ALWA paper Table 6: Mask R-CNN R50-FPN (':r101' for its R101 rows) with ALWA on the RPN,
COCO train2017 -> val2017, box and mask AP.

The recipe of configs/mask_rcnn_coco.py with the paper's optimisation: 8 images per step (2 GPUs x
4), lr 0.02, 12 epochs of train2017 (/10 after 8 and 11); the grid
(jaxdet.experiments.alwa_recipes):

    python -m jaxdet.main --config=configs/alwa_mask_rcnn_coco.py:l1,alwa1 --workdir=runs/t6_l1_alwa1
Variants: box-head loss ':l1' (default) | ':smooth_l1' | ':ciou' (| ':giou' | ':diou'); weighting
':baseline' | ':alwa1' | ':alwa2' (default); ':r101'; ':demo' (embedded benchmark with masks).
"""
from jaxdet.experiments.alwa_recipes import VARIANTS as GRID, apply_alwa_grid, paper_schedule
from jaxdet.experiments.defaults import parse_variants, sibling_config

FILE = "configs/alwa_mask_rcnn_coco.py"
PASSED_ON = ("r101", "demo")


def get_config(arg: str | None = None):
  variants = parse_variants(arg, GRID + PASSED_ON, config=FILE)
  c = sibling_config(__file__, "mask_rcnn_coco").get_config(
      ",".join(sorted(variants & set(PASSED_ON))))
  if "demo" not in variants:
    paper_schedule(c, images_per_epoch=117_266)    # train2017 images with annotations
  apply_alwa_grid(c, variants, config_file=FILE)
  return c
