"""RetinaNet R50-FPN on PASCAL VOC: 07+12 trainval -> 07 test (mAP@0.5).

Short side 600 / max 1000, focal loss, SGD 0.01 per 16 images, 18k steps
(/10 at 12k and 16k, about 17 epochs of 16.5k images).

    python -m jaxdet.main --config=configs/retinanet_voc.py --workdir=runs/retinanet_voc
Data: COCO-format JSON of VOC (e.g. the widely used voc0712_trainval.json /
voc07_test.json conversions) in data/voc/, or ':tfds' for voc/2007 via TFDS
(trains on voc/2007 train+validation; add voc/2012 by converting to COCO JSON).
"""
from jaxdet.experiments.defaults import detector_defaults, parse_variants, use_coco_json


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("tfds",), config="configs/retinanet_voc.py")
  c = detector_defaults()
  use_coco_json(c.data, train_json="data/voc/annotations/voc0712_trainval.json",
                train_images="data/voc/images",
                val_json="data/voc/annotations/voc07_test.json",
                val_images="data/voc/images")
  c.data.image_size = (1024, 1024)
  c.data.short_side, c.data.max_side = 600, 1000
  c.data.num_workers = 16
  c.model.depth, c.model.pretrained = 50, "weights/resnet50_imagenet.npz"
  c.model.dtype = "bfloat16"
  c.optim.base_lr, c.optim.base_batch = 0.01, 16
  c.optim.decay_steps = (12_000, 16_000)
  c.train.batch_size, c.train.num_steps = 16, 18_000
  c.train.eval_every = 6_000
  c.eval.voc_metrics = True
  if "tfds" in variants:
    c.data.source, c.data.tfds_name = "tfds", "voc/2007"
    c.data.tfds_train_split, c.data.tfds_val_split = "train+validation", "test"
  return c
