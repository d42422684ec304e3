"""ConRetinaNet R50-FPN on COCO 2017 (Kong et al., "Consistent Optimization for Single-Shot Object
Detection", papers/consistent_optimization.txt, Tables 1-4 and 6).

RetinaNet of ``configs/retinanet_coco.py`` plus consistent optimization (Eq. 1, Eq. 2): the
'consistent' variant (shared heads, one unshared stage-2 box conv), alpha = 1, refined-anchor
thresholds mu_pos = 0.6 / mu_neg = 0.5, two classification and two regression terms (Eq. 1 with one
shared N_cls = positives of the original anchors; refined anchors labelled like the original ones,
low-quality matches included), regression applied twice at inference. Horizontal flip only.
Detectron 1x at the paper's 8 images per batch (linear scaling: lr 0.005, 180k steps, /10 at 120k
and 160k, 1000 warm-up steps).
Paper (COCO minival, Table 4): R50-500 32.5 -> 33.7 AP, R50-800 35.7 -> 36.4,
R101-500 34.4 -> 35.5, R101-800 37.8 -> 38.7 (RetinaNet -> ConRetinaNet).

    python -m jaxdet.main --config=configs/conretinanet_coco.py:500 --workdir=runs/conretinanet_coco_r50_500
    variants (comma separated): ':r101', ':500' (short side 500, max 833), ':800' (default, max 1333),
      ':cascade' / ':gated_cascade' (Table 1 design choices), ':baseline' (consistent off: the
      RetinaNet row at the same schedule), ':tfds' (coco/2017 from TFDS);
      fidelity options (jaxdet/losses/consistent.py): ':separate_ncls' (Eq. 1's two class terms
      each divided by the positives of their own anchor set instead of one shared N_cls = N0),
      ':no_lq_refined' (refined anchors get no "each GT's best anchor" low-quality positives),
      ':apply1' (Table 3 "2 2*": two regressions trained, one applied at inference).
    Table 3 stages: --config.consistent.cls_stages=2 --config.consistent.reg_stages=1 (or 3);
    Table 2 thresholds: --config.consistent.positive_iou=0.7 --config.consistent.negative_iou=0.6.
Expects the COCO layout of retinanet_coco.py (data/coco/...) unless ':tfds'.
"""
from jaxdet.experiments.defaults import sibling_config, parse_variants


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("500", "800", "r101", "tfds", "cascade", "gated_cascade",
                                  "baseline", "separate_ncls", "no_lq_refined", "apply1"),
                            config="configs/conretinanet_coco.py")
  if {"500", "800"} <= variants or {"cascade", "gated_cascade"} <= variants:
    raise ValueError(f"conretinanet_coco: pick at most one of '500' / '800' and one of 'cascade' / "
                     f"'gated_cascade' (other variants: r101, baseline, tfds); got {arg!r}")
  c = sibling_config(__file__, "retinanet_coco").get_config(",".join(variants & {"r101", "tfds"}))
  if "500" in variants:
    c.data.short_side, c.data.max_side = 500, 833
    c.data.image_size = (512, 896)    # landscape bucket (aspect_ratio_grouping); 833 -> 896
  else:
    c.data.short_side, c.data.max_side = 800, 1333
    c.data.image_size = (800, 1344)   # landscape bucket; portrait batches are 1344 x 800
  c.data.hflip, c.data.scale_jitter = True, (1.0, 1.0)
  c.train.batch_size, c.train.num_steps = 8, 180_000
  c.optim.base_lr, c.optim.base_batch = 0.01, 16        # -> 0.005 at batch 8
  c.optim.warmup_steps, c.optim.decay_steps = 1_000, (120_000, 160_000)
  c.train.eval_every, c.train.checkpoint_every = 20_000, 2_000
  k = c.consistent
  k.enabled = "baseline" not in variants
  k.alpha, k.positive_iou, k.negative_iou = 1.0, 0.6, 0.5
  k.variant = "cascade" if "cascade" in variants else "gated_cascade" if "gated_cascade" in variants else "consistent"
  k.cls_stages, k.reg_stages = 2, 2
  k.cls_normalizer = "separate" if "separate_ncls" in variants else "shared"
  k.refined_low_quality_matches = "no_lq_refined" not in variants
  k.inference_stages = 1 if "apply1" in variants else 0
  return c
