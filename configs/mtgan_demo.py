"""MTGAN on the embedded benchmark, on top of the demo RetinaNet (CPU-sized).

Train the baseline first (or point at any finished demo run), then MTGAN and, on the same
schedule, the SBU ablation; then Table 9 for the three:

    python -m jaxdet.main --config=configs/demo.py --workdir=runs/demo
    python -m jaxdet.main --config=configs/mtgan_demo.py --workdir=runs/mtgan_demo
    python -m jaxdet.main --config=configs/mtgan_demo.py:sbu --workdir=runs/mtgan_demo_sbu \\
        --config.mtgan.crops_dir=runs/mtgan_demo/crops
    python -m jaxdet.main --config=configs/mtgan_demo.py --workdir=runs/mtgan_demo \\
        --mode=accuracy --config.mtgan.compare_runs="('runs/mtgan_demo_sbu',)"

The first train command mines the crops (baseline RoIs + ground truth, 16 per image) into
<workdir>/crops. The generator and discriminator are small (G: 32 features, 2 residual blocks;
D: ResNet-18 at 1/4 width with GroupNorm), trained from scratch. Variants:

* ``:face`` -- the benchmark's small faces with the WIDER FACE evaluation, on the face baseline
  ``python -m jaxdet.main --config=configs/retinanet_widerface.py:demo --workdir=runs/demo_face``;
* ``:quick`` -- a few steps (smoke test);
* the ablations of ``configs/mtgan_coco.py`` (``:sbu``, ``:rcnn``, ``:d_no_adv``, ...); ``:rcnn``
  crops at 224 x 224 and cannot share the 64 x 64 crops of the other runs.
"""
from jaxdet.experiments.defaults import parse_variants
from jaxdet.experiments.mtgan import ABLATIONS, apply_ablations, mtgan_defaults

VARIANTS = ("face", "quick") + ABLATIONS


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/mtgan_demo.py: unknown variant(s) {sorted(unknown)}; valid: "
                     f"{', '.join(VARIANTS)}.")
  c = mtgan_defaults()
  c.mtgan.baseline_workdir, c.mtgan.baseline_config = "runs/demo", "configs/demo.py"
  c.mtgan.mine_rois_per_image = 32
  c.mtgan.rois_per_image = 16
  c.mtgan.positive_fraction = 0.5
  c.mtgan.test_rois = 50
  c.generator.features, c.generator.up_features, c.generator.num_blocks = 32, 64, 2
  c.discriminator.depth, c.discriminator.width, c.discriminator.norm = 18, 16, "group_norm"
  c.mtgan.pretrain_steps = 150
  c.train.batch_size, c.train.num_steps = 32, 600
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 50, 100, 600
  c.optim_G.base_lr, c.optim_G.base_batch = 1e-3, 32
  c.optim_D.base_lr, c.optim_D.base_batch = 0.02, 32
  c.optim_D.decay_steps = (500,)
  c.eval.batch_size = 32
  if "face" in variants:
    c.mtgan.baseline_workdir = "runs/demo_face"
    c.mtgan.baseline_config = "configs/retinanet_widerface.py:demo"
    c.eval.protocol = "wider_face"
  apply_ablations(c, variants)
  if "quick" in variants:
    c.train.num_steps, c.train.eval_every, c.mtgan.pretrain_steps = 20, 20, 4
    c.train.log_every, c.train.checkpoint_every = 5, 10
    c.eval.max_images = 16
  return c
