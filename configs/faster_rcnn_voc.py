"""Faster R-CNN R50-FPN on PASCAL VOC 07+12 trainval -> VOC07 test (detectron2's
``faster_rcnn_R_50_FPN`` VOC recipe: short side 480-800 / max 1333, lr 0.02 per 16 images, 18k
iterations, /10 at 12k and 16k), VOC07 mAP50 reported next to COCO AP.

    python -m jaxdet.main --config=configs/faster_rcnn_voc.py --workdir=runs/faster_rcnn_voc
    variants: ':c4', ':alwa', ':alwa_roi' (as configs/faster_rcnn_coco.py); ':tfds' reads TFDS
    voc/2007 + voc/2012 (07+12 trainval -> 07 test, as configs/retinanet_voc.py:tfds)
Data: VOC converted to COCO JSON (``data/voc/voc_0712_trainval.json`` with its images) or TFDS.
"""
from jaxdet.experiments.defaults import parse_variants, sibling_config, use_coco_json

VARIANTS = ("c4", "alwa", "alwa_roi", "tfds")


def get_config(arg: str | None = None):
  variants = parse_variants(arg, VARIANTS, config="configs/faster_rcnn_voc.py")
  coco = sibling_config(__file__, "faster_rcnn_coco")
  c = coco.get_config(",".join(sorted(variants - {"tfds"})) or None)
  use_coco_json(c.data, train_json="data/voc/voc_0712_trainval.json",
                train_images="data/voc/JPEGImages", val_json="data/voc/voc_2007_test.json",
                val_images="data/voc/JPEGImages")
  c.data.short_side, c.data.max_side = 800, 1333
  c.data.scale_jitter = (0.6, 1.0)          # short side 480-800
  c.eval.voc_metrics = True
  c.optim.decay_steps = (12_000, 16_000)
  c.train.num_steps, c.train.eval_every = 18_000, 6_000
  if "tfds" in variants:
    sibling_config(__file__, "retinanet_voc").use_voc_tfds(c.data)
  return c
