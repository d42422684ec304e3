"""SSD512 on PASCAL VOC: 07+12 trainval -> 07 test (Liu et al. 2016, "SSD", Table 4: SSD512
79.8 mAP), with every one-stage method of jaxdet on the same network (jaxdet.experiments.ssd).

Default: SSD's own recipe -- VGG-16 (ImageNet, ``python -m jaxdet.tools.convert_weights
vgg16-397923af.pth --arch vgg16 --out weights/vgg16_imagenet.npz``), L2Norm(conv4_3) scale 20,
7 source maps with the SSD512 VOC default boxes (jaxdet.ops.ssd_anchors.SSD512_VOC), matching
"each ground truth's best default box, then IoU > 0.5" (§2.2), softmax CE with 3:1 hard
negatives + smooth L1 (beta 1) on offsets divided by the variances (0.1, 0.1, 0.2, 0.2), SSD's
augmentation (photometric, zoom-out to 4x, min-IoU crop, flip, 512x512 warp), SGD 0.9 / wd 5e-4,
lr 1e-3 for 32 images, 120k steps /10 at 80k and 100k (ssd.pytorch's VOC schedule, §3.1's
"1e-3 for 40k, then 1e-4 ... " at batch 32), test on the 512x512 warp, NMS 0.45, 200 boxes.

    python -m jaxdet.main --config=configs/ssd512_voc.py --workdir=runs/ssd512_voc
    python -m jaxdet.main --config=configs/ssd512_voc.py:demo,ap --workdir=runs/ssd_demo_ap

Variants (comma separated):
  ':ohem'     the default, named: softmax CE + OHEM 3:1 over C + 1 classes (SSD §2.2);
  ':focal'    sigmoid focal loss, gamma 1, alpha 0.25 (AP-loss Table 2's SSD baseline);
  ':ap'       AP-loss (Chen et al., Eq. 5, delta 1, interpolated, error-driven update);
  ':auc'      AUC-loss (Chen et al., Eq. 7);
  ':resnet50' ResNet-50 base (frozen BN, C3/C4/C5 + 4 extra layers; weights/resnet50_imagenet.npz);
  ':tfds'     TFDS voc/2007 + voc/2012 (as configs/retinanet_voc.py:tfds);
  ':demo'     the embedded benchmark (no download): 128x128 input, VGG-16 at 1/8 width with
              GroupNorm from scratch, 5 source maps (strides 8..128, sizes 12.8..128 px from the
              Caffe ratio rule), flip only (SSD's augmentation hurts a 1,200-step schedule, see
              apply_demo); about 10 min on a 2-core CPU.
All methods use the same matching, regression and schedule, so their rows compare; the
AP-loss paper's own SSD runs used 160 epochs (configs/aploss_voc.py's schedule). Add
--config.consistent.enabled=True or --config.alwa.enabled=True for consistent optimization
(configs/ssd512_coco.py:consistent) or ALWA on top of any variant.
"""
from jaxdet.experiments.defaults import parse_variants, sibling_config, use_voc0712_json
from jaxdet.experiments.ssd import ssd_defaults
from jaxdet.ops import ssd_anchors

LOSSES = {"ohem": "ce_ohem", "focal": "focal", "ap": "ap", "auc": "auc"}
VARIANTS = (*LOSSES, "resnet50", "tfds", "demo")


def apply_ssd_recipe(c, variants, *, config: str):
  """The loss variant and the ResNet-50 base on top of ``ssd_defaults()`` (which holds SSD's
  matching, coder, CE + OHEM loss and test settings); shared by the SSD configs."""
  chosen = [name for name in LOSSES if name in variants]
  if len(chosen) > 1:
    raise ValueError(f"{config}: pick one loss variant of {sorted(LOSSES)}; got {chosen}")
  c.loss.cls = LOSSES[chosen[0]] if chosen else "ce_ohem"
  c.loss.focal_gamma, c.loss.focal_alpha = 1.0, 0.25   # AP-loss Table 2's SSD focal baseline
  c.loss.ap_delta, c.loss.ap_interpolate = 1.0, True
  if "resnet50" in variants:
    c.ssd.backbone = "resnet"
    c.ssd.extras = c.ssd.extras[1:]                    # C5 is already stride 32
    c.model.depth, c.model.norm, c.model.frozen_stages = 50, "frozen_bn", 1
    c.model.pretrained = "weights/resnet50_imagenet.npz"


def apply_demo(c):
  """The embedded benchmark at 128x128 on a CPU-sized SSD (see the module docstring)."""
  c.data.source = "benchmark"
  c.data.image_size = (128, 128)
  c.data.max_boxes = 16
  c.data.num_workers = 2
  c.model.pretrained, c.model.dtype = "", "float32"
  c.ssd.vgg_width, c.ssd.group_norm = 0.125, True
  # SSD's augmentation pays off over long schedules (SSD §3.6: +8.8 mAP at 120k steps); in 1,200
  # steps on these 128-px images it costs: at step 600 flip-only reached 0.172 AP / 0.405 AP50,
  # photometric + min-IoU crop + flip 0.067 / 0.182, and with the 4x zoom-out (10-px objects
  # shrink to 2.5 px) 0.003 / 0.014 at step 300. ':demo' trains with flip + warp only;
  # --config.ssd.augment=True brings the pipeline back.
  c.ssd.augment = False
  c.ssd.extras = c.ssd.extras[:3] if c.ssd.backbone == "vgg16" else c.ssd.extras[:2]
  c.ssd.steps = (8, 16, 32, 64, 128)
  c.ssd.min_sizes, c.ssd.max_sizes = ssd_anchors.sizes_from_ratio_rule(128, 5, 20, 80, (10, 20))
  c.ssd.aspect_ratios = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
  if c.ssd.backbone == "resnet":
    c.model.depth, c.model.width, c.model.norm, c.model.frozen_stages = 18, 16, "group_norm", -1
  c.optim.base_lr, c.optim.base_batch, c.optim.weight_decay = 0.005, 16, 1e-4
  c.optim.warmup_steps, c.optim.decay_steps = 200, (900, 1_100)
  c.train.batch_size, c.train.num_steps = 16, 1_200
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 50, 200, 600
  c.eval.batch_size, c.eval.voc_metrics = 32, False


def get_config(arg: str | None = None):
  variants = parse_variants(arg, VARIANTS, config="configs/ssd512_voc.py")
  c = ssd_defaults()
  use_voc0712_json(c.data)
  if "tfds" in variants:
    sibling_config(__file__, "retinanet_voc").use_voc_tfds(c.data)
  c.data.num_workers = 16
  c.model.pretrained, c.model.dtype = "weights/vgg16_imagenet.npz", "bfloat16"
  apply_ssd_recipe(c, variants, config="configs/ssd512_voc.py")
  c.optim.base_lr, c.optim.base_batch, c.optim.weight_decay = 1e-3, 32, 5e-4
  c.optim.warmup_steps, c.optim.warmup_factor = 500, 1.0 / 3.0
  c.optim.decay_steps = (80_000, 100_000)
  c.train.batch_size, c.train.num_steps = 32, 120_000
  c.train.eval_every, c.train.checkpoint_every = 20_000, 2_000
  c.eval.batch_size, c.eval.voc_metrics = 32, True
  if "demo" in variants:
    apply_demo(c)
  return c
