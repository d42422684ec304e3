"""ALWA (adaptive loss weight adjustment) on RetinaNet R50, VOC12 trainval -> VOC07 test.

mmdetection 1x schedule: 12 epochs (/10 at 8 and 11), SGD 0.9, wd 1e-4, lr 0.01 per 16
images; every C = 100 iterations lambda_cls = 1 - (cls - reg) / cls when cls > reg
(ALWA_2: std of the recorded losses; ALWA_1: mean + std). VOC mAP@0.5 (07 11-point and
area) is reported next to the COCO metrics.

    python -m jaxdet.main --config=configs/alwa_voc.py:ciou,alwa2 --workdir=runs/alwa_voc_ciou
Variants (comma-separated): regression loss ':l1' | ':smooth_l1' (default) | ':ciou' | ':giou' | ':diou';
weighting ':alwa2' (default) | ':alwa1' | ':baseline' (fixed 1:1); ':raw' records unweighted losses;
':demo' runs the same recipe on the embedded benchmark (CPU-sized, see configs/demo.py);
':tfds' reads TFDS voc/2012 train+validation -> voc/2007 test (configs/retinanet_voc.py).
"""
from jaxdet.experiments.defaults import detector_defaults, sibling_config, parse_variants, use_coco_json

REG_LOSSES = ("l1", "smooth_l1", "ciou", "giou", "diou")


def get_config(arg: str | None = None):
  variants = parse_variants(arg)
  unknown = variants - set(REG_LOSSES) - {"alwa1", "alwa2", "baseline", "raw", "demo", "tfds"}
  if unknown:
    raise ValueError(f"configs/alwa_voc.py: unknown variant(s) {sorted(unknown)}; valid: "
                     f"{', '.join(REG_LOSSES)}, alwa1, alwa2, baseline, raw, demo, tfds.")
  if {"demo", "tfds"} <= variants:
    raise ValueError(f"configs/alwa_voc.py: got {arg!r}; ':demo' (embedded benchmark) and ':tfds' "
                     "(TFDS VOC) name different data, use one of them.")
  if "demo" in variants:
    c = sibling_config(__file__, "demo").get_config("")
  else:
    c = detector_defaults()
    use_coco_json(c.data, train_json="data/voc/annotations/voc12_trainval.json",
                  train_images="data/voc/images",
                  val_json="data/voc/annotations/voc07_test.json",
                  val_images="data/voc/images")
    c.data.image_size = (1024, 1024)
    c.data.short_side, c.data.max_side = 600, 1000   # mmdetection VOC: (1000, 600)
    c.data.num_workers = 16
    c.model.depth, c.model.pretrained, c.model.dtype = 50, "weights/resnet50_imagenet.npz", "bfloat16"
    c.optim.base_lr, c.optim.base_batch = 0.01, 16
    # 12 epochs of VOC12 trainval (11,540 images) at 16 images per step.
    steps_per_epoch = 11_540 // 16
    c.optim.decay_steps = (8 * steps_per_epoch, 11 * steps_per_epoch)
    c.train.batch_size, c.train.num_steps = 16, 12 * steps_per_epoch
    c.train.eval_every = 4 * steps_per_epoch
    if "tfds" in variants:   # VOC12 trainval (voc/2012 train + validation) -> VOC07 test
      sibling_config(__file__, "retinanet_voc").use_voc_tfds(c.data, trainval=("voc/2012",))
  reg = [v for v in variants if v in REG_LOSSES]
  c.loss.reg = reg[0] if reg else "smooth_l1"
  if c.loss.reg == "smooth_l1":
    c.loss.smooth_l1_beta = 1.0 / 9.0     # mmdetection RetinaNet default
  if c.loss.reg in ("ciou", "giou", "diou"):
    c.loss.reg_weight = 1.0
  c.alwa.enabled = "baseline" not in variants
  c.alwa.statistic = "alwa1" if "alwa1" in variants else "alwa2"
  c.alwa.window = 100
  c.alwa.record = "raw" if "raw" in variants else "weighted"
  c.eval.voc_metrics = True
  return c
