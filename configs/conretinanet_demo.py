"""ConRetinaNet on the embedded benchmark (laptop CPU): the demo RetinaNet of ``configs/demo.py``
with consistent optimization (papers/consistent_optimization.txt, Eq. 1 and 2: alpha = 1,
mu_pos 0.6 / mu_neg 0.5, 2 class + 2 regression terms, one shared N_cls in Eq. 1, 'consistent'
shared-head variant, both regressions applied at inference).
Compare with configs/demo.py (same data, model and schedule) to see the consistent terms'
effect on AP / AP75 at toy scale.

    python -m jaxdet.main --config=configs/conretinanet_demo.py --workdir=runs/conretinanet_demo
    variants (comma separated): ':quick' (smoke test, from demo.py), ':cascade' / ':gated_cascade'
      (Fig. 4(b)/(c)), ':alwa' (ALWA_2 adaptive loss weights), ':aploss' (AP-loss classification);
      ':aploss,alwa' = AP-loss + consistent optimization + ALWA;
      fidelity options (jaxdet/losses/consistent.py): ':separate_ncls' (Eq. 1's two class terms
      each divided by the positives of their own anchor set instead of one shared N_cls = N0),
      ':no_lq_refined' (refined anchors get no "each GT's best anchor" low-quality positives),
      ':apply1' (Table 3 "2 2*": two regressions trained, one applied at inference).
"""
from jaxdet.experiments.defaults import sibling_config, parse_variants


def get_config(arg: str | None = None):
  variants = parse_variants(arg, ("quick", "cascade", "gated_cascade", "alwa", "aploss",
                                  "separate_ncls", "no_lq_refined", "apply1"),
                            config="configs/conretinanet_demo.py")
  if {"cascade", "gated_cascade"} <= variants:
    raise ValueError(f"conretinanet_demo: pick at most one of 'cascade' / 'gated_cascade' (other variants: "
                     f"quick, alwa, aploss); got {arg!r}")
  c = sibling_config(__file__, "demo").get_config("quick" if "quick" in variants else "")
  k = c.consistent
  k.enabled = True
  k.alpha, k.positive_iou, k.negative_iou = 1.0, 0.6, 0.5
  k.variant = "cascade" if "cascade" in variants else "gated_cascade" if "gated_cascade" in variants else "consistent"
  k.cls_stages, k.reg_stages = 2, 2
  k.cls_normalizer = "separate" if "separate_ncls" in variants else "shared"
  k.refined_low_quality_matches = "no_lq_refined" not in variants
  k.inference_stages = 1 if "apply1" in variants else 0
  if "alwa" in variants:
    c.alwa.enabled, c.alwa.statistic = True, "alwa2"
  if "aploss" in variants:
    c.loss.cls = "ap"
  return c
