"""MTGAN on the embedded benchmark, on top of the demo RetinaNet (CPU-sized).

Train the baseline first (or point at any finished demo run), then MTGAN:

    python -m jaxdet.main --config=configs/demo.py --workdir=runs/demo
    python -m jaxdet.main --config=configs/mtgan_demo.py --workdir=runs/mtgan_demo \\
        --config.mtgan.baseline_workdir=runs/demo

The first train command mines the crops (baseline RoIs + ground truth, 16 per image) into
<workdir>/crops. The generator and discriminator are small (G: 32 features, 2 residual blocks;
D: ResNet-18 at 1/4 width with GroupNorm), trained from scratch. Variants: ':sbu' (bilinear x4
instead of G, Table 3), ':quick' (a few steps, smoke test).
"""
from jaxdet.experiments.mtgan import mtgan_defaults
from jaxdet.experiments.defaults import parse_variants


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - {"sbu", "quick"}
  if unknown:
    raise ValueError(f"configs/mtgan_demo.py: unknown variant(s) {sorted(unknown)}; valid: sbu, quick.")
  c = mtgan_defaults()
  c.mtgan.baseline_workdir = "runs/demo"
  c.mtgan.mine_rois_per_image = 32
  c.mtgan.rois_per_image = 16
  c.mtgan.positive_fraction = 0.5
  c.mtgan.test_rois = 50
  c.mtgan.sr = "bilinear" if "sbu" in variants else "gan"
  c.generator.features, c.generator.up_features, c.generator.num_blocks = 32, 64, 2
  c.discriminator.depth, c.discriminator.width, c.discriminator.norm = 18, 16, "group_norm"
  c.mtgan.pretrain_steps = 150
  c.train.batch_size, c.train.num_steps = 32, 600
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 50, 100, 600
  c.optim_G.base_lr, c.optim_G.base_batch = 1e-3, 32
  c.optim_D.base_lr, c.optim_D.base_batch = 0.02, 32
  c.optim_D.decay_steps = (500,)
  c.eval.batch_size = 32
  if "quick" in variants:
    c.train.num_steps, c.train.eval_every, c.mtgan.pretrain_steps = 20, 20, 4
    c.train.log_every, c.train.checkpoint_every = 5, 10
    c.eval.max_images = 16
  return c
