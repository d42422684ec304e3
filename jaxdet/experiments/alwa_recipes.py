"""The ALWA paper's two-stage grids as config variants (Yu et al., Tables 3, 4 and 6).

Each table crosses a regression loss of the box head -- L1, SmoothL1, CIoU -- with the loss
weighting -- fixed 1:1 (baseline), ALWA_1 (mean + std of the recorded losses) or ALWA_2 (std),
Eq. 9 with C = 100 -- on Faster R-CNN (Tables 3-4) or Mask R-CNN (Table 6). As in the authors'
(mmdetection) code the adaptive weights scale the RPN's classification and regression losses
(``config.alwa``, updated in the anchor head's loss); the RPN keeps its L1 box loss in every row
and the table's loss is the box head's. mmdetection conventions for the box head: SmoothL1 with
beta = 1, IoU-family losses on the decoded boxes with weight 10. The ablations of Tables 7-8 are
``--config.alwa.window`` (C) and ``--config.alwa.lambda_cls`` / ``lambda_reg`` (initial weights).
"""
from __future__ import annotations

REG_LOSSES = ("l1", "smooth_l1", "ciou", "giou", "diou")
WEIGHTINGS = ("baseline", "alwa1", "alwa2")
VARIANTS = REG_LOSSES + WEIGHTINGS


def apply_alwa_grid(c, variants: set[str], *, config_file: str, default_reg: str = "l1",
                    default_weighting: str = "alwa2") -> set[str]:
  """Sets the box-head loss and the weighting named in ``variants`` on ``c``; returns the
  variants it did not use. At most one loss and one weighting (errors name ``config_file``)."""
  reg = sorted(variants & set(REG_LOSSES))
  weighting = sorted(variants & set(WEIGHTINGS))
  for kind, chosen in (("regression loss", reg), ("weighting", weighting)):
    if len(chosen) > 1:
      raise ValueError(f"{config_file}: pick one {kind}, got {', '.join(':' + v for v in chosen)}.")
  reg = reg[0] if reg else default_reg
  weighting = weighting[0] if weighting else default_weighting
  c.loss.reg = reg
  c.loss.smooth_l1_beta = 1.0 if reg == "smooth_l1" else 0.0
  c.loss.reg_weight = 10.0 if reg in ("ciou", "giou", "diou") else 1.0
  c.alwa.enabled = weighting != "baseline"
  c.alwa.statistic = "alwa1" if weighting == "alwa1" else "alwa2"
  c.alwa.window = 100
  return variants - set(VARIANTS)


def paper_schedule(c, images_per_epoch: int) -> None:
  """The two-stage runs' optimisation as the paper states it (§4; Tables 7-8: "trained with 2
  2080Ti GPUs (each GPU holds 4 images) and 1x training schedule"): 8 images per step, SGD lr
  0.02 for those 8 (mmdetection's R-CNN lr, not rescaled), 12 epochs with /10 after 8 and 11,
  mmdetection's linear warm-up over 500 steps from 0.001."""
  steps_per_epoch = images_per_epoch // 8
  c.train.batch_size = 8
  c.optim.base_lr, c.optim.base_batch = 0.02, 8
  c.optim.warmup_steps, c.optim.warmup_factor = 500, 0.001
  c.optim.decay_steps = (8 * steps_per_epoch, 11 * steps_per_epoch)
  c.train.num_steps, c.train.eval_every = 12 * steps_per_epoch, 4 * steps_per_epoch
  c.eval.batch_size = 8
