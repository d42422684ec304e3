"""SSD512 on COCO 2017 (Liu et al. 2016, Table 5: SSD512 26.8 AP on test-dev; Kong et al.,
"Consistent Optimization", Table 5: SSD512 VGG-16 28.9 -> 30.5 AP with consistent optimization).

The recipe of configs/ssd512_voc.py (VGG-16, SSD matching, softmax CE + OHEM 3:1, smooth L1 on
variance-scaled offsets, SSD augmentation, 512x512 warp) with COCO's smaller default boxes
(jaxdet.ops.ssd_anchors.SSD512_COCO: min sizes 20.48, 51.2, 133.12, 215.04, 296.96, 378.88,
460.8 px, the Caffe ratio rule with min_ratio 10, max_ratio 90) and SSD's COCO schedule: lr 1e-3
for 32 images, 240k steps, /10 at 160k and 200k (§3.4: "1e-3 for 160k, then 1e-4 and 1e-5 for
40k" each).

    python -m jaxdet.main --config=configs/ssd512_coco.py:consistent --workdir=runs/ssd512_coco_con

Variants: ':consistent' (consistent optimization: the refined default boxes decode(t0, A0) from
SSD's own regression get class and box terms, Eq. 1 / Eq. 2, mu_pos 0.6 / mu_neg 0.5, one more
box predictor per map, regression applied twice at test time), ':resnet50', ':tfds' (coco/2017
from TFDS), the loss variants of ssd512_voc.py (':focal', ':ap', ':auc', ':ohem'), and ':demo'
(the embedded benchmark on a CPU-sized SSD, as ssd512_voc.py:demo).
"""
from jaxdet.experiments.defaults import parse_variants, sibling_config, use_coco2017_json
from jaxdet.experiments.ssd import ssd_defaults
from jaxdet.ops import ssd_anchors


def get_config(arg: str | None = None):
  voc = sibling_config(__file__, "ssd512_voc")
  variants = parse_variants(arg, (*voc.VARIANTS, "consistent"), config="configs/ssd512_coco.py")
  c = ssd_defaults()
  use_coco2017_json(c.data)
  if "tfds" in variants:
    c.data.source, c.data.tfds_name = "tfds", "coco/2017"
  c.data.num_workers = 16
  a = ssd_anchors.SSD512_COCO
  c.ssd.min_sizes, c.ssd.max_sizes, c.ssd.steps = a.min_sizes, a.max_sizes, a.steps
  c.ssd.aspect_ratios = a.aspect_ratios
  c.model.pretrained, c.model.dtype = "weights/vgg16_imagenet.npz", "bfloat16"
  voc.apply_ssd_recipe(c, variants, config="configs/ssd512_coco.py")
  c.optim.base_lr, c.optim.base_batch, c.optim.weight_decay = 1e-3, 32, 5e-4
  c.optim.warmup_steps, c.optim.warmup_factor = 500, 1.0 / 3.0
  c.optim.decay_steps = (160_000, 200_000)
  c.train.batch_size, c.train.num_steps = 32, 240_000
  c.train.eval_every, c.train.checkpoint_every = 40_000, 2_000
  c.eval.batch_size = 32
  k = c.consistent
  k.enabled = "consistent" in variants
  k.alpha, k.positive_iou, k.negative_iou = 1.0, 0.6, 0.5
  k.variant, k.cls_stages, k.reg_stages = "consistent", 2, 2
  if "demo" in variants:
    voc.apply_demo(c)
  return c
