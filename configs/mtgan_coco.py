"""MTGAN on COCO (§4.2): ResNet-50 discriminator, Table 1 generator, on a trained baseline.

The paper's baseline is Faster R-CNN R50-C4; until jaxdet has it, any finished jaxdet COCO
detector works (RetinaNet R50-FPN below). Train it first, then MTGAN (mining runs first):

    python -m jaxdet.main --config=configs/retinanet_coco.py --workdir=runs/retinanet_coco
    python -m jaxdet.main --config=configs/mtgan_coco.py --workdir=runs/mtgan_coco
    python -m jaxdet.main --config=configs/mtgan_coco.py --workdir=runs/mtgan_coco --mode=accuracy \\
        --config.mtgan.compare_runs="('runs/mtgan_coco_sbu',)"      # Table 9

Schedule (§4.2): SGD lr 0.01 for D, /10 every 40k iterations, 80k iterations; Adam for G;
100 RoIs per test image. Variants (combine with ','):

* ``:sbu`` -- simple bilinear up-sampler instead of G (Table 4);
* ``:rcnn`` -- plain R-CNN: D without adversarial branch on 224 x 224 resized proposals (Table 3);
* ``:d_no_adv``, ``:d_no_reg`` -- D without the adversarial / regression branch (Tables 3, 5);
* ``:g_no_adv``, ``:g_no_cls``, ``:g_no_reg`` -- G trained without that loss term (Table 5);
* ``:ensemble`` -- MTGAN x baseline scores (Table 6); ``:r101`` -- ResNet-101 D.
"""
from jaxdet.experiments.defaults import parse_variants
from jaxdet.experiments.mtgan import apply_ablations, mtgan_defaults

VARIANTS = ("sbu", "rcnn", "d_no_adv", "d_no_reg", "g_no_adv", "g_no_cls", "g_no_reg",
            "ensemble", "r101")


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/mtgan_coco.py: unknown variant(s) {sorted(unknown)}; valid: "
                     f"{', '.join(VARIANTS)}.")
  c = mtgan_defaults()
  c.mtgan.baseline_workdir = "runs/retinanet_coco"
  c.mtgan.baseline_config = "configs/retinanet_coco.py"
  c.mtgan.pretrain_steps = 10_000
  c.discriminator.depth = 101 if "r101" in variants else 50
  c.discriminator.norm = "frozen_bn"
  c.discriminator.pretrained = f"weights/resnet{c.discriminator.depth}_imagenet.npz"
  c.train.batch_size, c.train.num_steps, c.train.eval_every = 64, 80_000, 20_000
  c.optim_D.base_lr, c.optim_D.base_batch = 0.01, 64
  c.optim_D.decay_steps = (40_000,)           # "/10 every 40k", 80k iterations in all
  c.optim_G.base_lr, c.optim_G.base_batch = 1e-4, 64
  c.mtgan.num_workers = 16
  apply_ablations(c, variants)
  return c
