"""Faster R-CNN (Ren et al. 2015) with FPN (Lin et al. 2017) or C4 heads, as an experiment.

One jitted train step, static shapes throughout (detectron2's defaults, each a config key):

1. **RPN** (Faster R-CNN §3.1): anchors per level (FPN: one size per level P2-P6, 32-512 px, 3
   ratios; C4: 15 anchors, 5 sizes x 3 ratios, on res4); targets ``jaxdet.ops.rpn.rpn_targets``
   (IoU >= 0.7 fg, < 0.3 bg, 256 anchors per image, <= 50 % fg, drawn from the step RNG);
   objectness binary cross-entropy + box regression (``rpn.smooth_l1_beta``, 0 = L1), both summed
   over the sampled anchors and divided by their number (``B x 256``), §3.1.2 Eq. 1.
2. **Proposals** (``generate_proposals``, no gradient): per-level top ``rpn.pre_nms_topk_train``
   (2000), NMS 0.7, ``rpn.post_nms_topk_train`` (1000) per image; at test 1000 / 1000.
3. **RoI sampling** (Fast R-CNN §2.3, ``jaxdet.ops.roi_sampling``): ground truth appended, 512
   RoIs per image, <= 25 % fg (IoU >= 0.5), bg in [0, 0.5), padded with a mask.
4. **Box head** on RoIAlign features: softmax cross-entropy over K + 1 (background last) and
   class-specific regression of the fg RoIs with weights (10, 10, 5, 5) and dw/dh clipped at
   log(1000/16) when decoding; the regression loss is ``loss.reg`` (smooth-L1 with
   ``roi_head.smooth_l1_beta``, L1, or an IoU loss on the decoded boxes), summed over fg RoIs
   and divided by the number of sampled RoIs (detectron2).
5. **ALWA** (``config.alwa``, ALWA paper §3 and the authors' code): the adaptive weights scale
   the RPN's classification and regression losses; with ``alwa.roi_head`` a second ALWA state
   weights the box head's losses too. Both states are checkpointed.

Inference: test proposals -> box head -> softmax scores of the K classes, per-class decoded boxes
clipped to the image -> score > ``eval.score_threshold`` (0.05) -> per-class NMS
(``eval.nms_iou`` 0.5) -> top ``eval.max_detections`` (100).

State: ``{"net": NetworkState}`` (+ ``"alwa"`` / ``"alwa_roi"``).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from jaxdet.experiments.defaults import detector_defaults
from jaxdet.experiments.detection import DTYPES, DetectionExperiment
from jaxdet.losses import regression as reg_loss
from jaxdet.losses import weighting as alwa
from jaxdet.losses.classification import sigmoid_cross_entropy, softmax_cross_entropy
from jaxdet.models.faster_rcnn import FasterRCNN
from jaxdet.models.resnet import backbone_remat, frozen_param_labels, parse_remat
from jaxdet.ops import anchors as anchor_lib
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import nms as nms_ops
from jaxdet.ops import postprocess, roi_sampling, rpn
from jaxdet.ops.postprocess import Detections
from jaxdet.train import accumulate, optim
from jaxdet.train.config_check import ConfigError, checked
from jaxdet.train.state import NetworkState, init_key

SCALE_CLAMP = math.log(1000.0 / 16)   # detectron2 _DEFAULT_SCALE_CLAMP


def faster_rcnn_defaults() -> ml_collections.ConfigDict:
  """Every key of ``experiment='faster_rcnn'``: the detector keys plus the two-stage ones
  (detectron2 ``faster_rcnn_R_50_FPN_1x`` defaults)."""
  c = detector_defaults()
  c.experiment = "faster_rcnn"
  m = c.model
  m.design = "fpn"                 # fpn (P2-P6, 2fc head) | c4 (res4 RPN, res5 head)
  m.anchor_size = 8.0              # FPN: 8 x stride = 32 px at P2 ... 512 at P6 (C4: 2 x 16)
  m.anchor_scales = (1.0,)         # C4: (1, 2, 4, 8, 16) -> 15 anchors with 3 ratios
  m.fc_dim = 1024                  # FPN box head: 2 fc of this width
  m.pooler_resolution = 7          # RoIAlign output (C4: 14, then res5 halves it)
  m.sampling_ratio = 2             # RoIAlign samples per bin side (fixed: static shapes)
  c.loss.box_weights = (10.0, 10.0, 5.0, 5.0)   # box head coder (Fast R-CNN)
  c.loss.reg = "smooth_l1"         # box head: smooth_l1 | l1 | giou | diou | ciou
  c.loss.smooth_l1_beta = 0.0      # 0 = L1 (detectron2 box head default)

  c.rpn = r = ml_collections.ConfigDict()
  r.positive_iou = 0.7
  r.negative_iou = 0.3
  r.batch_size_per_image = 256
  r.positive_fraction = 0.5
  r.pre_nms_topk_train = 2000      # per level (FPN) / per image (C4)
  r.post_nms_topk_train = 1000     # per image
  r.pre_nms_topk_test = 1000
  r.post_nms_topk_test = 1000
  r.nms_iou = 0.7
  r.min_size = 0.0
  r.smooth_l1_beta = 0.0           # 0 = L1 (detectron2 RPN default)
  r.loss_weight = 1.0

  c.roi_head = h = ml_collections.ConfigDict()
  h.num_samples = 512              # RoIs per image
  h.positive_fraction = 0.25
  h.fg_iou = 0.5
  h.bg_iou_low = 0.0
  h.append_gt = True

  c.alwa.roi_head = False          # also weight the box head's losses (RPN always, when enabled)

  c.optim.warmup_steps, c.optim.warmup_factor = 1000, 0.001
  c.optim.base_lr, c.optim.base_batch = 0.02, 16
  return c


class FasterRCNNExperiment(DetectionExperiment):
  name = "faster_rcnn"
  progress_metrics = ("loss", "rpn_cls", "rpn_reg", "cls_loss", "reg_loss", "lr")

  def __init__(self, config, mesh, **kwargs):
    super().__init__(config, mesh, **kwargs)
    c, m = config, config.model
    if m.design not in ("fpn", "c4"):
      raise ConfigError(f"config.model.design={m.design!r}: use 'fpn' or 'c4'.")
    if c.loss.reg not in reg_loss.REGRESSION_LOSSES:
      raise ConfigError(f"config.loss.reg={c.loss.reg!r}: valid: {reg_loss.REGRESSION_LOSSES}.")
    checked("config.model.remat", parse_remat, m.remat)
    accumulate.check_accumulate_steps(c.train.batch_size, c.train.accumulate_steps, mesh)
    self.levels = (2, 6) if m.design == "fpn" else (4, 4)
    scales, ratios = tuple(m.anchor_scales), tuple(m.aspect_ratios)
    self.num_per_loc = anchor_lib.num_anchors_per_location(scales, ratios)

    self.anchors, self.level_slices = self.anchors_of_size(self.image_size)
    self.eval_anchors, self.eval_level_slices = self.anchors_of_size(self.eval_image_size)
    self.model = FasterRCNN(**self.model_kwargs())
    abstract = jax.eval_shape(functools.partial(self._init_variables), jax.random.PRNGKey(0))
    labels = frozen_param_labels(abstract["params"], m.frozen_stages)
    self.optimizer = optim.make_optimizer(c.optim, c.train.batch_size, labels)
    if c.alwa.enabled:
      self.progress_metrics = (*self.progress_metrics, "lambda_cls", "lambda_reg")

  @classmethod
  def config_schema(cls):
    return faster_rcnn_defaults()

  def model_kwargs(self) -> dict:
    """``FasterRCNN`` attributes from ``config.model`` (subclasses add their heads' ones)."""
    m = self.config.model
    return dict(
        design=m.design, num_classes=self.num_classes, depth=m.depth, width=m.width, norm=m.norm,
        frozen_stages=m.frozen_stages, fpn_filters=m.fpn_filters, num_anchors=self.num_per_loc,
        fc_dim=m.fc_dim, pooler_resolution=m.pooler_resolution, sampling_ratio=m.sampling_ratio,
        dtype=DTYPES[m.dtype])

  # ---- hooks for heads on top of the box head (Mask R-CNN) ----------------------------------
  def extra_head_losses(self, mdl, feats, sampled, batch) -> dict:
    """More loss terms from the sampled RoIs (inside ``forward``); none for Faster R-CNN."""
    return {}

  def extra_loss_total(self, terms) -> jax.Array:
    """Their weighted sum, added to the Faster R-CNN loss."""
    return jnp.float32(0.0)

  def extra_predictions(self, mdl, feats, dets: Detections):
    """Inference outputs on top of the detections (inside ``forward``); ``dets`` unchanged."""
    return dets

  # ---- state -----------------------------------------------------------------------------
  def _init_variables(self, rng):
    images = jnp.zeros((1, *self.image_size, 3), jnp.float32)
    rois = jnp.array([[[0.0, 0.0, 32.0, 32.0]]], jnp.float32)
    return self.model.init(rng, images, rois, train=False)

  def init(self, rng):
    c = self.config
    variables = self._init_variables(init_key(rng))
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    state = {"net": NetworkState.create(params=params, model_state=model_state,
                                        optimizer=self.optimizer)}
    if c.alwa.enabled:
      state["alwa"] = alwa.alwa_init(c.alwa.window, c.alwa.lambda_cls, c.alwa.lambda_reg)
      if c.alwa.roi_head:
        state["alwa_roi"] = alwa.alwa_init(c.alwa.window, c.alwa.lambda_cls, c.alwa.lambda_reg)
    return state

  def load_pretrained(self, state):
    """ImageNet backbone weights (``model.pretrained``); for C4 the file's res5
    (``backbone/stage4/...``) initialises the RoI head's ``res5``, as in detectron2."""
    path = self.config.model.pretrained
    if not path or self.config.model.design != "c4":
      return super().load_pretrained(state)
    import os
    import tempfile

    import numpy as np

    from jaxdet.models import weights
    from jaxdet.train import sharding as shard_lib
    if not os.path.exists(path):
      return super().load_pretrained(state)   # its error says how to get the file
    res5 = "backbone/stage4/"
    with np.load(path, allow_pickle=False) as f:
      arrays = {("res5/" + k[len(res5):] if k.startswith(res5) else k): f[k] for k in f.keys()}
    net: NetworkState = state["net"]
    variables = jax.device_get({"params": net.params, **net.model_state})
    with tempfile.TemporaryDirectory() as tmp:
      renamed = os.path.join(tmp, "c4.npz")
      np.savez(renamed, **arrays)
      for prefix in ("backbone", "res5"):
        variables = weights.load_backbone_weights(variables, renamed, prefix=prefix)
    variables = jax.device_put(variables, shard_lib.replicated(self.mesh))
    params = variables.pop("params")
    return {**state, "net": NetworkState.create(params=params, model_state=variables,
                                                optimizer=self.optimizer)}

  def anchors_for(self, size):
    """(RPN anchors [A, 4], level_slices) of a padded input ``size`` (H, W)."""
    m = self.config.model
    scales, ratios = tuple(m.anchor_scales), tuple(m.aspect_ratios)
    return (anchor_lib.generate_anchors(size, *self.levels, m.anchor_size, scales, ratios),
            tuple(anchor_lib.level_slices(size, *self.levels, self.num_per_loc)))

  # ---- losses ----------------------------------------------------------------------------
  def rpn_losses(self, objectness, deltas, batch, rng):
    """RPN objectness and box losses (§3.1.2 Eq. 1), normalised by the sampled anchors."""
    r = self.config.rpn
    b = objectness.shape[0]
    anchors = self.anchors_of(batch["images"])[0]
    keys = jax.random.split(rng, b)
    targets = jax.vmap(functools.partial(
        rpn.rpn_targets, positive_iou=r.positive_iou, negative_iou=r.negative_iou,
        batch_size_per_image=r.batch_size_per_image, positive_fraction=r.positive_fraction),
        in_axes=(None, 0, 0, 0))(anchors, batch["boxes"], batch["box_valid"], keys)
    box_targets = jax.vmap(rpn.rpn_box_targets, in_axes=(None, 0, 0))(
        anchors, batch["boxes"], targets)
    labels = targets.labels
    norm = float(b * r.batch_size_per_image)
    cls = jnp.sum(sigmoid_cross_entropy(objectness, labels.astype(jnp.float32))) / norm
    fg = (labels == 1).astype(jnp.float32)
    per = reg_loss.regression_loss("smooth_l1" if r.smooth_l1_beta > 0 else "l1", deltas,
                                   box_targets, anchors, beta=r.smooth_l1_beta)
    reg = jnp.sum(per * fg) / norm
    return cls, reg, jnp.sum(fg) / b

  def roi_losses(self, logits, deltas, sampled):
    """Box head: softmax CE over K + 1 (background last) and the class-specific regression of
    the fg RoIs; both divided by the number of sampled RoIs."""
    l = self.config.loss
    k = self.num_classes
    valid = sampled.valid.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(valid), 1.0)
    labels = jnp.where(sampled.valid, sampled.classes, -1)
    cls = jnp.sum(softmax_cross_entropy(logits, labels)) / n
    cls_idx = jnp.clip(sampled.classes, 0, k - 1)
    pred = jnp.take_along_axis(deltas, cls_idx[..., None, None], axis=2)[..., 0, :]
    weights = tuple(l.box_weights)
    target = box_ops.encode(sampled.matched_gt_boxes, sampled.boxes, weights)
    per = reg_loss.regression_loss(l.reg, pred, target, sampled.boxes, weights,
                                   beta=l.smooth_l1_beta)
    fg = (sampled.is_fg & sampled.valid).astype(jnp.float32)
    reg = jnp.sum(per * fg) / n
    return cls, reg, jnp.sum(fg) / logits.shape[0]

  def _proposals(self, objectness, deltas, image_hw, anchors, level_slices, train: bool):
    r = self.config.rpn
    return rpn.generate_proposals(
        objectness, deltas, anchors, level_slices, image_hw,
        pre_nms_topk=r.pre_nms_topk_train if train else r.pre_nms_topk_test,
        post_nms_topk=r.post_nms_topk_train if train else r.post_nms_topk_test,
        nms_iou=r.nms_iou, min_size=r.min_size, scale_clamp=SCALE_CLAMP)

  def train_step(self, state, batch, step, rng):
    c, h = self.config, self.config.roi_head
    net: NetworkState = state["net"]
    mutable = ["batch_stats"] if c.model.norm == "batch_norm" else False
    ones = (jnp.float32(1.0), jnp.float32(1.0))
    lam_rpn = alwa.alwa_weights(state["alwa"]) if "alwa" in state else ones
    lam_roi = alwa.alwa_weights(state["alwa_roi"]) if "alwa_roi" in state else ones

    def forward(mdl, images, batch, rpn_key, roi_key):
      feats = mdl.features(images, train=True)
      objectness, deltas = mdl.rpn(feats)
      rpn_cls, rpn_reg, rpn_fg = self.rpn_losses(objectness, deltas, batch, rpn_key)
      props = self._proposals(jax.lax.stop_gradient(objectness), jax.lax.stop_gradient(deltas),
                              batch["image_hw"], *self.anchors_of(images), train=True)
      width = props.boxes.shape[1]
      props_valid = jnp.arange(width)[None, :] < props.num_valid[:, None]
      keys = jax.random.split(roi_key, images.shape[0])
      sampled = jax.vmap(functools.partial(
          roi_sampling.sample_rois, num_classes=self.num_classes, num_samples=h.num_samples,
          positive_fraction=h.positive_fraction, fg_iou=h.fg_iou, bg_iou_high=h.fg_iou,
          bg_iou_low=h.bg_iou_low, append_gt=h.append_gt))(
              props.boxes, props_valid, batch["boxes"], batch["classes"], batch["box_valid"],
              keys)
      logits, box_deltas = mdl.box_head(feats, sampled.boxes, train=True)
      cls, reg, fg = self.roi_losses(logits, box_deltas, sampled)
      return {"rpn_cls": rpn_cls, "rpn_reg": rpn_reg, "cls_loss": cls, "reg_loss": reg,
              "rpn_fg": rpn_fg, "roi_fg": fg, "proposals": jnp.mean(props.num_valid),
              **self.extra_head_losses(mdl, feats, sampled, batch)}

    def loss_fn(params, batch, model_state, rng):
      args = (self.normalize(batch["images"]), batch, *jax.random.split(rng))
      variables = {"params": params, **model_state}
      if mutable:
        terms, new_model_state = self.model.apply(variables, *args, method=forward,
                                                  mutable=mutable)
      else:
        terms, new_model_state = self.model.apply(variables, *args, method=forward), {}
      rpn_w = c.rpn.loss_weight
      total = (lam_rpn[0] * rpn_w * terms["rpn_cls"] + lam_rpn[1] * rpn_w * terms["rpn_reg"]
               + lam_roi[0] * c.loss.cls_weight * terms["cls_loss"]
               + lam_roi[1] * c.loss.reg_weight * terms["reg_loss"]
               + self.extra_loss_total(terms))
      return total, (terms, {**model_state, **new_model_state})

    # Gradient accumulation (jaxdet.train.accumulate): micro-batch losses and terms averaged.
    # The RPN loss is divided by the static B x 256 sampled anchors and the box head's by the
    # sampled RoIs (B x 512 whenever every image fills its samples), so the mean over equal
    # micro-batches is the big batch's; micro-batch i samples with fold_in(rng, i). The mask
    # loss (mean over fg RoIs) is averaged per micro-batch.
    with backbone_remat(c.model.remat):
      (loss, (terms, new_model_state)), grads = accumulate.value_and_grad_accumulated(
          loss_fn, net.params, batch, c.train.accumulate_steps, carry=net.model_state, rng=rng,
          mesh=self.mesh)
    model_state = {**net.model_state, **new_model_state} if mutable else net.model_state
    new_state = {"net": net.apply_gradients(self.optimizer, grads, step, model_state=model_state)}
    kw = dict(statistic=c.alwa.statistic, record=c.alwa.record)
    if "alwa" in state:
      new_state["alwa"] = alwa.alwa_update(state["alwa"], c.rpn.loss_weight * terms["rpn_cls"],
                                           c.rpn.loss_weight * terms["rpn_reg"], **kw)
    if "alwa_roi" in state:
      new_state["alwa_roi"] = alwa.alwa_update(
          state["alwa_roi"], c.loss.cls_weight * terms["cls_loss"],
          c.loss.reg_weight * terms["reg_loss"], **kw)
    metrics = {"loss": loss, "lr": self.optimizer.schedule(step), **terms}
    if "alwa" in state:
      metrics["lambda_cls"], metrics["lambda_reg"] = lam_rpn
    return new_state, metrics

  # ---- inference --------------------------------------------------------------------------
  def predict_fn(self, net: NetworkState, images, image_hw):
    e, k = self.config.eval, self.num_classes

    def forward(mdl, x):
      feats = mdl.features(x, train=False)
      objectness, deltas = mdl.rpn(feats)
      props = self._proposals(objectness, deltas, image_hw, *self.anchors_of(x), train=False)
      logits, box_deltas = mdl.box_head(feats, props.boxes, train=False)
      dets = class_detections(props.boxes, props.num_valid, logits, box_deltas, image_hw,
                              box_weights=tuple(self.config.loss.box_weights),
                              score_threshold=e.score_threshold, nms_iou=e.nms_iou,
                              max_detections=e.max_detections, num_classes=k,
                              pre_nms_topk=e.pre_nms_topk)
      return self.extra_predictions(mdl, feats, dets)

    return self.model.apply({"params": net.params, **net.model_state}, self.normalize(images),
                            method=forward)


def class_detections(rois, num_valid, logits, deltas, image_hw, *, box_weights, score_threshold,
                     nms_iou, max_detections, num_classes, pre_nms_topk: int = 0) -> Detections:
  """Fast R-CNN inference (detectron2 ``fast_rcnn_inference``): every (RoI, class) pair with
  softmax score > ``score_threshold`` is a candidate with its class's decoded box (clipped to the
  image), per-class NMS, top ``max_detections``. Static shapes: ``[B, R x K]`` candidates; with
  ``pre_nms_topk`` > 0 only the best that many enter NMS (detectron2 has no such cap: it only
  matters when more candidates pass the score threshold)."""
  b, r = rois.shape[:2]
  k = num_classes
  scores = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :k]          # [B, R, K]
  valid = (jnp.arange(r)[None, :] < num_valid[:, None])[..., None] & (scores > score_threshold)
  scores = jnp.where(valid, scores, -jnp.inf)
  deltas = deltas.astype(jnp.float32)
  if 0 < pre_nms_topk < r * k:
    # The best pre_nms_topk (RoI, class) pairs, exactly lax.top_k's over all R x K (ties to the
    # lower index), then only their boxes are decoded.
    scores, flat = postprocess.top_k_pairs(scores, int(pre_nms_topk))
    roi, classes = flat // k, (flat % k).astype(jnp.int32)
    rois = jnp.take_along_axis(rois, roi[..., None], axis=1)                   # [B, T, 4]
    deltas = jnp.take_along_axis(deltas.reshape(b, r * k, 4), flat[..., None], axis=1)
  else:
    classes = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, r, k)).reshape(b, r * k)
    rois = jnp.broadcast_to(rois[:, :, None, :], (b, r, k, 4)).reshape(b, r * k, 4)
    scores, deltas = scores.reshape(b, r * k), deltas.reshape(b, r * k, 4)
  boxes = box_ops.decode(deltas, rois, box_weights, clamp=SCALE_CLAMP)
  boxes = box_ops.clip(boxes, image_hw[:, 0, None].astype(jnp.float32),
                       image_hw[:, 1, None].astype(jnp.float32))

  def one_image(bx, s, cl):
    idx, keep = nms_ops.batched_nms(bx, s, cl, iou_threshold=nms_iou,
                                    max_output=int(max_detections))
    keep = keep & jnp.isfinite(s[idx])
    return (jnp.where(keep[:, None], bx[idx], 0.0), jnp.where(keep, s[idx], 0.0),
            jnp.where(keep, cl[idx], 0), jnp.sum(keep).astype(jnp.int32))

  out_boxes, out_scores, out_classes, n = jax.vmap(one_image)(boxes, scores, classes)
  return Detections(boxes=out_boxes, scores=out_scores, classes=out_classes.astype(jnp.int32),
                    num_valid=n)
