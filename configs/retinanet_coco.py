"""RetinaNet R50-FPN on COCO 2017 (Lin et al. 2017; Detectron 1x schedule).

Short side 800 / max 1333, focal loss (alpha 0.25, gamma 2), SGD momentum 0.9,
wd 1e-4, lr 0.01 per 16 images (linearly scaled with config.train.batch_size),
500-step warm-up, 90k iterations, /10 at 60k and 80k.

    python -m jaxdet.main --config=configs/retinanet_coco.py --workdir=runs/retinanet_coco
    variants: ':r101', ':tfds' (read coco/2017 prepared with `tfds build coco/2017`)
Expects config.data.train_json / train_images / val_json / val_images (COCO
layout) unless the tfds variant is used.
"""
from jaxdet.experiments.defaults import detector_defaults, parse_variants, use_coco2017_json


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("r101", "tfds"), config="configs/retinanet_coco.py")
  c = detector_defaults()
  use_coco2017_json(c.data)
  # Aspect-ratio buckets: landscape batches padded to 800 x 1344, portrait ones to 1344 x 800
  # (one compile each), not every batch to the 1344 x 1344 square that holds both (68 % more
  # pixels than the images have).
  c.data.image_size, c.data.aspect_ratio_grouping = (800, 1344), True
  c.data.short_side, c.data.max_side = 800, 1333
  c.data.num_workers = 16
  c.model.depth = 101 if "r101" in variants else 50
  c.model.norm, c.model.frozen_stages = "frozen_bn", 1
  c.model.pretrained = "weights/resnet%d_imagenet.npz" % c.model.depth
  c.model.dtype = "bfloat16"
  c.loss.cls, c.loss.reg = "focal", "smooth_l1"
  c.loss.smooth_l1_beta = 0.11
  c.optim.base_lr, c.optim.base_batch = 0.01, 16
  c.optim.warmup_steps, c.optim.warmup_factor = 500, 1.0 / 3.0
  c.optim.decay_steps = (60_000, 80_000)
  c.train.batch_size, c.train.num_steps = 16, 90_000
  c.train.eval_every, c.train.checkpoint_every = 10_000, 2_000
  c.eval.batch_size = 16
  if "tfds" in variants:
    c.data.source, c.data.tfds_name = "tfds", "coco/2017"
  return c
