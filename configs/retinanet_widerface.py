"""RetinaNet R50-FPN face detector on WIDER FACE (Yang et al., CVPR 2016), one class ``face``.

The baseline of the WIDER FACE MTGAN experiment (``configs/mtgan_widerface.py``; MTGAN §4.1,
Table 8). Data: the official release unzipped in ``data/wider_face`` (``wider_face_split/``,
``WIDER_train/images/``, ``WIDER_val/images/``; faces flagged ``invalid`` are dropped). Evaluation
(``config.eval.protocol='wider_face'``): COCO AP plus easy / medium / hard AP with the official
protocol, the val detections written as ``<workdir>/wider_face_step<N>/EVENT/IMAGE.txt``; with
``--config.eval.wider_face_gt_dir=data/wider_face/eval_tools/ground_truth`` the official subsets,
otherwise face-height proxies (``jaxdet.evaluation.face_subsets``).

Face settings: longer side resized to 1024 (most WIDER FACE images are 1024 px wide), scale jitter
0.75-1.5, square anchors only (faces are close to square) from 16 px at P3
(``anchor_size=2``, 3 scales per octave) to ~406 px at P7, up to 750 detections per image (faces
are dense: some images hold hundreds). Schedule: 24 epochs of the 12,880 train images at
batch 16, lr 0.01 / 16 images, /10 after 16 and 22 epochs. Tiny faces (< 16 px, much of the hard
subset) gain from P2: ``--config.model.min_level=2`` (about 4x the anchors).

    python -m jaxdet.main --config=configs/retinanet_widerface.py --workdir=runs/retinanet_widerface
    variants: ':tfds' (TFDS wider_face, prepared with `tfds build wider_face`), ':demo' (the
      embedded benchmark's faces on a laptop CPU, the model and schedule of configs/demo.py),
      ':demo,quick' (its smoke test)
"""
from jaxdet.experiments.defaults import detector_defaults, parse_variants, sibling_config

TRAIN_IMAGES = 12_880   # WIDER FACE train split
VARIANTS = ("tfds", "demo", "quick")


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/retinanet_widerface.py: unknown variant(s) {sorted(unknown)}; "
                     f"valid: {', '.join(VARIANTS)} (quick only with demo).")
  if {"tfds", "demo"} <= variants or ("quick" in variants and "demo" not in variants):
    raise ValueError(f"configs/retinanet_widerface.py: got {arg!r}; use ':tfds', ':demo' or "
                     "':demo,quick'.")
  if "demo" in variants:
    c = sibling_config(__file__, "demo").get_config("quick" if "quick" in variants else None)
    c.data.benchmark_subset = "faces"
    c.eval.protocol = "wider_face"
    return c

  c = detector_defaults()
  c.data.source = "wider_face"
  c.data.wider_face_root = "data/wider_face"
  c.data.image_size = (1024, 1024)
  c.data.short_side = c.data.max_side = 1024
  c.data.scale_jitter = (0.75, 1.5)
  c.data.num_workers = 16
  c.model.depth = 50
  c.model.norm, c.model.frozen_stages = "frozen_bn", 1
  c.model.pretrained = "weights/resnet50_imagenet.npz"
  c.model.dtype = "bfloat16"
  c.model.min_level, c.model.max_level = 3, 7
  c.model.anchor_size = 2.0                  # 16 px anchors at stride 8
  c.model.aspect_ratios = (1.0,)
  c.loss.cls, c.loss.reg = "focal", "smooth_l1"
  epoch = TRAIN_IMAGES // 16
  c.optim.base_lr, c.optim.base_batch = 0.01, 16
  c.optim.warmup_steps, c.optim.warmup_factor = 500, 1.0 / 3.0
  c.optim.decay_steps = (16 * epoch, 22 * epoch)
  c.train.batch_size, c.train.num_steps = 16, 24 * epoch
  c.train.eval_every, c.train.checkpoint_every = 6 * epoch, 2_000
  c.eval.batch_size = 16
  c.eval.protocol = "wider_face"
  c.eval.score_threshold = 0.02
  c.eval.pre_nms_topk = 3000
  c.eval.max_detections = 750
  if "tfds" in variants:
    c.data.source, c.data.tfds_name = "tfds", "wider_face"
    c.data.tfds_train_split, c.data.tfds_val_split = "train", "validation"
  return c
