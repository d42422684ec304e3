"""The RetinaNet family as an experiment: model, anchors, loss, train step, inference.

One recipe covers the one-stage methods of jaxdet, switched by config:
focal / AP / AUC / CE+OHEM classification (``config.loss.cls``), any box
regression loss (``config.loss.reg``), consistent optimization
(``config.consistent``) and ALWA loss weights (``config.alwa``). Data, evaluation,
predict and robustness come from ``DetectionExperiment``.

State: ``{"net": NetworkState}`` plus ``{"alwa": AlwaState}`` when ALWA is on.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdet.experiments.detection import DTYPES, DetectionExperiment
from jaxdet.losses import detection as det_loss
from jaxdet.losses import weighting as alwa
from jaxdet.models.resnet import backbone_remat, frozen_param_labels, parse_remat
from jaxdet.models.retinanet import RetinaNet
from jaxdet.ops import anchors as anchor_lib
from jaxdet.ops import postprocess
from jaxdet.train import accumulate, optim
from jaxdet.train.config_check import checked
from jaxdet.train.state import NetworkState, init_key


class RetinaNetExperiment(DetectionExperiment):
  name = "retinanet"

  def __init__(self, config, mesh, **kwargs):
    super().__init__(config, mesh, **kwargs)
    c = config
    self.num_per_loc = self.anchors_per_location()
    # Each image shape gets its own anchors (model weights are size-agnostic): the step takes
    # them from its batch's padded shape (``anchors_of``), one set per aspect-ratio bucket.
    self.anchors, self.level_slices = self.anchors_of_size(self.image_size)
    self.eval_anchors, self.eval_level_slices = self.anchors_of_size(self.eval_image_size)
    # Training-memory keys, checked here (at construction) rather than at the first compile.
    checked("config.model.remat", parse_remat, c.model.remat)
    accumulate.check_accumulate_steps(c.train.batch_size, c.train.accumulate_steps, self.mesh)
    self.model = self._make_model()
    abstract = jax.eval_shape(
        functools.partial(self.model.init, train=False), jax.random.PRNGKey(0),
        jnp.zeros((1, *self.image_size, 3), jnp.float32))
    labels = frozen_param_labels(abstract["params"], c.model.frozen_stages)
    self.optimizer = optim.make_optimizer(c.optim, c.train.batch_size, labels)
    if c.alwa.enabled:
      self.progress_metrics = (*self.progress_metrics, "lambda_cls", "lambda_reg")

  def anchors_per_location(self):
    """Anchors at each location of a level (the head's K)."""
    m = self.config.model
    return anchor_lib.num_anchors_per_location(tuple(m.anchor_scales), tuple(m.aspect_ratios))

  def anchors_for(self, size):
    """(anchors [A, 4] float32 xyxy, level_slices) of an input of ``size`` (H, W)."""
    m = self.config.model
    return (anchor_lib.generate_anchors(size, m.min_level, m.max_level, m.anchor_size,
                                        tuple(m.anchor_scales), tuple(m.aspect_ratios)),
            anchor_lib.level_slices(size, m.min_level, m.max_level, self.num_per_loc))

  def head_classes(self) -> int:
    """Class channels of the head: CE + OHEM is a softmax over C + 1 channels with background
    at 0 (SSD style); the sigmoid losses have C."""
    return self.num_classes + (1 if self.config.loss.cls == "ce_ohem" else 0)

  # ---- model -----------------------------------------------------------------
  def _make_model(self):
    m, k = self.config.model, self.config.consistent
    kwargs = dict(
        num_classes=self.head_classes(), num_anchors=self.num_per_loc, depth=m.depth,
        width=m.width, norm=m.norm, frozen_stages=m.frozen_stages,
        min_level=m.min_level, max_level=m.max_level, fpn_filters=m.fpn_filters,
        head_convs=m.head_convs, head_filters=m.head_filters,
        head_norm=m.head_norm or None, prior_prob=m.prior_prob, dtype=DTYPES[m.dtype])
    if k.enabled:
      from jaxdet.losses.consistent import check_config
      from jaxdet.models.conretinanet import ConRetinaNet
      check_config(k)  # normaliser / inference_stages fail here, not at the first compile
      return ConRetinaNet(**kwargs, variant=k.variant, cls_stages=k.cls_stages,
                          reg_stages=k.reg_stages)
    return RetinaNet(**kwargs)

  # ---- state -----------------------------------------------------------------
  def init(self, rng):
    c = self.config
    dummy = jnp.zeros((1, *self.image_size, 3), jnp.float32)
    variables = self.model.init(init_key(rng), dummy, train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    state = {"net": NetworkState.create(params=params, model_state=model_state,
                                        optimizer=self.optimizer)}
    if c.alwa.enabled:
      state["alwa"] = alwa.alwa_init(c.alwa.window, c.alwa.lambda_cls, c.alwa.lambda_reg)
    return state

  # ---- training ----------------------------------------------------------------
  def _targets(self, batch, anchors=None):
    l = self.config.loss
    return det_loss.anchor_targets(
        self.anchors_of(batch["images"])[0] if anchors is None else anchors, batch["boxes"],
        batch["classes"],
        batch["box_valid"], num_classes=self.num_classes, positive_iou=l.positive_iou,
        negative_iou=l.negative_iou, allow_low_quality=l.allow_low_quality,
        low_quality_rematch=l.low_quality_rematch, box_weights=tuple(l.box_weights))

  def losses(self, outputs, batch):
    """Returns dict of unweighted loss terms (scalars) for one batch (``batch['images']`` only
    gives the padded size, hence the anchors)."""
    l = self.config.loss
    anchors = self.anchors_of(batch["images"])[0]
    targets = self._targets(batch, anchors)
    num_pos = det_loss.num_positives(targets)
    cls = det_loss.classification_loss(l, outputs["cls_logits"], targets, num_pos,
                                       mesh=self.mesh)
    reg = det_loss.box_regression_loss(l, outputs["box_deltas"], anchors, targets, num_pos)
    terms = {"cls_loss": cls, "reg_loss": reg, "num_pos": num_pos}
    if self.config.consistent.enabled:
      from jaxdet.losses import consistent
      terms.update(consistent.consistent_terms(
          outputs, anchors, batch["boxes"], batch["classes"], batch["box_valid"], targets,
          l, self.config.consistent, self.num_classes, mesh=self.mesh))
    return terms

  def train_step(self, state, batch, step, rng):
    c = self.config
    net: NetworkState = state["net"]
    mutable = ["batch_stats"] if c.model.norm == "batch_norm" else False
    alwa_state = state.get("alwa")
    lam_cls, lam_reg = (alwa.alwa_weights(alwa_state) if alwa_state is not None
                        else (jnp.float32(1.0), jnp.float32(1.0)))
    k = c.train.accumulate_steps
    # Gradient accumulation (jaxdet.train.accumulate). Focal and box losses are S / N_pos with
    # S summed over the anchors and N_pos the positives of the WHOLE batch: each micro-batch
    # returns its S_i (= its loss x its own N_pos) and its positive count, and the sums are
    # divided by N_pos = max(sum of counts, 1) after the scan, so k micro-batches give the big
    # batch's loss and gradient. AP/AUC, OHEM and consistent terms normalise (or rank) inside
    # each micro-batch: their micro-batch losses are averaged.
    exact = k > 1 and c.loss.cls == "focal" and not c.consistent.enabled

    def loss_fn(params, batch, model_state, rng):
      del rng  # no stochastic layers; augmentation randomness lives in the loader
      images = self.normalize(batch["images"])
      variables = {"params": params, **model_state}
      if mutable:
        outputs, new_model_state = self.model.apply(variables, images, train=True,
                                                    mutable=mutable)
      else:
        outputs, new_model_state = self.model.apply(variables, images, train=True), {}
      terms = self.losses(outputs, batch)
      cls_total = c.loss.cls_weight * (terms["cls_loss"] + terms.get("cls_loss_refined", 0.0))
      reg_total = c.loss.reg_weight * (terms["reg_loss"] + terms.get("reg_loss_refined", 0.0))
      total = lam_cls * cls_total + lam_reg * reg_total
      terms = dict(terms, cls_total=cls_total, reg_total=reg_total)
      if exact:  # un-normalised sums S_i; num_pos is max(count, 1), the divisor of S_i
        n = jax.lax.stop_gradient(terms["num_pos"])
        total = total * n
        terms = {name: v if name == "num_pos" else v * n for name, v in terms.items()}
        terms["pos_count"] = jnp.sum(self._targets(batch).state == 1).astype(jnp.float32)
      return total, (terms, {**model_state, **new_model_state})

    def batch_positives(terms):
      return jnp.maximum(jnp.sum(terms["pos_count"]), 1.0)

    with backbone_remat(c.model.remat):
      (loss, (terms, new_model_state)), grads = accumulate.value_and_grad_accumulated(
          loss_fn, net.params, batch, k, carry=net.model_state, rng=rng, mesh=self.mesh,
          normalizer=batch_positives if exact else None, aux_reduce="stack")
    if exact:
      num_pos = batch_positives(terms)
      terms = {name: jnp.sum(v) / num_pos for name, v in terms.items()
               if name not in ("num_pos", "pos_count")}
      terms["num_pos"] = num_pos
    else:  # k = 1: the values themselves; else the micro-batch mean (positive counts: their sum)
      terms = {name: jnp.sum(v) if name.startswith("num_pos") else jnp.mean(v)
               for name, v in terms.items()}
    model_state = {**net.model_state, **new_model_state} if mutable else net.model_state
    new_state = {"net": net.apply_gradients(self.optimizer, grads, step, model_state=model_state)}
    if alwa_state is not None:
      new_state["alwa"] = alwa.alwa_update(alwa_state, terms["cls_total"], terms["reg_total"],
                                           statistic=c.alwa.statistic, record=c.alwa.record)
    metrics = {"loss": loss, "lr": self.optimizer.schedule(step),
               **{k: v for k, v in terms.items() if k not in ("cls_total", "reg_total")}}
    if alwa_state is not None:
      metrics["lambda_cls"], metrics["lambda_reg"] = lam_cls, lam_reg
    return new_state, metrics

  # ---- inference ----------------------------------------------------------------
  def detection_inputs(self, net: NetworkState, images):
    """``generate_detections``' inputs from uint8 ``images``: (scores as logits [B, A, C],
    deltas [B, A, 4], anchors, level_slices) -- the network and what is applied to its outputs
    before the candidate selection (the benchmark's profile times the two parts separately)."""
    outputs = self.model.apply({"params": net.params, **net.model_state},
                               self.normalize(images), train=False)
    anchors, level_slices = self.anchors_of(images)
    logits, deltas = outputs["cls_logits"], outputs["box_deltas"]
    if self.config.consistent.enabled:  # inference_stages regressions, last class stage scores
      from jaxdet.losses import consistent
      anchors, deltas = consistent.refine_for_inference(
          outputs, anchors, tuple(self.config.loss.box_weights),
          reg_stages=consistent.inference_stages(self.config.consistent))
      logits = consistent.inference_logits(outputs)
    if self.config.loss.cls == "ce_ohem":
      # Softmax probabilities of the C foreground classes, written as logits so that
      # the sigmoid inside generate_detections returns them unchanged.
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]
      probs = jnp.clip(probs, 1e-12, 1 - 1e-7)
      logits = jnp.log(probs) - jnp.log1p(-probs)
    return logits, deltas, anchors, level_slices

  def predict_fn(self, net: NetworkState, images, image_hw):
    e = self.config.eval
    return postprocess.generate_detections(
        *self.detection_inputs(net, images), image_hw,
        box_weights=tuple(self.config.loss.box_weights), score_threshold=e.score_threshold,
        pre_nms_topk=e.pre_nms_topk, nms_iou=e.nms_iou, max_detections=e.max_detections)
