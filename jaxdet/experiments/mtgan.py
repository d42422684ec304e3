"""MTGAN (Zhang et al., "Multi-task GAN for small object detection") on any trained jaxdet
detector: a super-resolution generator and a multi-task discriminator on the baseline's RoIs.

Pipeline (§3, Fig. 2):

1. **Baseline.** ``config.mtgan.baseline_workdir`` is a finished detector run (RetinaNet now;
   Faster R-CNN R50-C4 as in the paper once it exists), rebuilt read-only with
   ``load_trained``; its config names the dataset.
2. **Mining** (``--mode=mine``, and automatically at the start of ``--mode=train`` when crops
   are missing): the baseline's detections on the train split (top
   ``mtgan.mine_rois_per_image``, plus the ground-truth boxes when ``mtgan.mine_add_gt``) are
   labelled (positive IoU >= 0.5 with class and regression target v, background < 0.35),
   sampled (``mtgan.rois_per_image``, ``mtgan.positive_fraction``) and cropped: HR = the RoI
   resized to 64 x 64, LR = HR downsampled x4 with bicubic interpolation (§4.2). Crops go to
   npz shards in ``mtgan.crops_dir``; a killed mining run resumes at the first unfinished image.
3. **Training** alternates within each jitted loop step: D minimises Eq. 11 on HR and SR crops,
   then G minimises Eq. 10 against the updated D; the first ``mtgan.pretrain_steps`` steps train
   G with the pixel MSE only and leave D bit-identical (§3.1 "pre-trained with MSE"). Two optax
   states: Adam for G (``optim_G``), SGD for D (``optim_D``); each update touches one network.
   (One step holds both updates instead of a ``lax.switch`` between them: XLA:CPU ran the
   convolutions inside the conditional's branches ~10x slower.)
4. **Inference** (``--mode=eval``, ``jaxdet.experiments.mtgan_inference``): the baseline's top
   ``mtgan.test_rois`` RoIs per val image (100 on COCO, 600 on WIDER FACE, §4.2) -> LR crops ->
   G -> D -> class scores (softmax over K + 1) and the RoI refined by D's regression -> per-class
   NMS -> the baseline's evaluation protocol (COCO AP, or WIDER FACE easy / medium / hard AP with
   the predictions in the official layout). ``mtgan.ensemble`` multiplies the score of the
   baseline's class by the baseline's score (Table 6). The baseline's own detections of the same
   RoIs are evaluated alongside (``baseline_AP``...), so one evaluation compares both.
5. **Table 9** (``--mode=accuracy``): Pos. / Neg. / All classification accuracy of the baseline,
   this run and ``mtgan.compare_runs`` on the baseline's val RoIs.

Ablations by config (Tables 3-5): ``mtgan.sr = 'bilinear'`` is SBU (LR upsampled x4 bilinearly
instead of by G; only D trains); ``mtgan.sr = 'none'`` with ``mtgan.hr_size = 224`` and no
adversarial branch is the plain R-CNN of Table 3 (D on the resized proposals); D without the
adversarial / regression branch: ``discriminator.adv_branch`` / ``reg_branch``; G without its
adv / cls / reg terms: ``loss.use_adv`` / ``use_cls`` / ``use_reg``. Pixels enter both networks
in [-1, 1] (G ends in tanh).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet.data import crop_shards, roi_crops
from jaxdet.data.factory import Subset
from jaxdet.experiments import detection_eval
from jaxdet.experiments import mtgan_inference as inference
from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import loop_defaults, optim_group
from jaxdet.losses import mtgan as mtgan_loss
from jaxdet.models import mtgan as mtgan_models
from jaxdet.train import optim
from jaxdet.train import sharding as shard_lib
from jaxdet.train.config_check import ConfigError
from jaxdet.train.state import NetworkState, init_key


def mtgan_defaults() -> ml_collections.ConfigDict:
  """Every key of ``experiment='mtgan'`` (COCO recipe of §4.2 unless noted)."""
  c = loop_defaults()
  c.experiment = "mtgan"
  c.train.batch_size = 64          # RoI crops per loop step
  c.train.num_steps = 80_000       # §4.2 COCO: 80k iterations
  c.train.eval_every = 20_000

  c.mtgan = m = ml_collections.ConfigDict()
  m.baseline_workdir = ""          # a finished jaxdet detector run (required)
  m.baseline_config = ""           # the config that trains it (named in the missing-run error)
  m.crops_dir = ""                 # '' -> <workdir>/crops
  m.mine_rois_per_image = 100      # baseline detections per train image considered for mining
  m.mine_score_threshold = 0.0     # baseline score threshold while mining
  m.mine_add_gt = True             # ground-truth boxes join the RoIs (as Fast R-CNN proposals)
  m.rois_per_image = 64            # crops kept per train image
  m.positive_fraction = 0.25
  m.positive_iou = 0.5             # §4.5 / Table 9
  m.negative_iou = 0.35
  m.hr_size = 64                   # §3.2: 64 x 64 HR RoIs
  m.scale = 4                      # LR = HR / 4 (bicubic, §4.2)
  m.box_weights = (10.0, 10.0, 5.0, 5.0)  # regression target v (Fast R-CNN weights)
  m.sr = "gan"                     # D's input: gan = G(LR) | bilinear = LR x4 (SBU, Table 4) |
                                   # none = the HR crop (plain R-CNN of Table 3, hr_size 224)
  m.pretrain_steps = 0             # loop steps of G with the pixel MSE only (§3.1)
  m.test_rois = 100                # §4.2: 100 RoIs per COCO test image (WIDER FACE: 600)
  m.test_score_threshold = 0.0     # baseline score a test RoI needs (0: the top test_rois)
  m.ensemble = False               # Table 6: MTGAN score x baseline score
  m.accuracy_baseline_threshold = 0.5  # --mode=accuracy (Table 9): baseline score below which
                                   # its RoI counts as called background
  m.compare_runs = ()              # --mode=accuracy: other finished MTGAN runs (same baseline),
                                   # e.g. the SBU run, printed as more rows of Table 9
  m.hflip = True                   # random horizontal flip of the crops (train)
  m.num_workers = 2

  c.generator = g = ml_collections.ConfigDict()
  g.features = 64                  # Table 1
  g.up_features = 256
  g.num_blocks = 5
  c.discriminator = d = ml_collections.ConfigDict()
  d.depth = 50                     # ResNet-50 (101 in the paper's larger setting)
  d.width = 64
  d.norm = "group_norm"            # frozen_bn | batch_norm | group_norm
  d.adv_branch = True              # Table 3: 'without adversarial branch' = False
  d.reg_branch = True              # Table 3: 'without regression branch' = False
  d.pretrained = ""                # .npz of ResNet weights (jaxdet.models.weights)

  c.loss = l = ml_collections.ConfigDict()
  l.alpha = 0.001                  # §4.2
  l.beta = 0.01
  l.gamma = 0.01
  l.use_adv = True                 # G's terms (Table 5 ablations)
  l.use_cls = True
  l.use_reg = True
  l.use_mse = True
  l.adversarial = "paper"          # paper (Eq. 10) | non_saturating

  common = dict(base_batch=64, warmup_steps=0, warmup_factor=1.0)
  c.optim_G = optim_group(name="adam", base_lr=1e-4, weight_decay=0.0, decay_steps=(), **common)
  c.optim_D = optim_group(name="sgd", base_lr=0.01, weight_decay=1e-4, decay_steps=(40_000,),
                          **common)

  c.eval = e = ml_collections.ConfigDict()
  e.batch_size = 8                 # val images per baseline batch
  e.crop_batch = 256               # RoI crops per G/D batch
  e.score_threshold = 0.05
  e.nms_iou = 0.5
  e.max_detections = 100
  e.max_images = 0                 # 0 = whole val split
  e.log_images = 8                 # LR | SR | HR crops drawn after each evaluation
  e.protocol = ""                  # '' = the baseline's | coco | wider_face (easy/medium/hard AP,
                                   # predictions also written in the official layout)
  e.wider_face_gt_dir = ""         # '' = the baseline's; official eval_tools/ground_truth folder
  return c


ABLATIONS = ("sbu", "rcnn", "d_no_adv", "d_no_reg", "g_no_adv", "g_no_cls", "g_no_reg", "ensemble")


def apply_ablations(c: ml_collections.ConfigDict, variants) -> None:
  """The paper's ablations as config variants (the names in ``ABLATIONS``; others are ignored):
  ``sbu`` (Table 4), ``rcnn`` (plain R-CNN, Table 3: D without adversarial branch on 224 x 224
  resized proposals), ``d_no_adv`` / ``d_no_reg`` (D without that branch, Tables 3 and 5),
  ``g_no_adv`` / ``g_no_cls`` / ``g_no_reg`` (G without that loss term, Table 5), ``ensemble``
  (Table 6)."""
  variants = set(variants)
  if "sbu" in variants and "rcnn" in variants:
    raise ValueError("variants 'sbu' and 'rcnn' are two different ablations: pick one.")
  if "sbu" in variants:
    c.mtgan.sr = "bilinear"
  if "rcnn" in variants:
    c.mtgan.sr, c.mtgan.hr_size, c.mtgan.pretrain_steps = "none", 224, 0
  if "rcnn" in variants or "d_no_adv" in variants:
    c.discriminator.adv_branch, c.loss.use_adv = False, False
  if "d_no_reg" in variants:
    c.discriminator.reg_branch, c.loss.use_reg = False, False
  for term in ("adv", "cls", "reg"):
    if f"g_no_{term}" in variants:
      c.loss[f"use_{term}"] = False
  if "ensemble" in variants:
    c.mtgan.ensemble = True


def _to_pixels(x_uint8):
  return x_uint8.astype(jnp.float32) / 127.5 - 1.0


class MTGANExperiment(Experiment):
  name = "mtgan"
  progress_metrics = ("loss_G", "loss_D", "mse", "lr_G")

  def __init__(self, config, mesh, *, metadata=None):
    super().__init__(config, mesh)
    c, m = config, config.mtgan
    if m.sr not in ("gan", "bilinear", "none"):
      raise ConfigError(f"config.mtgan.sr={m.sr!r}: use 'gan', 'bilinear' (SBU) or 'none' "
                        f"(plain R-CNN).")
    if m.sr == "none" and c.discriminator.adv_branch:
      raise ConfigError("config.mtgan.sr='none' (plain R-CNN, Table 3) has no generated images "
                        "for an adversarial branch: set --config.discriminator.adv_branch=False.")
    if c.eval.protocol not in ("", "coco", "wider_face"):
      raise ConfigError(f"config.eval.protocol={c.eval.protocol!r}: use '' (the baseline's), "
                        f"'coco' or 'wider_face'.")
    if not m.baseline_workdir:
      raise ConfigError("config.mtgan.baseline_workdir is empty: train a detector first, e.g. "
                        "python -m jaxdet.main --config=configs/demo.py --workdir=runs/demo, and "
                        "set --config.mtgan.baseline_workdir=runs/demo.")
    self._baseline = None
    self._detectors = {}
    self._metadata = dict(metadata or {})
    if "categories" not in self._metadata:
      self._metadata["categories"] = self.baseline.experiment.categories.to_json()
    self.num_classes = len(self._metadata["categories"]["ids"])
    self.local_batch = shard_lib.check_global_batch_size(c.train.batch_size, mesh)
    g, d = c.generator, c.discriminator
    self.G = mtgan_models.Generator(features=g.features, up_features=g.up_features,
                                    num_blocks=g.num_blocks)
    self.D = mtgan_models.Discriminator(num_classes=self.num_classes, depth=d.depth,
                                        width=d.width, norm=d.norm, adv_branch=d.adv_branch,
                                        reg_branch=d.reg_branch)
    self.opt_G = optim.make_optimizer(c.optim_G, c.train.batch_size)
    self.opt_D = optim.make_optimizer(c.optim_D, c.train.batch_size)
    self._refine = jax.jit(self._refine_fn)

  @classmethod
  def config_schema(cls):
    return mtgan_defaults()

  @classmethod
  def modes(cls):
    return ("train", "eval", "mine", "accuracy")

  def run_mode(self, mode, workdir):
    self.workdir = workdir
    if mode == "accuracy":
      return inference.accuracy_mode(self, workdir)
    if mode == "mine" or (mode == "train" and not self.mined(workdir)):
      result = self.mine(workdir)
      if mode == "mine":
        return result
    return super().run_mode(mode, workdir)

  def mined(self, workdir: str) -> bool:
    return os.path.exists(os.path.join(self.crops_dir(workdir), "mining.json"))

  def metadata(self):
    return self._metadata

  # ---- baseline and crops --------------------------------------------------------------------
  @property
  def baseline(self):
    if self._baseline is None:
      from jaxdet.experiments.trained import load_trained
      path = self.config.mtgan.baseline_workdir
      try:
        self._baseline = load_trained(path, mesh=self.mesh)
      except (FileNotFoundError, RuntimeError) as e:
        hint = ""
        if self.config.mtgan.baseline_config:
          hint = (f" Train it with: python -m jaxdet.main "
                  f"--config={self.config.mtgan.baseline_config} --workdir={path}")
        raise ConfigError(f"config.mtgan.baseline_workdir={path!r} must be a finished detector "
                          f"run (MTGAN mines its RoIs): {e}{hint}") from e
    return self._baseline

  def crops_dir(self, workdir: str) -> str:
    return self.config.mtgan.crops_dir or os.path.join(workdir, "crops")

  def check_inputs(self, mode, workdir):
    shard_lib.check_global_batch_size(self.config.eval.crop_batch, self.mesh,
                                      key="config.eval.crop_batch")
    self.baseline  # the baseline run exists and is finished
    if mode in ("train", "eval"):
      self.val_source  # noqa: B018 - opened and validated now

  @property
  def val_source(self):
    source = self.baseline.experiment.val_source
    n = self.config.eval.max_images
    return Subset(source, n) if n > 0 else source

  def _baseline_detector(self, max_detections: int, score_threshold: float):
    """The baseline rebuilt with other post-processing settings (its jitted inference bakes in
    its config, so the settings are not changed on the loaded experiment itself)."""
    key = (int(max_detections), float(score_threshold))
    if key not in self._detectors:
      from jaxdet.experiments import registry
      config = ml_collections.ConfigDict(self.baseline.config.to_dict())
      config.eval.max_detections, config.eval.score_threshold = key
      d = config.data
      if jax.process_count() > 1 and d.get("aspect_ratio_grouping", False):
        # Each process runs its own images through the baseline, so per-process bucket orders
        # would disagree on the shape of a global step: pad both orientations to one square.
        side = max(tuple(d.eval_image_size) or tuple(d.image_size))
        d.aspect_ratio_grouping, d.eval_image_size = False, (side, side)
      self._detectors[key] = registry.build(config, self.mesh,
                                            metadata={"categories": self._metadata["categories"]})
    return self._detectors[key]

  def baseline_detections(self, source, max_detections: int,
                           score_threshold: float) -> dict[int, list[dict]]:
    """The baseline's detections (original pixels) per image id of ``source``."""
    exp = self._baseline_detector(max_detections, score_threshold)
    results = exp.detect(self.baseline.state, exp.eval_batches(source=source))
    by_image: dict[int, list[dict]] = {}
    for r in results:
      by_image.setdefault(r["image_id"], []).append(r)
    return by_image

  def mine(self, workdir: str) -> dict:
    """Mines HR/LR crops of the baseline's RoIs on the train split (resumable)."""
    m = self.config.mtgan
    source = self.baseline.experiment.train_source
    writer = crop_shards.CropShardWriter(
        self.crops_dir(workdir), process_index=jax.process_index(),
        meta={"baseline": os.path.abspath(m.baseline_workdir), "hr_size": int(m.hr_size),
              "scale": int(m.scale), "positive_iou": float(m.positive_iou),
              "negative_iou": float(m.negative_iou)})
    done = writer.completed_images()
    ids = list(source.image_ids)
    todo = [i for i in range(len(source)) if ids[i] not in done
            and i % jax.process_count() == jax.process_index()]
    chunk = 64
    with writer:
      for start in range(0, len(todo), chunk):
        part = Subset(source, indices=todo[start:start + chunk])
        dets = self.baseline_detections(part, max(int(m.mine_rois_per_image), 1),
                                         float(m.mine_score_threshold))
        for k in range(len(part)):
          ex = part[k]
          rs = dets.get(ex.image_id, [])
          rois = np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                            r["bbox"][1] + r["bbox"][3]] for r in rs], np.float32).reshape(-1, 4)
          scores = np.array([r["score"] for r in rs], np.float32)
          if m.mine_add_gt and ex.num_objects:
            rois = np.concatenate([rois, ex.boxes[~ex.is_crowd]])
            scores = np.concatenate([scores, np.ones(int((~ex.is_crowd).sum()), np.float32)])
          crops = roi_crops.mine_rois(
              ex.image, rois, scores, ex.boxes, ex.classes, gt_crowd=ex.is_crowd,
              rng=np.random.default_rng([self.config.seed, 7021, ex.image_id]),
              num=int(m.rois_per_image), positive_fraction=float(m.positive_fraction),
              positive_iou=float(m.positive_iou), negative_iou=float(m.negative_iou),
              hr_size=int(m.hr_size), scale=int(m.scale), box_weights=tuple(m.box_weights))
          writer.add_image(ex.image_id, crops)
        print(f"mined {min(start + chunk, len(todo))}/{len(todo)} images "
              f"({writer.num_crops} crops)", flush=True)
    result = {"images": len(ids), "crops": writer.num_crops}
    if jax.process_index() == 0:
      with open(os.path.join(self.crops_dir(workdir), "mining.json"), "w") as f:
        json.dump(result, f)
    return result

  # ---- state and steps ------------------------------------------------------------------------
  def init(self, rng):
    m = self.config.mtgan
    kg, kd = jax.random.split(init_key(rng))
    lr = jnp.zeros((1, m.hr_size // m.scale, m.hr_size // m.scale, 3), jnp.float32)
    g_vars = self.G.init(kg, lr, train=False)
    d_vars = self.D.init(kd, jnp.zeros((1, m.hr_size, m.hr_size, 3), jnp.float32), train=False)
    split = lambda v: (v["params"], {k: x for k, x in v.items() if k != "params"})
    (gp, gs), (dp, ds) = split(g_vars), split(d_vars)
    return {"G": NetworkState.create(params=gp, model_state=gs, optimizer=self.opt_G),
            "D": NetworkState.create(params=dp, model_state=ds, optimizer=self.opt_D)}

  def load_pretrained(self, state):
    path = self.config.discriminator.pretrained
    if not path:
      return state
    from jaxdet.models import weights
    net = state["D"]
    variables = weights.load_backbone_weights(
        jax.device_get({"params": net.params, **net.model_state}), path)
    variables = jax.device_put(variables, shard_lib.replicated(self.mesh))
    params = variables.pop("params")
    return {**state, "D": NetworkState.create(params=params, model_state=variables,
                                              optimizer=self.opt_D)}

  def _d_input(self, g: NetworkState, lr, hr, train: bool):
    """D's input for a RoI in [-1, 1] -- G(LR), LR bilinear x4 (SBU) or the HR crop itself
    (plain R-CNN) -- and G's new BatchNorm statistics."""
    m = self.config.mtgan
    if m.sr == "none":
      return hr, g.model_state
    if m.sr == "bilinear":
      b, h, w, c = lr.shape
      return jax.image.resize(lr, (b, h * m.scale, w * m.scale, c), "bilinear"), g.model_state
    variables = {"params": g.params, **g.model_state}
    if train and g.model_state:
      out, new = self.G.apply(variables, lr, train=True, mutable=list(g.model_state))
      return out, {**g.model_state, **new}
    return self.G.apply(variables, lr, train=train), g.model_state

  def _d(self, d: NetworkState, params, images, train: bool):
    variables = {"params": params, **d.model_state}
    if train and d.model_state and self.config.discriminator.norm == "batch_norm":
      out, _ = self.D.apply(variables, images, train=True, mutable=list(d.model_state))
      return out
    return self.D.apply(variables, images, train=False)

  def train_step(self, state, batch, step, rng):
    """One alternation: a D update on Eq. 11, then a G update on Eq. 10 against the new D.

    During ``mtgan.pretrain_steps`` G minimises the pixel MSE only and D is left bit-identical
    (its update is computed but not kept). With ``mtgan.sr='bilinear'`` (SBU) only D trains,
    from the first step.
    """
    del rng
    c, l, m = self.config, self.config.loss, self.config.mtgan
    G, D = state["G"], state["D"]
    hr, lr = _to_pixels(batch["hr"]), _to_pixels(batch["lr"])
    labels, v, valid = batch["label"], batch["reg_target"], batch["valid"]
    # SBU has no generator to pre-train: D trains from the first step.
    pretrain = step < (m.pretrain_steps if m.sr == "gan" else 0)
    d_kw = dict(alpha=l.alpha, beta=l.beta, gamma=l.gamma, valid=valid,
                use_adv=c.discriminator.adv_branch, use_reg=c.discriminator.reg_branch)
    g_kw = dict(alpha=l.alpha, beta=l.beta, gamma=l.gamma, valid=valid, adversarial=l.adversarial,
                use_adv=l.use_adv and c.discriminator.adv_branch, use_cls=l.use_cls,
                use_reg=l.use_reg and c.discriminator.reg_branch, use_mse=l.use_mse)

    # D on HR and on the current SR crops (G fixed).
    sr, _ = self._d_input(G, lr, hr, train=False)
    sr = jax.lax.stop_gradient(sr)

    def d_loss_fn(p):
      if m.sr == "none":
        # Plain R-CNN: one input per RoI, so the HR and SR terms of Eq. 11 coincide; halved so
        # each RoI counts once.
        d_hr = self._d(D, p, hr, True)
        total, terms = mtgan_loss.discriminator_loss(d_hr, d_hr, labels, v, **d_kw)
        return total / 2, jax.tree.map(lambda t: t / 2, terms)
      return mtgan_loss.discriminator_loss(self._d(D, p, hr, True), self._d(D, p, sr, True),
                                           labels, v, **d_kw)
    (loss_d, d_terms), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(D.params)
    D_new = D.apply_gradients(self.opt_D, d_grads, step)
    D_new = jax.tree.map(lambda new, old: jnp.where(pretrain, old, new), D_new, D)

    if m.sr != "gan":   # SBU, plain R-CNN: no generator
      loss_g, g_terms = mtgan_loss.generator_loss(self._d(D, D.params, sr, False), sr, hr, labels,
                                                  v, **g_kw)
      new = {"G": G, "D": D_new}
    else:
      def g_loss_fn(p):
        sr_g, stats = self._d_input(G.replace(params=p), lr, hr, train=True)
        total, terms = mtgan_loss.generator_loss(self._d(D_new, D_new.params, sr_g, False), sr_g,
                                                 hr, labels, v, **g_kw)
        return jnp.where(pretrain, terms["mse"], total), (total, terms, stats)
      (_, (loss_g, g_terms, stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
          G.params)
      new = {"G": G.apply_gradients(self.opt_G, g_grads, step, model_state=stats), "D": D_new}
    metrics = {"loss_G": loss_g, "loss_D": loss_d, "mse": g_terms["mse"] if l.use_mse
               else mtgan_loss.pretrain_loss(sr, hr, valid),
               "pretrain": pretrain.astype(jnp.float32),
               "lr_G": self.opt_G.schedule(step), "lr_D": self.opt_D.schedule(step),
               **{f"G_{k}": x for k, x in g_terms.items()},
               **{f"D_{k}": x for k, x in d_terms.items()}}
    return new, metrics

  def train_batches(self, start_step: int):
    """Crop batches from ``crops_dir`` (mined by ``run_mode('train')`` when missing)."""
    m = self.config.mtgan
    crops = self.crops_dir(getattr(self, "workdir", "."))
    loader = crop_shards.CropLoader(
        crop_shards.CropShardSource(crops), batch_size=self.local_batch, train=True,
        seed=self.config.seed, hflip=m.hflip, num_workers=m.num_workers,
        process_index=jax.process_index(), process_count=jax.process_count(),
        start_step=start_step)
    keys = ("hr", "lr", "label", "reg_target", "valid")
    return ({k: b[k] for k in keys} for b in loader)

  # ---- inference ---------------------------------------------------------------------------------
  def _refine_fn(self, state, lr, hr):
    """uint8 LR and HR crops -> (class probabilities [N, K+1], D's deltas [N, 4], D's input as
    uint8 [N, S, S, 3])."""
    sr, _ = self._d_input(state["G"], _to_pixels(lr), _to_pixels(hr), train=False)
    out = self._d(state["D"], state["D"].params, sr, False)
    probs = jax.nn.softmax(out["cls"].astype(jnp.float32), axis=-1)
    deltas = out["reg"] if "reg" in out else jnp.zeros((lr.shape[0], 4), jnp.float32)
    sr_uint8 = jnp.clip((sr + 1.0) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)
    return probs, deltas.astype(jnp.float32), sr_uint8

  def refine_crops(self, state, lr, hr):
    """``_refine_fn`` jitted, on one batch of ``eval.crop_batch`` crops (host arrays)."""
    return self._refine(state, lr, hr)

  def evaluate(self, state, *, workdir, step):
    """MTGAN on the baseline's top RoIs (``mtgan_inference``), and the baseline's own detections
    of the same RoIs as ``baseline_*`` metrics, with the baseline's evaluation protocol."""
    source = self.val_source
    results, baseline_results = [], []
    items = inference.baseline_rois(self, source)
    for item in inference.refine(self, state, items):
      baseline_results += item.baseline
      results += inference.detections(self, item)
    metrics = {}
    if jax.process_index() == 0:
      kw = self.protocol_kwargs()
      metrics = detection_eval.evaluate_detections(source, results, workdir=workdir, step=step,
                                                   **kw)
      base = detection_eval.evaluate_detections(source, baseline_results, workdir=workdir,
                                                step=step, tag="_baseline", **kw)
      metrics.update({f"baseline_{k}": v for k, v in base.items()})
    return metrics

  def protocol_kwargs(self) -> dict:
    """``evaluate_detections`` settings: ``eval.protocol`` / ``eval.wider_face_gt_dir``, or the
    baseline's when empty."""
    e, b = self.config.eval, self.baseline.config.eval
    return {"protocol": e.protocol or b.get("protocol", "coco"),
            "voc_metrics": bool(b.get("voc_metrics", False)),
            "wider_face_gt_dir": e.wider_face_gt_dir or b.get("wider_face_gt_dir", "")}

  def eval_images(self, state, *, step):
    """LR (upsampled) | D's input (SR) | HR crops of the first val RoIs, one row per RoI (Fig. 3)."""
    n = int(self.config.eval.log_images)
    if n <= 0:
      return {}
    from jaxdet import visualize
    tiles = []
    items = inference.baseline_rois(self, Subset(self.val_source, 4))
    for item in inference.refine(self, state, items, keep_sr=True):
      for j in range(min(len(item.lr), n - len(tiles) // 3)):
        tiles += [item.lr[j], item.sr[j], item.hr[j]]
      if len(tiles) >= 3 * n:
        break
    if not tiles or jax.process_index() != 0:
      return {}
    return {"lr_sr_hr": visualize.image_grid(tiles, columns=3)}
