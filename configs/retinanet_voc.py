"""RetinaNet R50-FPN on PASCAL VOC: 07+12 trainval -> 07 test (mAP@0.5).

Short side 600 / max 1000, focal loss, SGD 0.01 per 16 images, 18k steps
(/10 at 12k and 16k, about 17 epochs of 16.5k images).

    python -m jaxdet.main --config=configs/retinanet_voc.py --workdir=runs/retinanet_voc
Data: COCO-format JSON of VOC in data/voc/ (voc0712_trainval.json / voc07_test.json, difficult
objects as iscrowd=1, boxes [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1] of the XML's
1-based inclusive pixels: jaxdet.evaluation.voc scores them with the devkit's IoU), or ':tfds':
TFDS voc/2007 + voc/2012 prepared in --config.data.tfds_data_dir (`tfds build voc/2007` and
`tfds build voc/2012`, --file_format=array_record), trained on both years' train+validation
(VOC07+12 trainval, 16,551 images) and evaluated on voc/2007 test (VOC07 11-point mAP@0.5,
`mAP50_voc07`, difficult objects ignored) like the JSON files; TFDS' boxes are brought into
the same pixel frame (jaxdet.data.tfds_source).
"""
from jaxdet.experiments.defaults import detector_defaults, parse_variants, use_voc0712_json

VOC_TEST = "voc/2007"                           # test split: VOC07 test (4,952 images)
VOC0712_TRAINVAL = ("voc/2007", "voc/2012")      # train + validation of each: VOC07+12 trainval


def use_voc_tfds(data_cfg, trainval=VOC0712_TRAINVAL) -> None:
  """Points ``config.data`` at TFDS VOC: train on train+validation of the ``trainval`` datasets,
  evaluate on ``voc/2007`` test (shared by the VOC configs' ':tfds' variants)."""
  data_cfg.source, data_cfg.tfds_name = "tfds", VOC_TEST
  data_cfg.tfds_train_split = "+".join(f"{name}/{split}" for name in trainval
                                       for split in ("train", "validation"))
  data_cfg.tfds_val_split = "test"


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("tfds",), config="configs/retinanet_voc.py")
  c = detector_defaults()
  use_voc0712_json(c.data)
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
    use_voc_tfds(c.data)
  return c
