"""MTGAN on WIDER FACE (§4.1 "WIDER FACE dataset", §4.2, Table 8): small faces.

The paper's baseline is SRFACE (VGG-19); jaxdet uses any finished WIDER FACE detector run, by
default RetinaNet from ``configs/retinanet_widerface.py``. The data is the official release
(``data/wider_face``: ``wider_face_split/``, ``WIDER_train/images``, ``WIDER_val/images``) or
``tfds build wider_face`` (``configs/retinanet_widerface.py:tfds``). Train the baseline, then MTGAN
(mining runs first), then the official evaluation of the written predictions:

    python -m jaxdet.main --config=configs/retinanet_widerface.py --workdir=runs/retinanet_widerface
    python -m jaxdet.main --config=configs/mtgan_widerface.py --workdir=runs/mtgan_widerface \\
        --config.eval.wider_face_gt_dir=data/wider_face/eval_tools/ground_truth
    python -m jaxdet.evaluation.wider_face --gt data/wider_face/eval_tools/ground_truth \\
        --pred runs/mtgan_widerface/wider_face_step77280

Schedule (§4.2): "first 3 epochs at a learning rate of 1e-4 and divided by a factor 10 in another
3 epochs" for both networks; 600 RoIs per test image. An epoch is the mined crops once: WIDER
FACE train has 12,880 images x ``rois_per_image`` = 64 crops, i.e. 12,880 steps of 64 crops
(``train.num_steps`` = 6 epochs; a baseline with fewer than 64 usable RoIs on some images gives
slightly shorter epochs). Easy / medium / hard AP uses the official ground truth when
``eval.wider_face_gt_dir`` is set, otherwise size-based proxy subsets (see
``jaxdet.experiments.detection_eval``). Variants: the ablations of ``configs/mtgan_coco.py``
(``:sbu``, ``:rcnn``, ``:d_no_adv``, ``:d_no_reg``, ``:g_no_adv``, ``:g_no_cls``, ``:g_no_reg``,
``:ensemble``).
"""
from jaxdet.experiments.defaults import parse_variants
from jaxdet.experiments.mtgan import ABLATIONS, apply_ablations, mtgan_defaults

TRAIN_IMAGES = 12_880   # WIDER FACE train split


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(ABLATIONS)
  if unknown:
    raise ValueError(f"configs/mtgan_widerface.py: unknown variant(s) {sorted(unknown)}; valid: "
                     f"{', '.join(ABLATIONS)}.")
  c = mtgan_defaults()
  c.mtgan.baseline_workdir = "runs/retinanet_widerface"
  c.mtgan.baseline_config = "configs/retinanet_widerface.py"
  c.mtgan.mine_rois_per_image = 600   # mine where the test RoIs come from
  c.mtgan.test_rois = 600             # §4.2
  c.mtgan.pretrain_steps = 5_000
  c.eval.protocol = "wider_face"
  c.eval.max_detections = 600
  c.discriminator.depth, c.discriminator.norm = 50, "frozen_bn"
  c.discriminator.pretrained = "weights/resnet50_imagenet.npz"
  c.train.batch_size = 64
  epoch = TRAIN_IMAGES * c.mtgan.rois_per_image // c.train.batch_size
  c.train.num_steps, c.train.eval_every = 6 * epoch, 3 * epoch
  for opt in (c.optim_G, c.optim_D):
    opt.base_lr, opt.base_batch = 1e-4, 64
    opt.decay_steps, opt.decay_factor = (3 * epoch,), 0.1
  c.mtgan.num_workers = 16
  apply_ablations(c, variants)
  return c
