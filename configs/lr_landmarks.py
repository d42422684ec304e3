"""Stage 2 of the low-resolution landmark paper: heatmap GAN (G2, D2, D3), settings S1-S4 and
HR-LD (§3.2-4.3, Tables 1b, 2 and 4).

Train the high-to-low stage first and generate its LR faces (``configs/high_to_low.py``), then::

    python -m jaxdet.main --config=configs/lr_landmarks.py:s4 --workdir=runs/lr_s4 \\
        --config.data.generated_dir=runs/high_to_low/generated
    python -m jaxdet.main --config=configs/lr_landmarks.py:s4 --workdir=runs/lr_s4 --mode=identify

One variant picks the setting (Table 1b): ``:s1`` (G2 on subsampled HR AFLW faces), ``:s2`` (on
generated LR faces, supervised), ``:s3`` (+ D2), ``:s4`` (+ D3 with unlabelled real LR faces:
WIDER FACE 20-40 px), ``:hr_ld`` (G2 at 128 x 128 on HR faces, Table 4). AFLW (19 points, box
size normaliser) is the default data; the others:

* ``:300w`` -- 68 points, inter-pupil normaliser, evaluation on common / challenging / full
  (Table 4; ``data.w300_root``), generated sets of ``configs/high_to_low.py:300w``;
* ``:tinyface`` -- real LR = TinyFace training faces (Table 2: L3, I2) and the identification
  sets are TinyFace folders (``--mode=identify``);
* ``:demo`` -- the embedded face benchmark (19 points), evaluated on its real-LR test split (truth
  held out) and on the generated-LR test split; needs
  ``python -m jaxdet.main --config=configs/high_to_low.py:demo --workdir=runs/h2l_demo`` and its
  ``--mode=generate`` first;
* ``:quick`` -- a few steps (smoke test).
"""
from jaxdet.experiments.defaults import parse_variants
from jaxdet.experiments.lr_landmarks import SETTINGS, apply_setting, lr_landmarks_defaults

VARIANTS = SETTINGS + ("300w", "tinyface", "demo", "quick")


def _eval(c, sets):
  """``sets``: (name, spec, source size, transform) per evaluation set."""
  c.data.eval_sets = tuple(s[0] for s in sets)
  c.data.eval_specs = tuple(s[1] for s in sets)
  c.data.eval_source_sizes = tuple(s[2] for s in sets)
  c.data.eval_transforms = tuple(s[3] for s in sets)


def get_config(arg: str | None = None):
  variants = parse_variants(arg, VARIANTS, config="configs/lr_landmarks.py")
  if {"demo", "300w"} <= variants:
    raise ValueError("configs/lr_landmarks.py: ':demo' is the embedded benchmark (19 points), ':300w' the 68-point "
                     "300W files: pick one.")
  settings = variants & set(SETTINGS)
  if len(settings) > 1:
    raise ValueError(f"configs/lr_landmarks.py: pick one setting, got {sorted(settings)}.")
  setting = settings.pop() if settings else "s4"
  c = lr_landmarks_defaults()
  apply_setting(c, setting)
  hr_ld = setting == "hr_ld"
  lr_eval = "resize" if hr_ld else "none"   # HR-LD sees LR faces upsampled to 128 (§4.3)
  c.data.generated_dir = "runs/high_to_low/generated"
  if "300w" in variants:
    c.landmarks.scheme, c.landmarks.normaliser = "68", "inter_pupil"
    c.data.generated_dir = "runs/high_to_low_300w/generated"
    hr, gen = ("300w:train",), ("generated:300w_train",)
    if hr_ld:
      _eval(c, [(f"300w_{s}", f"300w:{s}", 128, "none") for s in ("common", "challenging",
                                                                     "full")])
    else:
      _eval(c, [(f"generated_300w_{s}", f"generated:300w_{s}", 32, "none")
                for s in ("common", "challenging", "full")])
  else:
    hr, gen = ("aflw:train",), ("generated:train",)
    _eval(c, [("aflw_test", "aflw:test", 128, "none")] if hr_ld else
          [("generated_test", "generated:test", 32, "none")])
  c.data.train = hr if setting in ("s1", "hr_ld") else gen
  c.data.train_transform = "subsample" if setting == "s1" else "none"
  if "tinyface" in variants:
    c.data.unlabelled = ("folder:data/tinyface/Training_Set",)
    c.identify.train = ("folder:data/tinyface/Training_Set",)
    # Table 2: each test identity's faces (probe + gallery-match folders, one identity map)
    # are split half probe, half gallery.
    c.identify.test = ("folder:data/tinyface/Testing_Set/Gallery_Match"
                       "+data/tinyface/Testing_Set/Probe",)
  if "demo" in variants:
    c.data.generated_dir = "runs/h2l_demo/generated"
    c.data.train = ("benchmark:hr_train",) if setting in ("s1", "hr_ld") else ("generated:train",)
    c.data.unlabelled = ("benchmark:real_lr_train",)
    sets = [("real_lr_test", "benchmark:real_lr_test", 32, lr_eval),
            ("generated_test", "generated:test", 32, lr_eval)]
    if hr_ld:
      sets.append(("hr_test", "benchmark:hr_test", 128, "none"))
    _eval(c, sets)
    for net in (c.generator, c.d2, c.d3):
      net.features, net.max_features = 8, 32
    c.train.batch_size, c.train.num_steps = 16, 400
    c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 25, 100, 400
    for o in (c.optim_G, c.optim_D2, c.optim_D3):
      o.base_lr, o.base_batch = 1e-3, 16  # a CPU-sized schedule: 400 steps instead of 200 epochs
      o.decay_steps = (160, 320)          # x0.5 at 40 % and 80 % (the paper's 80 / 200, 160 / 200)
    c.identify.steps, c.identify.batch_size, c.identify.width = 300, 32, 4
  if "quick" in variants:
    c.train.num_steps, c.train.eval_every = 6, 6
    c.train.log_every, c.train.checkpoint_every = 3, 3
    c.eval.max_images, c.eval.log_images = 32, 4
    c.identify.steps = 20
  return c
