"""The RetinaNet family as an experiment: model, anchors, loss, train/eval steps.

One recipe covers the one-stage methods of jaxdet, switched by config:
focal / AP / AUC / CE+OHEM classification (``config.loss.cls``), any box
regression loss (``config.loss.reg``), consistent optimization
(``config.consistent``) and ALWA loss weights (``config.alwa``).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.data import factory
from jaxdet.data.loader import DetectionLoader
from jaxdet.evaluation import coco as coco_eval
from jaxdet.losses import detection as det_loss
from jaxdet.losses import weighting as alwa
from jaxdet.models.resnet import frozen_param_labels
from jaxdet.models.retinanet import RetinaNet
from jaxdet.ops import anchors as anchor_lib
from jaxdet.ops import postprocess
from jaxdet.train import optim
from jaxdet.train import sharding as shard_lib
from jaxdet.train.state import TrainState

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class RetinaNetExperiment:

  def __init__(self, config, mesh, train_source=None):
    """``train_source`` overrides config.data (benchmarks, notebooks)."""
    self.config = config
    self.mesh = mesh
    c = config
    if c.model.dtype not in DTYPES:
      raise ValueError(f"config.model.dtype={c.model.dtype!r}: use one of {sorted(DTYPES)}.")
    self.train_source = train_source or factory.make_source(c.data, "train")
    self._val_source = None
    self.num_classes = self.train_source.num_classes
    self.image_size = tuple(int(s) for s in c.data.image_size)
    d = c.data
    # Evaluation may use another resize/pad than training (AP-loss: 512x512 train, short
    # side 600 test); each shape gets its own anchors (model weights are size-agnostic).
    self.eval_image_size = tuple(int(s) for s in d.eval_image_size) or self.image_size
    self.eval_resize = (d.eval_short_side or d.short_side, d.eval_max_side or d.max_side)
    scales, ratios = tuple(c.model.anchor_scales), tuple(c.model.aspect_ratios)
    self.num_per_loc = anchor_lib.num_anchors_per_location(scales, ratios)

    def anchors_for(size):
      return (anchor_lib.generate_anchors(size, c.model.min_level, c.model.max_level,
                                          c.model.anchor_size, scales, ratios),
              anchor_lib.level_slices(size, c.model.min_level, c.model.max_level,
                                      self.num_per_loc))

    self.anchors, self.level_slices = anchors_for(self.image_size)
    self.eval_anchors, self.eval_level_slices = anchors_for(self.eval_image_size)
    self.local_batch = shard_lib.check_global_batch_size(c.train.batch_size, mesh)
    self.model = self._make_model()
    abstract = jax.eval_shape(
        functools.partial(self.model.init, train=False), jax.random.PRNGKey(0),
        jnp.zeros((1, *self.image_size, 3), jnp.float32))
    labels = frozen_param_labels(abstract["params"], c.model.frozen_stages)
    self.tx, self.schedule = optim.make_optimizer(c.optim, c.train.batch_size, labels)
    self._predict = jax.jit(self._predict_fn)
    mean = np.asarray(c.data.pixel_mean, np.float32) * 255.0
    std = np.asarray(c.data.pixel_std, np.float32) * 255.0
    self._mean, self._std = mean, std

  # ---- model -----------------------------------------------------------------
  def _make_model(self):
    m, k = self.config.model, self.config.consistent
    # CE + OHEM is a softmax over C + 1 channels with background at 0 (SSD style).
    head_classes = self.num_classes + (1 if self.config.loss.cls == "ce_ohem" else 0)
    kwargs = dict(
        num_classes=head_classes, num_anchors=self.num_per_loc, depth=m.depth,
        width=m.width, norm=m.norm, frozen_stages=m.frozen_stages,
        min_level=m.min_level, max_level=m.max_level, fpn_filters=m.fpn_filters,
        head_convs=m.head_convs, head_filters=m.head_filters,
        head_norm=m.head_norm or None, prior_prob=m.prior_prob, dtype=DTYPES[m.dtype])
    if k.enabled:
      from jaxdet.models.conretinanet import ConRetinaNet
      return ConRetinaNet(**kwargs, variant=k.variant, cls_stages=k.cls_stages,
                          reg_stages=k.reg_stages)
    return RetinaNet(**kwargs)

  def normalize(self, images_uint8):
    return (images_uint8.astype(jnp.float32) - self._mean) / self._std

  @property
  def val_source(self):
    if self._val_source is None:
      self._val_source = factory.make_source(self.config.data, "val")
      if self.config.eval.max_images > 0:
        self._val_source = factory.Subset(self._val_source, self.config.eval.max_images)
    return self._val_source

  # ---- state -----------------------------------------------------------------
  def init(self, rng):
    c = self.config
    dummy = jnp.zeros((1, *self.image_size, 3), jnp.float32)
    # The RBG generator compiles the initializers of a deep model ~5x faster on CPU
    # than threefry; init is replicated, so its sharding behaviour does not matter.
    init_key = jax.random.wrap_key_data(jnp.concatenate([rng, rng]), impl="rbg")
    variables = self.model.init(init_key, dummy, train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    extra = {}
    if c.alwa.enabled:
      extra["alwa"] = alwa.alwa_init(c.alwa.window, c.alwa.lambda_cls, c.alwa.lambda_reg)
    return TrainState.create(params=params, model_state=model_state, tx=self.tx,
                             rng=jax.random.fold_in(rng, 1), extra=extra)

  def load_pretrained(self, state: TrainState) -> TrainState:
    """Loads config.model.pretrained (an .npz of backbone weights) into fresh params."""
    path = self.config.model.pretrained
    if not path:
      return state
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"config.model.pretrained={path!r} does not exist. Convert ImageNet weights to .npz "
          f"(see jaxdet.models.weights) or set --config.model.pretrained='' to train from scratch.")
    from jaxdet.models import weights
    variables = {"params": state.params, **state.model_state}
    variables = weights.load_backbone_weights(jax.device_get(variables), path)
    variables = jax.device_put(variables, shard_lib.replicated(self.mesh))
    params = variables.pop("params")
    return state.replace(params=params, model_state=variables, opt_state=self.tx.init(params))

  # ---- training ----------------------------------------------------------------
  def _targets(self, batch, anchors=None):
    l = self.config.loss
    return det_loss.anchor_targets(
        self.anchors if anchors is None else anchors, batch["boxes"], batch["classes"],
        batch["box_valid"], num_classes=self.num_classes, positive_iou=l.positive_iou,
        negative_iou=l.negative_iou, allow_low_quality=l.allow_low_quality,
        box_weights=tuple(l.box_weights))

  def losses(self, outputs, batch):
    """Returns dict of unweighted loss terms (scalars) for one batch."""
    l = self.config.loss
    targets = self._targets(batch)
    num_pos = det_loss.num_positives(targets)
    cls = det_loss.classification_loss(l, outputs["cls_logits"], targets, num_pos,
                                       mesh=self.mesh)
    reg = det_loss.box_regression_loss(l, outputs["box_deltas"], self.anchors, targets, num_pos)
    terms = {"cls_loss": cls, "reg_loss": reg, "num_pos": num_pos}
    if self.config.consistent.enabled:
      from jaxdet.losses import consistent
      terms.update(consistent.consistent_terms(
          outputs, self.anchors, batch["boxes"], batch["classes"], batch["box_valid"], targets,
          l, self.config.consistent, self.num_classes, mesh=self.mesh))
    return terms

  def train_step(self, state: TrainState, batch):
    c = self.config
    images = self.normalize(batch["images"])
    mutable = ["batch_stats"] if c.model.norm == "batch_norm" else False
    alwa_state = state.extra.get("alwa")
    lam_cls, lam_reg = (alwa.alwa_weights(alwa_state) if alwa_state is not None
                        else (jnp.float32(1.0), jnp.float32(1.0)))

    def loss_fn(params):
      variables = {"params": params, **state.model_state}
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
      return total, (terms, new_model_state)

    (loss, (terms, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    extra = dict(state.extra)
    if alwa_state is not None:
      extra["alwa"] = alwa.alwa_update(alwa_state, terms["cls_total"], terms["reg_total"],
                                       statistic=c.alwa.statistic, record=c.alwa.record)
    model_state = {**state.model_state, **new_model_state} if mutable else state.model_state
    new_state = state.apply_gradients(self.tx, grads, loss=loss, model_state=model_state, extra=extra)
    metrics = {"loss": loss, "lr": self.schedule(state.step),
               **{k: v for k, v in terms.items() if k not in ("cls_total", "reg_total")}}
    if alwa_state is not None:
      metrics["lambda_cls"], metrics["lambda_reg"] = lam_cls, lam_reg
    return new_state, metrics

  def train_batches(self, start_step: int):
    d = self.config.data
    return iter(DetectionLoader(
        self.train_source, batch_size=self.local_batch, image_size=self.image_size,
        short_side=d.short_side, max_side=d.max_side, max_boxes=d.max_boxes, train=True,
        seed=self.config.seed, hflip=d.hflip, scale_jitter=tuple(d.scale_jitter),
        num_workers=d.num_workers, process_index=jax.process_index(),
        process_count=jax.process_count(), start_step=start_step))

  # ---- inference ----------------------------------------------------------------
  def _predict_fn(self, params, model_state, images, image_hw):
    e = self.config.eval
    outputs = self.model.apply({"params": params, **model_state}, self.normalize(images),
                               train=False)
    logits, deltas, anchors = outputs["cls_logits"], outputs["box_deltas"], self.eval_anchors
    if self.config.consistent.enabled:  # regression applied twice, scores of the last stage
      from jaxdet.losses import consistent
      anchors, deltas = consistent.refine_for_inference(
          outputs, self.eval_anchors, tuple(self.config.loss.box_weights))
      logits = consistent.inference_logits(outputs)
    if self.config.loss.cls == "ce_ohem":
      # Softmax probabilities of the C foreground classes, written as logits so that
      # the sigmoid inside generate_detections returns them unchanged.
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]
      probs = jnp.clip(probs, 1e-12, 1 - 1e-7)
      logits = jnp.log(probs) - jnp.log1p(-probs)
    return postprocess.generate_detections(
        logits, deltas, anchors, self.eval_level_slices, image_hw,
        box_weights=tuple(self.config.loss.box_weights), score_threshold=e.score_threshold,
        pre_nms_topk=e.pre_nms_topk, nms_iou=e.nms_iou, max_detections=e.max_detections)

  def eval_batches(self, source=None, batch_size=None, transform=None):
    d = self.config.data
    bs = batch_size or self.config.eval.batch_size
    return DetectionLoader(
        source or self.val_source, batch_size=max(bs // jax.process_count(), 1),
        image_size=self.eval_image_size, short_side=self.eval_resize[0],
        max_side=self.eval_resize[1], max_boxes=d.max_boxes, train=False, seed=self.config.seed, hflip=False,
        scale_jitter=(1.0, 1.0), num_workers=d.num_workers,
        process_index=jax.process_index(), process_count=jax.process_count(),
        image_transform=transform)

  def detect(self, state, loader):
    """Runs the detector over ``loader``; returns COCO-style results (original coords)."""
    results = []
    source = loader.source
    for local in loader:
      batch = shard_lib.to_global({"images": local["images"], "image_hw": local["image_hw"]},
                                  self.mesh)
      dets = self._predict(state.params, state.model_state, batch["images"], batch["image_hw"])
      dets = shard_lib.to_host(dets)
      host = shard_lib.to_host({k: local[k] for k in ("image_id", "scale", "example_valid")})
      keep = host["example_valid"]
      boxes = dets.boxes / host["scale"][:, None, None]
      results += coco_eval.detections_to_coco(
          host["image_id"][keep], boxes[keep], dets.scores[keep], dets.classes[keep],
          dets.num_valid[keep], source.category_ids)
    return results

  def evaluate(self, state, *, workdir: str, step: int, transform=None,
               tag: str = "") -> dict:
    c = self.config
    loader = self.eval_batches(transform=transform)
    results = self.detect(state, loader)
    metrics = {}
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      result_file = os.path.join(workdir, f"detections{tag}_step{step}.json")
      gt = self.val_source.coco
      metrics = coco_eval.evaluate_coco(gt, results, result_file=result_file,
                                        image_ids=self.val_source.image_ids)
      if c.eval.voc_metrics:
        from jaxdet.evaluation import voc
        for use07, name in ((True, "mAP50_voc07"), (False, "mAP50_area")):
          metrics[name] = voc.evaluate_voc_from_coco(
              gt, results, use_07_metric=use07, image_ids=self.val_source.image_ids)["mAP"]
    return metrics
