"""ALWA paper Table 3: Faster R-CNN R50-FPN with ALWA on the RPN, VOC12 trainval -> VOC07 test.

mmdetection 1x as the paper ran it: 8 images per step (2 GPUs x 4), lr 0.02, 12 epochs (/10
after 8 and 11), SGD 0.9, wd 1e-4, VOC resize (1000, 600); VOC07 mAP50 next to COCO AP. The grid (jaxdet.experiments.alwa_recipes):

    python -m jaxdet.main --config=configs/alwa_faster_rcnn_voc.py:l1,alwa1 --workdir=runs/t3_l1_alwa1
Variants: box-head loss ':l1' (default) | ':smooth_l1' | ':ciou' (| ':giou' | ':diou'); weighting
':baseline' (1:1) | ':alwa1' | ':alwa2' (default); ':demo' the same grid on the embedded
benchmark (CPU-sized Faster R-CNN of configs/faster_rcnn_coco.py:demo).
Data: VOC as COCO JSON (data/voc/annotations/voc12_trainval.json, voc07_test.json, images in
data/voc/images), as configs/alwa_voc.py; ':tfds' reads TFDS voc/2012 train+validation -> voc/2007
test instead.
"""
from jaxdet.experiments.alwa_recipes import VARIANTS as GRID, apply_alwa_grid, paper_schedule
from jaxdet.experiments.defaults import parse_variants, sibling_config, use_coco_json

FILE = "configs/alwa_faster_rcnn_voc.py"


def get_config(arg: str | None = None):
  variants = parse_variants(arg, GRID + ("demo", "tfds"), config=FILE)
  if {"demo", "tfds"} <= variants:
    raise ValueError(f"{FILE}: got {arg!r}; ':demo' (embedded benchmark) and ':tfds' (TFDS VOC) "
                     "name different data, use one of them.")
  c = sibling_config(__file__, "faster_rcnn_coco").get_config("demo" if "demo" in variants else "")
  if "demo" not in variants:
    use_coco_json(c.data, train_json="data/voc/annotations/voc12_trainval.json",
                  train_images="data/voc/images",
                  val_json="data/voc/annotations/voc07_test.json", val_images="data/voc/images")
    c.data.image_size = (608, 1024)   # landscape bucket (aspect-ratio grouping, as COCO)
    c.data.short_side, c.data.max_side = 600, 1000
    paper_schedule(c, images_per_epoch=11_540)   # VOC12 trainval
    if "tfds" in variants:
      sibling_config(__file__, "retinanet_voc").use_voc_tfds(c.data, trainval=("voc/2012",))
  c.eval.voc_metrics = True
  apply_alwa_grid(c, variants, config_file=FILE)
  return c
