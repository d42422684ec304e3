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
4. **Inference** (``--mode=eval``): the baseline's top ``mtgan.test_rois`` RoIs per val image
   (100 on COCO, §4.2) -> LR crops -> G -> D -> class scores (softmax over K + 1) and the RoI
   refined by D's regression -> per-class NMS -> COCO AP. ``mtgan.ensemble`` multiplies the
   score of the baseline's class by the baseline's score (Table 6). The baseline's own detections
   of the same RoIs are evaluated alongside (``baseline_AP``...), so one evaluation compares both.

``mtgan.sr = 'bilinear'`` is the SBU ablation (Table 3: LR upsampled x4 bilinearly instead of by
G; only D trains). Pixels enter both networks in [-1, 1] (G ends in tanh).
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
from jaxdet.evaluation import coco as coco_eval
from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import loop_defaults, optim_group
from jaxdet.losses import mtgan as mtgan_loss
from jaxdet.models import mtgan as mtgan_models
from jaxdet.ops import boxes as box_ops
from jaxdet.train import optim
from jaxdet.train import sharding as shard_lib
from jaxdet.train.config_check import ConfigError
from jaxdet.train.state import NetworkState


def mtgan_defaults() -> ml_collections.ConfigDict:
  """Every key of ``experiment='mtgan'`` (COCO recipe of §4.2 unless noted)."""
  c = loop_defaults()
  c.experiment = "mtgan"
  c.train.batch_size = 64          # RoI crops per loop step
  c.train.num_steps = 80_000       # §4.2 COCO: 80k iterations
  c.train.eval_every = 20_000

  c.mtgan = m = ml_collections.ConfigDict()
  m.baseline_workdir = ""          # a finished jaxdet detector run (required)
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
  m.sr = "gan"                     # gan | bilinear (SBU ablation, Table 3)
  m.pretrain_steps = 0             # loop steps of G with the pixel MSE only (§3.1)
  m.test_rois = 100                # §4.2: 100 RoIs per COCO test image (WIDER FACE: 600)
  m.test_score_threshold = 0.0     # baseline score a test RoI needs (0: the top test_rois)
  m.ensemble = False               # Table 6: MTGAN score x baseline score
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
  return c


def _to_pixels(x_uint8):
  return x_uint8.astype(jnp.float32) / 127.5 - 1.0


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
  """Greedy NMS (host, small N): indices kept in descending score order."""
  order = np.argsort(-scores, kind="stable")
  keep = []
  while len(order):
    i = order[0]
    keep.append(int(i))
    if len(order) == 1:
      break
    rest = order[1:]
    x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
    y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
    x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
    y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    overlap = inter / np.maximum(area(boxes[i]) + area(boxes[rest]) - inter, 1e-9)
    order = rest[overlap <= iou]
  return keep


class MTGANExperiment(Experiment):
  name = "mtgan"
  progress_metrics = ("loss_G", "loss_D", "mse", "lr_G")

  def __init__(self, config, mesh, *, metadata=None):
    super().__init__(config, mesh)
    c, m = config, config.mtgan
    if m.sr not in ("gan", "bilinear"):
      raise ConfigError(f"config.mtgan.sr={m.sr!r}: use 'gan' or 'bilinear' (SBU).")
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
    return ("train", "eval", "mine")

  def run_mode(self, mode, workdir):
    self.workdir = workdir
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
        raise ConfigError(f"config.mtgan.baseline_workdir={path!r} must be a finished detector "
                          f"run (MTGAN mines its RoIs): {e}") from e
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
      self._detectors[key] = registry.build(config, self.mesh,
                                            metadata={"categories": self._metadata["categories"]})
    return self._detectors[key]

  def _baseline_detections(self, source, max_detections: int,
                           score_threshold: float) -> dict[int, list[dict]]:
    """The baseline's detections (original pixels) per image id of ``source``."""
    exp = self._baseline_detector(max_detections, score_threshold)
    results = exp.detect(self.baseline.state, exp.eval_batches(source=source))
    by_image: dict[int, list[dict]] = {}
    for r in results:
      by_image.setdefault(r["image_id"], []).append(r)
    return by_image

  def _class_of(self):
    ids = self._metadata["categories"]["ids"]
    return {cid: k for k, cid in enumerate(ids)}

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
        dets = self._baseline_detections(part, max(int(m.mine_rois_per_image), 1),
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
    kg, kd = jax.random.split(rng)
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

  def _sr(self, g: NetworkState, lr, train: bool):
    """SR crops in [-1, 1] and G's new BatchNorm statistics."""
    m = self.config.mtgan
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
    sr, _ = self._sr(G, lr, train=False)
    sr = jax.lax.stop_gradient(sr)

    def d_loss_fn(p):
      return mtgan_loss.discriminator_loss(self._d(D, p, hr, True), self._d(D, p, sr, True),
                                           labels, v, **d_kw)
    (loss_d, d_terms), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(D.params)
    D_new = D.apply_gradients(self.opt_D, d_grads, step)
    D_new = jax.tree.map(lambda new, old: jnp.where(pretrain, old, new), D_new, D)

    if m.sr == "bilinear":   # SBU: no generator
      loss_g, g_terms = mtgan_loss.generator_loss(self._d(D, D.params, sr, False), sr, hr, labels,
                                                  v, **g_kw)
      new = {"G": G, "D": D_new}
    else:
      def g_loss_fn(p):
        sr_g, stats = self._sr(G.replace(params=p), lr, train=True)
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
  def _refine_fn(self, state, lr):
    """LR crops uint8 -> (class probabilities [N, K+1], D's deltas [N, 4], SR crops uint8)."""
    sr, _ = self._sr(state["G"], _to_pixels(lr), train=False)
    out = self._d(state["D"], state["D"].params, sr, False)
    probs = jax.nn.softmax(out["cls"].astype(jnp.float32), axis=-1)
    deltas = out["reg"] if "reg" in out else jnp.zeros((lr.shape[0], 4), jnp.float32)
    sr_uint8 = jnp.clip((sr + 1.0) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)
    return probs, deltas.astype(jnp.float32), sr_uint8

  def _rois_and_crops(self, source):
    """Per val image: its baseline RoIs (top test_rois), their scores/classes, HR and LR crops."""
    m = self.config.mtgan
    dets = self._baseline_detections(source, int(m.test_rois), float(m.test_score_threshold))
    class_of = self._class_of()
    for i in range(len(source)):
      ex = source[i]
      rs = sorted(dets.get(ex.image_id, []), key=lambda r: -r["score"])[: int(m.test_rois)]
      if not rs:
        continue
      rois = np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                        r["bbox"][1] + r["bbox"][3]] for r in rs], np.float32)
      hr, lr = roi_crops.crop_hr_lr(ex.image, rois, hr_size=int(m.hr_size), scale=int(m.scale))
      yield (ex, rs, rois, np.array([r["score"] for r in rs], np.float32),
             np.array([class_of[r["category_id"]] for r in rs]), hr, lr)

  def _run_d(self, state, lr):
    n, b = len(lr), int(self.config.eval.crop_batch)
    pad = (-n) % b
    lr = np.concatenate([lr, np.zeros((pad, *lr.shape[1:]), lr.dtype)])
    outs = [jax.device_get(self._refine(state, lr[k:k + b])) for k in range(0, len(lr), b)]
    probs, deltas, sr = (np.concatenate([o[j] for o in outs])[:n] for j in range(3))
    return probs, deltas, sr

  def evaluate(self, state, *, workdir, step):
    e, m = self.config.eval, self.config.mtgan
    source = self.val_source
    ids = self._metadata["categories"]["ids"]
    results, baseline_results = [], []
    for ex, rs, rois, base_scores, base_cls, _, lr in self._rois_and_crops(source):
      baseline_results += rs
      probs, deltas, _ = self._run_d(state, lr)
      boxes = np.asarray(box_ops.decode(jnp.asarray(deltas), jnp.asarray(rois),
                                        weights=tuple(m.box_weights)))
      boxes = np.clip(boxes, 0, [ex.width, ex.height, ex.width, ex.height])
      dets = []
      for k in range(self.num_classes):
        score = probs[:, k + 1]
        if m.ensemble:
          score = np.where(base_cls == k, score * base_scores, 0.0)
        keep = np.nonzero(score > e.score_threshold)[0]
        for j in (keep[_nms(boxes[keep], score[keep], e.nms_iou)] if len(keep) else []):
          x1, y1, x2, y2 = (float(t) for t in boxes[j])
          dets.append({"image_id": ex.image_id, "category_id": ids[k], "score": float(score[j]),
                       "bbox": [x1, y1, x2 - x1, y2 - y1]})
      results += sorted(dets, key=lambda d: -d["score"])[: e.max_detections]
    metrics = {}
    if jax.process_index() == 0:
      gt = source.coco
      metrics = coco_eval.evaluate_coco(
          gt, results, result_file=os.path.join(workdir, f"detections_step{step}.json"),
          image_ids=source.image_ids)
      base = coco_eval.evaluate_coco(gt, baseline_results, image_ids=source.image_ids)
      metrics.update({f"baseline_{k}": v for k, v in base.items()})
    return metrics

  def eval_images(self, state, *, step):
    """LR (upsampled) | SR | HR crops of the first val RoIs, one row per RoI (Fig. 3)."""
    n = int(self.config.eval.log_images)
    if n <= 0:
      return {}
    from jaxdet import visualize
    tiles = []
    for *_, hr, lr in self._rois_and_crops(Subset(self.val_source, 4)):
      _, _, sr = self._run_d(state, lr)
      for j in range(min(len(lr), n - len(tiles) // 3)):
        tiles += [lr[j], sr[j], hr[j]]
      if len(tiles) >= 3 * n:
        break
    if not tiles or jax.process_index() != 0:
      return {}
    return {"lr_sr_hr": visualize.image_grid(tiles, columns=3)}
