"""Stage 1 of the low-resolution landmark paper: the high-to-low GAN (G1, D1), §3.1.

    python -m jaxdet.main --config=configs/high_to_low.py --workdir=runs/high_to_low
    python -m jaxdet.main --config=configs/high_to_low.py --workdir=runs/high_to_low --mode=generate

The paper's data (§3): HR = AFLW (19 points) + 300W (68 points) + WIDER FACE faces > 100 px; real
LR = WIDER FACE faces of 20-40 px. Set the dataset paths (``--config.data.aflw_mat=...
--config.data.aflw_images=... --config.data.w300_root=... --config.data.wider_face_root=...``).
``--mode=generate`` writes the generated-LR AFLW train / test sets (19 points) into
``<workdir>/generated``, which ``configs/lr_landmarks.py`` reads. Variants:

* ``:300w`` -- generate the 300W sets instead (68 points: train, common, challenging, full);
* ``:tinyface`` -- real LR = TinyFace training faces (Table 2's settings L4 / I3:
  ``--config.data.real_lr="('folder:PATH/TinyFace/Training_Set',)"``);
* ``:demo`` -- the embedded face benchmark (no download), CPU-sized networks and schedule; G1
  learns the degradation as a residual on F(HR) (``generator.residual``: in 300 steps the paper's
  G1, which decodes the whole face from a 4 x 4 bottleneck, does not yet keep the face);
* ``:quick`` -- a few steps (smoke test; with ``:demo``).
"""
from jaxdet.experiments.defaults import parse_variants
from jaxdet.experiments.high_to_low import high_to_low_defaults

VARIANTS = ("300w", "tinyface", "demo", "quick")


def get_config(arg: str | None = None):
  variants = parse_variants(arg, VARIANTS, config="configs/high_to_low.py")
  if {"demo", "300w"} <= variants:
    raise ValueError("configs/high_to_low.py: ':demo' is the embedded benchmark (19 points), ':300w' the 68-point "
                     "300W files: pick one.")
  c = high_to_low_defaults()
  if "300w" in variants:
    c.generate.splits = ("300w_train", "300w_common", "300w_challenging", "300w_full")
    c.generate.sources = ("300w:train", "300w:common", "300w:challenging", "300w:full")
    c.generate.scheme = "68"
  if "tinyface" in variants:
    c.data.real_lr = ("folder:data/tinyface/Training_Set",)
    c.data.real_lr_val = ("folder:data/tinyface/Testing_Set/Probe",)
  if "demo" in variants:
    c.data.hr, c.data.hr_val = ("benchmark:hr_train",), ("benchmark:hr_test",)
    c.data.real_lr, c.data.real_lr_val = ("benchmark:real_lr_train",), ("benchmark:real_lr_test",)
    c.generate.sources = ("benchmark:hr_train", "benchmark:hr_test")
    c.generate.scheme = "19"
    c.generator.features, c.generator.max_features = 8, 32
    c.generator.residual = True           # G1 learns the degradation on top of F(HR) (see defaults)
    c.loss.alpha, c.loss.beta = 1.0, 1.0
    c.discriminator.features, c.discriminator.max_features = 8, 32
    c.train.batch_size, c.train.num_steps = 16, 300
    c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 25, 100, 300
    for o in (c.optim_G, c.optim_D):
      o.base_lr, o.base_batch = 1e-3, 16  # a CPU-sized schedule: 300 steps instead of 200 epochs
      o.decay_steps = (120, 240)          # x0.5 at 40 % and 80 % (the paper's 80 / 200, 160 / 200)
    c.eval.max_images = 256
  if "quick" in variants:
    c.train.num_steps, c.train.eval_every = 8, 8
    c.train.log_every, c.train.checkpoint_every = 4, 4
    c.eval.max_images, c.eval.log_images = 32, 2
    c.generate.shard_size = 64
  return c
