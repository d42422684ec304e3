"""Config schemas: the keys every experiment shares, and the detector experiments' keys.

Each experiment declares its schema (``Experiment.config_schema()``): every key it
understands, with its default and a comment. The loop's keys (``experiment``, ``seed``,
``train.*``) come from ``loop_defaults()``; detectors (RetinaNet family, Faster R-CNN, SSD)
extend it with ``detector_defaults()`` (SSD adds its ``config.ssd`` block,
``jaxdet.experiments.ssd.ssd_defaults``). Config files in ``configs/`` start from a schema
and change what their recipe needs; ``jaxdet.train.config_check.validate`` rejects any key the
named experiment's schema lacks (a typo is an error that suggests the closest key).
"""
from __future__ import annotations

import ml_collections


def loop_defaults() -> ml_collections.ConfigDict:
  """The keys the training loop reads, shared by every experiment."""
  c = ml_collections.ConfigDict()
  c.experiment = ""                # jaxdet.experiments.registry name; selects the schema
  c.seed = 0                       # initialisation, data order, augmentation and step keys

  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 16                # global, over all devices and hosts
  t.num_steps = 90_000             # loop steps (data position and LR schedules count these)
  t.log_every = 50                 # loop steps between logged (averaged) train metrics
  t.eval_every = 10_000            # 0: evaluate only at the end
  t.checkpoint_every = 1_000
  t.keep_checkpoints = 3
  t.progress_bar = True            # tqdm bar; False: one console line per log interval
  return c


def optim_group(**overrides) -> ml_collections.ConfigDict:
  """The keys of one network's optimizer (``jaxdet.train.optim.make_optimizer``); the defaults
  are the detectors' SGD recipe, ``overrides`` change them (e.g. Adam for a GAN generator)."""
  o = ml_collections.ConfigDict()
  o.name = "sgd"                   # sgd | adam
  o.base_lr = 0.01                 # for base_batch images (linear scaling)
  o.base_batch = 16
  o.momentum = 0.9                 # sgd
  o.beta1 = 0.9                    # adam
  o.beta2 = 0.999
  o.weight_decay = 1e-4
  o.warmup_steps = 500             # loop steps
  o.warmup_factor = 1.0 / 3.0
  o.decay_steps = (60_000, 80_000)  # loop steps
  o.decay_factor = 0.1
  o.grad_clip_norm = 0.0           # 0: off
  o.update(overrides)
  return o


def detector_defaults() -> ml_collections.ConfigDict:
  """Every key of the detector experiments (``experiment='retinanet'``)."""
  c = loop_defaults()
  c.experiment = "retinanet"
  # Detectors only (the GAN / landmark experiments reject the key: they do not accumulate).
  c.train.accumulate_steps = 1     # k >= 1: each step's batch_size images run as k micro-batches
                                   # of batch_size/k inside the one jitted step (lax.scan), grads
                                   # summed, ONE optimizer update: ~1/k of the activation memory.
                                   # batch_size must be a multiple of k x data shards. Exact (the
                                   # big batch's update): RetinaNet with loss.cls='focal' and no
                                   # consistent terms (focal + box losses divided by the whole
                                   # batch's N_pos; otherwise the box loss too is normalised per
                                   # micro-batch and averaged), Faster R-CNN's RPN and box-head
                                   # losses (fixed sample counts; anchors/RoIs sampled with each
                                   # micro-batch's key). Per micro-batch, then averaged: AP/AUC
                                   # ranking, OHEM, consistent terms, the mask loss, BatchNorm
                                   # statistics (EMA updated k times). XLA:CPU runs conv gradients
                                   # in the loop several times slower (jaxdet.train.accumulate)

  # ---- data -------------------------------------------------------------
  c.data = d = ml_collections.ConfigDict()
  d.source = "benchmark"           # benchmark | coco_json | tfds | wider_face (official release)
  d.benchmark_root = ""            # '' -> $JAXDET_DATA or ~/.cache/jaxdet
  d.benchmark_subset = "all"       # benchmark: all (5 classes) | faces (face-only split, 1 class)
  d.wider_face_root = ""           # wider_face: folder with wider_face_split/, WIDER_train/images/,
                                   # WIDER_val/images/ (the official zips unzipped)
  d.train_json = ""                # coco_json: annotation file of the train split
  d.train_images = ""              # coco_json: image folder of the train split
  d.val_json = ""
  d.val_images = ""
  d.tfds_name = ""                 # tfds: e.g. 'coco/2017', 'voc/2007', 'wider_face'
  d.tfds_train_split = "train"
  d.tfds_val_split = "validation"
  d.tfds_data_dir = ""
  d.image_size = (128, 128)        # fixed padded (H, W) of every batch
  d.short_side = 128               # resize: shorter side target ...
  d.max_side = 128                 # ... longer side at most this
  d.eval_image_size = ()           # () -> image_size; e.g. (1024, 1024) for test-time resize
  d.eval_short_side = 0            # 0 -> short_side
  d.eval_max_side = 0              # 0 -> max_side
  d.aspect_ratio_grouping = False  # batches of one orientation, padded to image_size = (S, L),
                                   # S <= L (landscape) or (L, S) (portrait): one compile per
                                   # bucket, exact resume (jaxdet.data.aspect_groups); eval too
  d.max_boxes = 0                  # ground-truth slots per image; 0: the most objects of any
                                   # image of the split (an explicit value below that is an error)
  d.hflip = True
  d.scale_jitter = (1.0, 1.0)      # (min, max) random scale; (1, 1) = off
  d.num_workers = 2
  d.skip_bad_images = False
  d.pixel_mean = (0.485, 0.456, 0.406)
  d.pixel_std = (0.229, 0.224, 0.225)

  # ---- model ------------------------------------------------------------
  c.model = m = ml_collections.ConfigDict()
  m.depth = 50
  m.width = 64
  m.norm = "frozen_bn"             # frozen_bn | batch_norm | group_norm
  m.frozen_stages = 1
  m.min_level = 3
  m.max_level = 7
  m.fpn_filters = 256
  m.head_convs = 4
  m.head_filters = 256
  m.head_norm = ""                 # '' | group_norm
  m.prior_prob = 0.01
  m.dtype = "float32"              # compute dtype: float32 | bfloat16
  m.anchor_size = 4.0              # base anchor = anchor_size * stride
  m.anchor_scales = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
  m.aspect_ratios = (0.5, 1.0, 2.0)
  m.pretrained = ""                # .npz of backbone weights (jaxdet.models.weights)
  m.remat = "none"                 # backbone rematerialisation (jax.checkpoint) in train steps:
                                   # none | stages (stem + each stage) | blocks (each residual
                                   # block) | part indices '3,4' (0 = stem); keeps only the parts'
                                   # inputs for the backward pass and recomputes the rest (~1 more
                                   # backbone forward per step); same params, outputs and grads

  # ---- losses -----------------------------------------------------------
  c.loss = l = ml_collections.ConfigDict()
  l.cls = "focal"                  # focal | ap | auc | ce_ohem
  l.reg = "smooth_l1"              # smooth_l1 | l1 | giou | diou | ciou
  l.focal_alpha = 0.25
  l.focal_gamma = 2.0
  l.ap_delta = 1.0
  l.ap_interpolate = True
  l.ap_per_device = False          # rank per device shard instead of global batch
  l.ohem_neg_pos_ratio = 3
  l.smooth_l1_beta = 0.11
  l.box_weights = (1.0, 1.0, 1.0, 1.0)
  l.positive_iou = 0.5
  l.negative_iou = 0.4
  l.allow_low_quality = True       # each GT's best anchor is positive too (Detectron's low-quality
                                   # matches; SSD §2.2's first matching step)
  l.low_quality_rematch = False    # True: such an anchor is assigned to the GT it is best for, even
                                   # if another GT overlaps it more (SSD; ssd.pytorch match())
  l.cls_weight = 1.0
  l.reg_weight = 1.0

  # ---- consistent optimization (Kong et al.) ------------------------------
  c.consistent = k = ml_collections.ConfigDict()
  k.enabled = False                # ConRetinaNet + the refined-anchor terms (jaxdet.losses.consistent)
  k.alpha = 1.0                    # weight of the refined class term(s), Eq. 1 (paper: 1)
  k.positive_iou = 0.6             # mu_pos of the refined anchors (Table 2)
  k.negative_iou = 0.5             # mu_neg of the refined anchors (Table 2)
  k.positive_iou_stage3 = 0.7      # third stage (Table 3 caption)
  k.negative_iou_stage3 = 0.6
  k.variant = "consistent"         # consistent | cascade | gated_cascade (Fig. 4 (d)/(b)/(c))
  k.cls_stages = 2                 # classification terms, Table 3 #cls (<= reg_stages + 1)
  k.reg_stages = 2                 # regression terms, Table 3 #reg
  k.cls_normalizer = "shared"      # shared: Eq. 1 as written, one N_cls = #positive original
                                   # anchors for both class terms ("N_cls is the mini-batch size for
                                   # the classification branch", §4; Eq. 2 by contrast writes two
                                   # N_reg) | separate: refined term / #refined positives
                                   # (before this key). Focal loss only; AP/AUC/OHEM self-normalise
  k.refined_low_quality_matches = True  # False: refined anchors positive only at IoU >= mu_pos (no
                                   # "GT's best anchor" matches); True: as loss.allow_low_quality
                                   # (before this key; the paper is silent, §6.3 names only mu_pos/neg)
  k.inference_stages = 0           # regressions applied at test time; 0: all reg_stages (§6.3
                                   # "Parameter and Timing"); 1 with reg_stages 2: Table 3 "2 2*"

  # ---- ALWA adaptive loss weights ----------------------------------------
  c.alwa = a = ml_collections.ConfigDict()
  a.enabled = False
  a.statistic = "alwa2"            # alwa1 (mean+std) | alwa2 (std)
  a.window = 100
  a.record = "weighted"            # weighted (authors' code) | raw
  a.lambda_cls = 1.0
  a.lambda_reg = 1.0

  # ---- optimizer ----------------------------------------------------------
  c.optim = optim_group()

  # ---- evaluation / post-processing ----------------------------------------
  c.eval = e = ml_collections.ConfigDict()
  e.batch_size = 8
  e.score_threshold = 0.05
  e.pre_nms_topk = 1000
  e.nms_iou = 0.5
  e.max_detections = 100
  e.voc_metrics = False            # also report VOC07 11-point / area mAP@0.5
  e.coco_backend = "pycocotools"   # pycocotools | faster_coco_eval (the same AP in C++, ~6x
                                   # faster; pip install 'jaxdet[fast-eval]')
  e.protocol = "coco"              # coco | wider_face (+ easy/medium/hard AP, predictions also
                                   # in the official layout; jaxdet.experiments.detection_eval)
  e.wider_face_gt_dir = ""         # wider_face: official eval_tools/ground_truth folder (.mat);
                                   # '' -> face-height proxy subsets built from the val source
  e.max_images = 0                 # 0 = whole split
  e.log_images = 4                 # val images drawn with their detections after each eval
  # --mode=robustness (AP-loss Table 3; jaxdet.experiments.detection_modes). Columns: clean,
  # black_patch, random_patch, flipped_patch, gaussian_noise (image corruptions, cheap: one eval
  # pass each) and the opt-in gradient attacks adv_patch (Advs-Patch: ~adv_patch_steps forward +
  # backward passes per batch) and deepfool (up to deepfool_max_iter x (1 forward +
  # deepfool_num_classes - 1 backward) passes per batch) (jaxdet.evaluation.adversarial).
  e.robustness = ("clean", "black_patch", "random_patch", "flipped_patch", "gaussian_noise")
  e.robustness_metric = "auto"     # auto: voc07_map50 if the data is VOC (eval.voc_metrics, or
                                   # data.source='tfds' with a voc/* tfds_name), else coco_ap50 |
                                   # voc07_map50 (11-point, difficult ignored; Table 3's mAP50 on
                                   # VOC07 test) | voc_area_map50 | coco_ap50
  e.noise_space = "pixels01"       # gaussian_noise: pixels01 = N(0, 0.01) on the [0, 1] image,
                                   # clipped, uint8 (the reading that matches Table 3's drop; the
                                   # authors' net input is mean-subtracted 0..255 pixels) |
                                   # network_input = after data.pixel_mean/std normalisation
  e.adv_patch_steps = 10           # signed-gradient steps of the per-image adversarial patch
  e.adv_patch_step_size = 0.05     # per step, in [0, 1] pixel units (content clipped to [0, 1])
  e.adv_patch_objective = "gt_scores"  # gt_scores: lower the GT-class scores of the objects'
                                   # anchors | loss: raise the training loss (eval size = train size)
  e.deepfool_max_iter = 50         # DeepFool iterations per image (official code: 50)
  e.deepfool_overshoot = 0.02      # DeepFool overshoot (paper / official code: 0.02)
  e.deepfool_num_classes = 10      # candidate labels incl. the clean one (official code: 10)

  # ---- predict mode ----------------------------------------------------------
  c.predict = p = ml_collections.ConfigDict()
  p.input_dir = ""
  p.output_dir = ""                # '' -> <workdir>/predictions
  p.draw_threshold = 0.3
  return c


def sibling_config(config_file: str, name: str):
  """Loads ``configs/<name>.py`` next to ``config_file`` as a module.

  ``configs/`` is a folder of files, not a package, so a config that builds on another
  (``conretinanet_demo`` on ``demo``) loads it by path: ``sibling_config(__file__, 'demo')``.
  """
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{config_file} builds on {path}, which does not exist.")
  spec = importlib.util.spec_from_file_location("_jaxdet_config_" + name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_variants(arg: str | None, valid=None, *, config: str = "") -> set[str]:
  """``'r101,800'`` (the text after ``:`` in ``--config=file.py:r101,800``) -> {'r101', '800'}.

  With ``valid`` (the variants the config understands) an unknown one is a ValueError that names
  ``config`` and lists the valid ones: a typo such as ``:ohme`` must not run another recipe."""
  variants = set((arg or "").split(",")) - {""}
  if valid is not None:
    unknown = variants - set(valid)
    if unknown:
      raise ValueError(f"{config or 'config'}: unknown variant(s) {sorted(unknown)}; valid: "
                       f"{', '.join(valid) or '(none)'}.")
  return variants


def use_coco_json(data_cfg, *, train_json: str, train_images: str, val_json: str,
                  val_images: str) -> None:
  """Points ``config.data`` at a COCO-format dataset (annotation JSON + image folder per split)."""
  data_cfg.source = "coco_json"
  data_cfg.train_json, data_cfg.train_images = train_json, train_images
  data_cfg.val_json, data_cfg.val_images = val_json, val_images


def use_coco2017_json(data_cfg) -> None:
  """COCO 2017 train -> val in its usual layout under ``data/coco/`` (the COCO configs)."""
  use_coco_json(data_cfg, train_json="data/coco/annotations/instances_train2017.json",
                train_images="data/coco/train2017",
                val_json="data/coco/annotations/instances_val2017.json",
                val_images="data/coco/val2017")


def use_voc0712_json(data_cfg) -> None:
  """VOC 07+12 trainval -> VOC07 test as COCO-format JSON under ``data/voc/`` (the VOC configs)."""
  use_coco_json(data_cfg, train_json="data/voc/annotations/voc0712_trainval.json",
                train_images="data/voc/images",
                val_json="data/voc/annotations/voc07_test.json",
                val_images="data/voc/images")
