"""Stage 2 of the low-resolution landmark paper: semi-supervised heatmap GAN (G2, D2, D3), §3.2-3.3.

G2 (a U-Net) predicts N + 1 heatmaps (N landmarks + background) of a face at its own resolution;
ground truth heatmaps are Gaussians of σ = 2 at the landmarks (``jaxdet.ops.heatmaps``); landmarks
are decoded by argmax with sub-pixel refinement. The settings of Table 1b / Table 4 are one key,
``config.landmarks.setting``:

======  ==========================================================================================
s1      G2 on *subsampled* HR faces (F = Gaussian smoothing + average pooling), l_MSE (Eq. 10)
s2      G2 on *generated* LR faces (a high-to-low run's output), l_MSE only
s3      s2 + the heatmap discriminator D2, a BEGAN autoencoder on heatmaps ⊕ image (Eq. 5-8):
        l_D2 = l_real − k_t l_fake, k_{t+1} = clip(k_t + λ_k (γ l_real − l_fake), 0, 1); G2 adds
        b · l_kp (Eq. 11)
s4      s3 + the confidence discriminator D3 (least squares, Eq. 9) on image ⊕ heatmap with three
        kinds of input: (generated LR, GT heatmap) real; (generated LR, Ĥ) and (*unlabelled real
        LR*, Ĥ) fake; G2 adds c · l_conf (Eq. 12); l_G2 = a l_MSE + b l_kp + c l_conf (Eq. 13)
hr_ld   G2 supervised on 128 x 128 HR faces (HR-LD, Table 4); LR faces are upsampled to 128 to
        be evaluated ("the usual practice of re-scaling", §4.3 Baseline)
======  ==========================================================================================

Each loop step updates D2 (s3, s4), then D3 (s4), then G2 against the updated discriminators;
each update touches one ``NetworkState``; k_t lives in the state next to them (checkpointed).

Evaluation: for each named evaluation set (``data.eval_sets``; on the embedded benchmark the
real-LR test split whose truth the models never see, and the generated-LR test split of Table
1b), NRMSE over visible points (normalised by ``landmarks.normaliser``), AUC@0.07 / @0.08,
failure rates, a CED plot ``<workdir>/ced_<step>.png`` and predicted landmarks drawn on LR faces.

``--mode=identify``: the face identification protocol of Table 2 (``jaxdet.evaluation.
face_identification``): faces aligned with G2's landmarks, a small embedding network trained on
the train identities, closed-set 1:N identification on the test identities (top-k, mAP), next to
the rows "aligned with the true landmarks" and "not aligned".
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet.data import face_factory
from jaxdet.data.face_loader import FaceLoader
from jaxdet.data.face_records import scheme as get_scheme
from jaxdet.evaluation import landmarks as landmark_eval
from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import optim_group
from jaxdet.experiments.high_to_low import (apply_net, face_data_defaults, split_variables,
                                            to_pixels)
from jaxdet.experiments.defaults import loop_defaults
from jaxdet.losses import began, gan
from jaxdet.losses import landmark_gan as lg_loss
from jaxdet.models import landmark_gan
from jaxdet.ops import heatmaps as hm
from jaxdet.train import optim
from jaxdet.train import sharding as shard_lib
from jaxdet.train.config_check import ConfigError
from jaxdet.train.state import NetworkState, init_key

SETTINGS = ("s1", "s2", "s3", "s4", "hr_ld")


def lr_landmarks_defaults() -> ml_collections.ConfigDict:
  """Every key of ``experiment='lr_landmarks'`` (§3.2-3.3 and §4.1's training details)."""
  c = loop_defaults()
  c.experiment = "lr_landmarks"
  c.train.batch_size = 32          # §4.1
  c.train.num_steps = 200 * 20_000 // 32   # 200 epochs of the 20,000 AFLW train faces
  c.train.eval_every = 20_000
  c.train.checkpoint_every = 2_000

  c.landmarks = m = ml_collections.ConfigDict()
  m.setting = "s4"                 # s1 | s2 | s3 | s4 | hr_ld (Table 1b, Table 4)
  m.scheme = "19"                  # 19 (AFLW) | 68 (300W) | 5 (MTCNN / ALRF)
  m.sigma = 2.0                    # §3.2.1: Gaussian heatmaps, σ = 2 px at the input resolution
  m.input_size = 32                # G2's input and heatmap side (hr_ld: 128)
  m.normaliser = "box"             # NRMSE: box (AFLW) | inter_pupil | inter_ocular (300W) |
                                   # face_size (ALRF, Table 1a)

  c.data = d = face_data_defaults()
  d.train = ("generated:train",)   # labelled training faces (s1, hr_ld: HR faces)
  d.train_transform = "none"       # none | subsample (s1: F of the HR face) | resize
  d.unlabelled = ("wider:lr",)     # s4: unlabelled real LR faces (D3's third input)
  d.hr_size = 128                  # crop size of HR file sources
  d.lr_size = 32                   # crop size of LR file sources
  d.eval_sets = ("generated_test",)          # names in the metrics ...
  d.eval_specs = ("generated:test",)         # ... their sources ...
  d.eval_source_sizes = (32,)                # ... crop size of file sources ...
  d.eval_transforms = ("none",)              # ... and input transforms (none|subsample|resize)
  d.augment = True                 # §4.1: scale 0.9-1.1, rotation ±30°, translation ≤ 20 px
  d.scale = (0.9, 1.1)
  d.rotation_deg = 30.0
  d.translation_px = 20.0          # at 128 px; scaled with the input size
  d.subsample_sigma = 1.0          # F's Gaussian smoothing (HR px), s1

  c.generator = g = ml_collections.ConfigDict()   # G2 (U-Net, 16 residual blocks)
  g.features = 64
  g.max_features = 512
  g.blocks_per_group = 2           # §3.2.1: 4 encoder + 4 decoder groups of 2 residual blocks
  c.d2 = d2 = ml_collections.ConfigDict()         # D2: G2's architecture on heatmaps ⊕ image
  d2.features = 64
  d2.max_features = 512
  d2.blocks_per_group = 2
  c.d3 = d3 = ml_collections.ConfigDict()         # D3: D1's architecture on image ⊕ heatmaps
  d3.features = 64
  d3.max_features = 512
  d3.spectral_norm = True

  c.loss = l = ml_collections.ConfigDict()
  l.a = 1.0                        # Eq. 13: l_MSE. §3.3: a l_MSE > b l_kp > c l_conf; measured
  l.b = 0.001                      # Eq. 13: l_kp (s3, s4); l_kp runs ~50-200x l_MSE (demo)
  l.c = 0.0001                     # Eq. 13: l_conf (s4); l_conf ~ 1
  l.lambda_k = 0.001               # Eq. 8 (BEGAN's λ_k)
  l.gamma = 0.5                    # Eq. 8 (BEGAN's diversity ratio γ)
  l.k0 = 0.0                       # k_0

  adam = dict(name="adam", base_lr=2e-4, base_batch=32, beta1=0.5, beta2=0.9, weight_decay=0.0,
              warmup_steps=0, warmup_factor=1.0, decay_factor=0.5,
              decay_steps=(80 * 20_000 // 32, 160 * 20_000 // 32))  # §4.1: x0.5 at 80, 160 ep.
  c.optim_G = optim_group(**adam)
  c.optim_D2 = optim_group(**adam)
  c.optim_D3 = optim_group(**adam)

  c.eval = e = ml_collections.ConfigDict()
  e.batch_size = 64
  e.max_images = 0                 # per evaluation set (0 = all)
  e.log_images = 16                # LR faces drawn with predicted (green) and true (red) points
  e.ced_max_error = 0.08           # x-range of the CED plot

  c.identify = i = ml_collections.ConfigDict()   # --mode=identify (Table 2 protocol)
  i.train = ("benchmark:id_train",)   # identities the embedding network is trained on
  i.test = ("benchmark:id_test",)     # probe / gallery identities
  i.source_size = 32
  i.aligned_size = 32              # side of the aligned faces
  i.steps = 600
  i.batch_size = 64
  i.width = 16
  i.embed_dim = 64
  i.lr = 1e-3
  return c


def apply_setting(c: ml_collections.ConfigDict, setting: str) -> None:
  """Loss weights and data of ``setting`` (keeps the sources a config has chosen)."""
  if setting not in SETTINGS:
    raise ValueError(f"landmark setting {setting!r}: use one of {', '.join(SETTINGS)}.")
  c.landmarks.setting = setting
  if setting in ("s1", "s2", "hr_ld"):
    c.loss.b = c.loss.c = 0.0
  if setting == "s3":
    c.loss.c = 0.0
  if setting == "hr_ld":
    c.landmarks.input_size = 128


class LRLandmarksExperiment(Experiment):
  name = "lr_landmarks"
  progress_metrics = ("loss_G", "mse", "k_t", "lr_G")

  def __init__(self, config, mesh, *, metadata=None):
    super().__init__(config, mesh)
    c, m = config, config.landmarks
    if m.setting not in SETTINGS:
      raise ConfigError(f"config.landmarks.setting={m.setting!r}: use one of "
                        f"{', '.join(SETTINGS)}.")
    try:
      self.scheme = get_scheme(m.scheme)
    except ValueError as e:
      raise ConfigError(f"config.landmarks.scheme: {e}") from None
    d = c.data
    lens = {len(d.eval_sets), len(d.eval_specs), len(d.eval_source_sizes), len(d.eval_transforms)}
    if len(lens) != 1:
      raise ConfigError("config.data.eval_sets, eval_specs, eval_source_sizes and "
                        "eval_transforms must have one entry per evaluation set.")
    self.use_d2 = m.setting in ("s3", "s4")
    self.use_d3 = m.setting == "s4"
    self.local_batch = shard_lib.check_global_batch_size(c.train.batch_size, mesh)
    k = self.scheme.num_points + 1
    self.G = landmark_gan.HeatmapUNet(out_channels=k, features=c.generator.features,
                                      max_features=c.generator.max_features,
                                      blocks_per_group=c.generator.blocks_per_group)
    self.D2 = landmark_gan.HeatmapUNet(out_channels=k, features=c.d2.features,
                                       max_features=c.d2.max_features,
                                       blocks_per_group=c.d2.blocks_per_group)
    self.D3 = landmark_gan.ResidualDiscriminator(features=c.d3.features,
                                                 max_features=c.d3.max_features,
                                                 spectral_norm=c.d3.spectral_norm)
    self.opt_G = optim.make_optimizer(c.optim_G, c.train.batch_size)
    self.opt_D2 = optim.make_optimizer(c.optim_D2, c.train.batch_size)
    self.opt_D3 = optim.make_optimizer(c.optim_D3, c.train.batch_size)
    self._predict = jax.jit(self._predict_fn)
    self._sources = {}

  @classmethod
  def config_schema(cls):
    return lr_landmarks_defaults()

  @classmethod
  def modes(cls):
    return ("train", "eval", "identify")

  def run_mode(self, mode, workdir):
    if mode == "identify":
      from jaxdet.experiments import face_identify
      from jaxdet.train import loop
      state = loop.restore_latest(self, workdir, "identify")
      return face_identify.identify(self, state.experiment, workdir)
    return super().run_mode(mode, workdir)

  # ---- data ------------------------------------------------------------------------------------
  def source(self, specs, size: int, *, labelled: bool = True):
    key = (tuple([specs] if isinstance(specs, str) else specs), size, labelled)
    if key not in self._sources:
      src = face_factory.face_source(specs, self.config.data, size=size,
                                     scheme=self.config.landmarks.scheme, labelled=labelled)
      if labelled and src.scheme != self.config.landmarks.scheme:
        raise ConfigError(f"face source {specs!r} has landmark scheme {src.scheme!r} but "
                          f"config.landmarks.scheme={self.config.landmarks.scheme!r}.")
      self._sources[key] = src
    return self._sources[key]

  def train_source_size(self) -> int:
    d, m = self.config.data, self.config.landmarks
    return d.hr_size if d.train_transform == "subsample" or m.input_size > d.lr_size else d.lr_size

  def check_inputs(self, mode, workdir):
    d = self.config.data
    if mode == "train":
      self.source(d.train, self.train_source_size())
      if self.use_d3:
        self.source(d.unlabelled, d.lr_size, labelled=False)
    if mode in ("train", "eval"):
      for spec, size in zip(d.eval_specs, d.eval_source_sizes):
        self.source(spec, size)

  def _loader(self, source, *, train, transform, start_step=0, seed_offset=0, batch=None):
    d = self.config.data
    return FaceLoader(source, batch_size=batch or self.local_batch, train=train,
                      image_size=self.config.landmarks.input_size,
                      seed=self.config.seed + seed_offset, augment=train and d.augment,
                      scale=tuple(d.scale), rotation_deg=d.rotation_deg,
                      translation_px=d.translation_px, input_transform=transform,
                      subsample_sigma=d.subsample_sigma, num_workers=d.num_workers,
                      process_index=jax.process_index() if train else 0,
                      process_count=jax.process_count() if train else 1,
                      start_step=start_step)

  def train_batches(self, start_step: int):
    d = self.config.data
    labelled = self._loader(self.source(d.train, self.train_source_size()), train=True,
                            transform=d.train_transform, start_step=start_step)
    if not self.use_d3:
      return ({k: b[k] for k in ("image", "landmarks", "visible")} for b in labelled)
    real = self._loader(self.source(d.unlabelled, d.lr_size, labelled=False), train=True,
                        transform="none" if self.config.landmarks.input_size == d.lr_size
                        else "resize", start_step=start_step, seed_offset=1)
    return ({"image": a["image"], "landmarks": a["landmarks"], "visible": a["visible"],
             "real_lr": b["image"]} for a, b in zip(labelled, real))

  # ---- state and step ---------------------------------------------------------------------------
  def init(self, rng):
    s, k = self.config.landmarks.input_size, self.scheme.num_points + 1
    kg, k2, k3 = jax.random.split(init_key(rng), 3)
    image = jnp.zeros((1, s, s, 3), jnp.float32)
    gp, gs = split_variables(self.G.init(kg, image, train=False))
    state = {"G": NetworkState.create(params=gp, model_state=gs, optimizer=self.opt_G)}
    if self.use_d2:
      pp, ps = split_variables(self.D2.init(k2, jnp.zeros((1, s, s, k + 3)), train=False))
      state["D2"] = NetworkState.create(params=pp, model_state=ps, optimizer=self.opt_D2)
      state["k_t"] = began.began_init(self.config.loss.k0)
    if self.use_d3:
      pp, ps = split_variables(self.D3.init(k3, jnp.zeros((1, s, s, k + 3)), train=False))
      state["D3"] = NetworkState.create(params=pp, model_state=ps, optimizer=self.opt_D3)
    return state

  def target_heatmaps(self, landmarks, visible):
    s = self.config.landmarks.input_size
    return hm.gaussian_heatmaps(landmarks, visible, s, s, sigma=self.config.landmarks.sigma)

  def train_step(self, state, batch, step, rng):
    """D2 (Eq. 5-8), D3 (Eq. 9), then G2 (Eq. 10-13) against the updated discriminators."""
    del rng
    l = self.config.loss
    image = to_pixels(batch["image"])
    heat = self.target_heatmaps(batch["landmarks"], batch["visible"])
    b = image.shape[0]
    G = state["G"]
    inputs = image
    if self.use_d3:
      real_lr = to_pixels(batch["real_lr"])
      inputs = jnp.concatenate([image, real_lr])
    pred_all, _ = apply_net(self.G, G, G.params, inputs, train=True)
    pred_all = jax.lax.stop_gradient(pred_all)
    new, metrics = dict(state), {}

    if self.use_d2:
      D2, k_t = state["D2"], state["k_t"]
      pred = pred_all[:b]

      def d2_loss_fn(p):
        rec, stats = apply_net(self.D2, D2, p, jnp.concatenate(
            [jnp.concatenate([heat, image], -1), jnp.concatenate([pred, image], -1)]),
            train=True)
        loss, terms = lg_loss.d2_losses(heat, rec[:b], pred, rec[b:], k_t.k)
        return loss, (terms, stats)
      (loss_d2, (terms, stats)), grads = jax.value_and_grad(d2_loss_fn, has_aux=True)(D2.params)
      new["D2"] = D2.apply_gradients(self.opt_D2, grads, step, model_state=stats)
      new["k_t"] = began.began_update(k_t, terms["l_real"], terms["l_fake"],
                                      lambda_k=l.lambda_k, gamma=l.gamma)
      metrics.update({"loss_D2": loss_d2, "l_real": terms["l_real"], "l_fake": terms["l_fake"],
                      "k_t": k_t.k, "M_global": began.convergence_measure(
                          terms["l_real"], terms["l_fake"], l.gamma)})

    if self.use_d3:
      D3 = state["D3"]

      def d3_loss_fn(p):
        x = jnp.concatenate([jnp.concatenate([image, heat], -1),
                             jnp.concatenate([image, pred_all[:b]], -1),
                             jnp.concatenate([real_lr, pred_all[b:]], -1)])
        logits, stats = apply_net(self.D3, D3, p, x, train=True)
        return lg_loss.d3_loss(logits[:b], logits[b:2 * b], logits[2 * b:]), (stats, logits)
      (loss_d3, (stats, logits)), grads = jax.value_and_grad(d3_loss_fn, has_aux=True)(D3.params)
      new["D3"] = D3.apply_gradients(self.opt_D3, grads, step, model_state=stats)
      metrics.update({"loss_D3": loss_d3, "d3_real": jnp.mean(logits[:b]),
                      "d3_fake": jnp.mean(logits[b:])})

    def g_loss_fn(p):
      out, stats = apply_net(self.G, G, p, inputs, train=True)
      pred = out[:b]
      rec = d3_fake = None
      if self.use_d2:
        D2 = new["D2"]
        # D2 normalises with batch statistics here as in its own step (its running averages
        # lag behind early on); the statistics of this pass are discarded.
        rec, _ = apply_net(self.D2, D2, D2.params, jnp.concatenate([pred, image], -1),
                           train=True)
      if self.use_d3:
        D3 = new["D3"]
        d3_fake, _ = apply_net(self.D3, D3, D3.params, jnp.concatenate(
            [jnp.concatenate([image, pred], -1), jnp.concatenate([real_lr, out[b:]], -1)]),
            train=False)
      total, terms = lg_loss.g2_loss(heat, pred, rec, d3_fake, a=l.a, b=l.b if self.use_d2
                                     else 0.0, c=l.c if self.use_d3 else 0.0)
      return total, (terms, stats)
    (loss_g, (terms, stats)), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(G.params)
    new["G"] = G.apply_gradients(self.opt_G, grads, step, model_state=stats)
    metrics.update({"loss_G": loss_g, "mse": terms["l_mse"], "lr_G": self.opt_G.schedule(step),
                    **{f"G_{k}": v for k, v in terms.items() if k != "l_mse"}})
    return new, metrics

  # ---- inference and evaluation -------------------------------------------------------------
  def _predict_fn(self, state, image_uint8):
    G = state["G"]
    out, _ = apply_net(self.G, G, G.params, to_pixels(image_uint8), train=False)
    points, _ = hm.decode_heatmaps(out, num_points=self.scheme.num_points)
    return points

  def predict(self, state, images_uint8: np.ndarray, batch: int = 64) -> np.ndarray:
    """G2's landmarks ``[n, N, 2]`` (input pixels) for uint8 faces at ``input_size``."""
    out = []
    for s in range(0, len(images_uint8), batch):
      part = images_uint8[s:s + batch]
      n = len(part)
      if n < batch:   # one compiled shape
        part = np.concatenate([part, np.zeros((batch - n,) + part.shape[1:], np.uint8)])
      out.append(np.asarray(self._predict(state, jnp.asarray(part)))[:n])
    return np.concatenate(out) if out else np.zeros((0, self.scheme.num_points, 2), np.float32)

  def eval_batches(self, name: str):
    """Host batches of evaluation set ``name`` (one pass, padded)."""
    d = self.config.data
    i = list(d.eval_sets).index(name)
    src = self.source(d.eval_specs[i], d.eval_source_sizes[i])
    m = self.config.eval.max_images
    if m > 0 and len(src) > m:
      src = face_factory.FaceSubset(src, m)
    return self._loader(src, train=False, transform=d.eval_transforms[i],
                        batch=self.config.eval.batch_size)

  def predictions(self, state, name: str) -> dict[str, np.ndarray]:
    """Images, predicted and true landmarks, visibility and boxes of evaluation set ``name``."""
    keep = {"image": [], "pred": [], "landmarks": [], "visible": [], "box": []}
    for batch in self.eval_batches(name):
      valid = batch["example_valid"]
      pred = self.predict(state, batch["image"], self.config.eval.batch_size)
      for k, v in (("image", batch["image"]), ("pred", pred), ("landmarks", batch["landmarks"]),
                   ("visible", batch["visible"]), ("box", batch["box"])):
        keep[k].append(v[valid])
    return {k: np.concatenate(v) for k, v in keep.items()}

  def evaluate(self, state, *, workdir, step):
    """NRMSE, AUC@0.07/0.08 and failure rates per evaluation set, and the CED plot."""
    metrics, curves = {}, {}
    for name in self.config.data.eval_sets:
      p = self.predictions(state, name)
      res = landmark_eval.landmark_metrics(p["pred"], p["landmarks"], p["visible"], p["box"],
                                           self.scheme.name, self.config.landmarks.normaliser,
                                           return_errors=True)
      errors = res.pop("errors")
      curves[name] = errors[np.isfinite(errors)]   # the images the metrics count
      metrics.update({f"{name}_{k}": float(v) for k, v in res.items()})
    if jax.process_index() == 0 and curves:
      os.makedirs(workdir, exist_ok=True)
      landmark_eval.ced_plot_png(curves, os.path.join(workdir, f"ced_{step}.png"),
                                 max_error=self.config.eval.ced_max_error)
      with open(os.path.join(workdir, f"landmark_errors_{step}.json"), "w") as f:
        json.dump({k: v.tolist() for k, v in curves.items()}, f)
    return metrics

  def eval_images(self, state, *, step):
    """Faces of the first evaluation set with G2's (green) and the true (red) landmarks,
    enlarged to 128 px."""
    n = int(self.config.eval.log_images)
    if n <= 0 or jax.process_index() != 0 or not self.config.data.eval_sets:
      return {}
    from PIL import Image

    from jaxdet import visualize
    name = self.config.data.eval_sets[0]
    batch = next(iter(self.eval_batches(name)))
    batch = {k: v[batch["example_valid"]] for k, v in batch.items()}   # no padding
    images = batch["image"][:n]
    pred = self.predict(state, images, self.config.eval.batch_size)
    tiles = []
    for j in range(len(images)):
      f = 128 / images.shape[1]
      big = np.asarray(Image.fromarray(images[j]).resize((128, 128), Image.NEAREST))
      big = visualize.draw_points(big, batch["landmarks"][j] * f, color=(255, 0, 0),
                                  visible=batch["visible"][j])
      tiles.append(visualize.draw_points(big, pred[j] * f, color=(0, 255, 0)))
    return {f"landmarks_{name}": visualize.image_grid(tiles, columns=8)}
