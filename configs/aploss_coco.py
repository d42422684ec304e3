"""AP-loss RetinaNet on COCO (Chen et al., AP-loss, Sec. 4.4): ResNet-101, trainval35k -> minival.

AP-loss500 (default; 512x512 training, test short side 500) or ':800' (800x800 training,
short side 800); ':r50' for ResNet-50. 100 epochs of trainval35k (~115k images) at 16
images per step, lr 1e-3 per 16 images, /10 at 60 and 80 epochs, warm-up from 1/3 over
500 steps; recipe details in configs/aploss_voc.py (`apply_aploss`).

    python -m jaxdet.main --config=configs/aploss_coco.py --workdir=runs/aploss_coco
Paper: COCO test-dev AP-loss500 37.4, AP-loss800 40.8 (R101); minival 35.0 (R50, 512).
"""
from jaxdet.experiments.defaults import detector_defaults, sibling_config, parse_variants, use_coco_json

COCO_TRAINVAL35K = 117_266


def get_config(arg: str | None = None):
  baselines = sibling_config(__file__, "aploss_voc").BASELINES
  variants = parse_variants(arg, ("500", "800", "r50", "tfds") + baselines,
                            config="configs/aploss_coco.py")
  c = detector_defaults()
  use_coco_json(c.data, train_json="data/coco/annotations/instances_trainval35k.json",
                train_images="data/coco/images",
                val_json="data/coco/annotations/instances_minival2014.json",
                val_images="data/coco/images")
  if "tfds" in variants:   # coco/2017 train / validation == trainval35k / minival images
    c.data.source, c.data.tfds_name = "tfds", "coco/2017"
  train = 800 if "800" in variants else 512
  test = 800 if "800" in variants else 500
  # Training: the image fitted into train x train; evaluation keeps the aspect ratio
  # with the short side at `test` (padded to a square envelope, one static shape each; not
  # aspect-ratio grouping, which would also group the square training batches by orientation).
  c.data.image_size, c.data.short_side, c.data.max_side = (train, train), train, train
  c.data.eval_short_side, c.data.eval_max_side = test, int(test * 1333 / 800)
  c.data.eval_image_size = (c.data.eval_max_side, c.data.eval_max_side)
  c.data.scale_jitter = (0.5, 1.5)
  c.data.num_workers = 16
  c.model.depth = 50 if "r50" in variants else 101
  c.model.pretrained = f"weights/resnet{c.model.depth}_imagenet.npz"
  c.model.dtype = "bfloat16"
  sibling_config(__file__, "aploss_voc").apply_aploss(c, variants)
  steps_per_epoch = COCO_TRAINVAL35K // 16
  c.train.batch_size, c.train.num_steps = 16, 100 * steps_per_epoch
  c.optim.decay_steps = (60 * steps_per_epoch, 80 * steps_per_epoch)
  c.train.eval_every, c.train.checkpoint_every = 10 * steps_per_epoch, 5_000
  return c
