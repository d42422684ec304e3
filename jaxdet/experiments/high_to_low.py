"""Stage 1 of the low-resolution landmark paper: the high-to-low GAN (G1, D1), §3.1.

G1 turns a labelled 128 x 128 HR face and a noise vector into a 32 x 32 LR face; D1 tells those
generated LR faces (``I_LRG``) from *real* LR faces (``I_LRR``: WIDER FACE faces of 20-40 px in the
paper, the degraded domain of the embedded benchmark here), which are unpaired and unlabelled.
Each loop step makes two updates, each touching one network (``NetworkState``):

* D1 on the hinge loss (Eq. 2, spectral normalisation Eq. 3): real LR vs G1(HR, z);
* G1 on ``l = α l_GAN + β l_pixel`` (Eq. 1) against the updated D1, with the pixel loss
  (Eq. 4) to ``F(I_HR)``, the Gaussian-smoothed average-pooled HR face
  (``jaxdet.ops.subsample``).

``--mode=generate`` runs the trained G1 over the labelled HR sets named in ``config.generate``
and writes the *generated LR* datasets (``jaxdet.data.generated_faces``; resumable, noise fixed per
example) with the HR landmarks scaled by 1/4 — what stage 2 (``lr_landmarks``) trains on.

Evaluation (on ``data.hr_val`` / ``data.real_lr_val``, fixed noise): the pixel loss to F(HR),
D1's mean score of real and generated faces, and how far the generated faces are from the real
LR domain in two simple statistics (the per-channel colour mean and the high-frequency energy,
a blur/noise signature), next to the same gaps for the plain subsample F(HR) — the gap G1 is
meant to close (Fig. 4). The logged picture shows HR | F(HR) | G1(HR) | real LR rows.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdet.data import face_factory, generated_faces
from jaxdet.data.face_loader import FaceLoader
from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import loop_defaults, optim_group
from jaxdet.losses import gan
from jaxdet.models import landmark_gan
from jaxdet.ops.subsample import subsample_jnp
from jaxdet.train import optim
from jaxdet.train import sharding as shard_lib
from jaxdet.train.state import NetworkState, init_key


def face_data_defaults() -> ml_collections.ConfigDict:
  """``config.data`` of the face experiments: where each kind of face source reads from
  (``jaxdet.data.face_factory``) and the input pipeline."""
  d = ml_collections.ConfigDict()
  d.benchmark_root = ""            # '' -> $JAXDET_DATA/faces_v1 or ~/.cache/jaxdet/faces_v1
  d.benchmark_train = 2000         # embedded benchmark: faces of hr_train and of real_lr_train
  d.benchmark_test = 300           # ... of hr_test and of real_lr_test
  d.benchmark_identities = 40      # ... identities of id_train and of id_test (6 faces each)
  d.w300_root = ""                 # 300W: folder with afw/ helen/ lfpw/ ibug/ (image + .pts)
  d.aflw_mat = ""                  # AFLW-Full: AFLWinfo_release.mat
  d.aflw_images = ""               # AFLW: image root the .mat's nameList is relative to
  d.wider_face_root = ""           # WIDER FACE: wider_face_split/ and WIDER_train/images/
  d.wider_hr_min_size = 100.0      # §3: WIDER faces larger than 100 px join the HR set
  d.wider_lr_sizes = (20.0, 40.0)  # §3: WIDER faces of 20-40 px are the real LR set
  d.tfds_data_dir = ""             # tfds:NAME/SPLIT sources (prepared data)
  d.generated_dir = ""             # generated:SPLIT sources (a high-to-low run's output)
  d.crop_margin = 0.25             # file sources: square crop side = box side x (1 + margin)
  d.num_workers = 2
  return d


def high_to_low_defaults() -> ml_collections.ConfigDict:
  """Every key of ``experiment='high_to_low'`` (§3.1 and §4.1's training details)."""
  c = loop_defaults()
  c.experiment = "high_to_low"
  c.train.batch_size = 32          # §4.1
  c.train.num_steps = 200 * 35_543 // 32   # 200 epochs of the 35,543 HR faces (§3)
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 2_000

  c.data = d = face_data_defaults()
  d.hr = ("aflw:train", "300w:train", "wider:hr")   # §3: HR = AFLW + 300W + WIDER > 100 px
  d.real_lr = ("wider:lr",)        # §3: real LR = WIDER FACE faces of 20-40 px (unlabelled)
  d.hr_val = ("aflw:test",)        # evaluation faces (HR) ...
  d.real_lr_val = ("wider:lr",)    # ... and real LR faces to compare the generated ones with
  d.hr_size = 128
  d.lr_size = 32
  d.augment = False                # HR faces: the landmark augmentation of §4.1 (scale,
                                   # rotation, translation); off: G1 sees the faces as given
  d.hflip = False                  # reserved for symmetric data; landmark schemes are not mirrored

  c.generator = g = ml_collections.ConfigDict()
  g.noise_dim = 64                 # z, fc-projected to one 128 x 128 channel (§3.1)
  g.features = 64                  # stem width; doubles per encoder group up to max_features
  g.max_features = 512
  g.residual = False               # False: G1 makes the whole LR face (§3.1). True: G1's output is
                                   # added to F(I_HR) (clipped to [-1, 1]), so G1 learns only the
                                   # degradation -- a deviation for CPU-sized schedules, where a
                                   # 4 x 4 bottleneck cannot yet reproduce the face (demo)
  c.discriminator = dd = ml_collections.ConfigDict()
  dd.features = 64
  dd.max_features = 512
  dd.spectral_norm = True          # Eq. 3

  c.loss = l = ml_collections.ConfigDict()
  l.alpha = 1.0                    # Eq. 1: weight of l_GAN (§3.1: α l_GAN > β l_pixel)
  l.beta = 0.05                    # Eq. 1: weight of l_pixel (Eq. 4, on [-1, 1] pixels)
  l.subsample_sigma = 1.0          # F: Gaussian smoothing (HR px) before the average pooling

  adam = dict(name="adam", base_lr=2e-4, base_batch=32, beta1=0.5, beta2=0.9, weight_decay=0.0,
              warmup_steps=0, warmup_factor=1.0, decay_factor=0.5,
              decay_steps=(80 * 35_543 // 32, 160 * 35_543 // 32))  # §4.1: x0.5 at 80, 160 ep.
  c.optim_G = optim_group(**adam)
  c.optim_D = optim_group(**adam)

  c.eval = e = ml_collections.ConfigDict()
  e.batch_size = 64
  e.max_images = 512               # HR val faces scored (0 = all)
  e.log_images = 8                 # rows of HR | F(HR) | G1(HR) | real LR after each eval

  c.generate = gen = ml_collections.ConfigDict()
  gen.splits = ("train", "test")   # names of the generated-LR splits ...
  gen.sources = ("aflw:train", "aflw:test")   # ... and the labelled HR faces each is made from
  gen.scheme = "19"                # landmark scheme the benchmark sources return
  gen.output_dir = ""              # '' -> <workdir>/generated
  gen.shard_size = 512
  gen.batch_size = 64
  return c


def to_pixels(x_uint8):
  """uint8 -> float32 in [-1, 1] (G1 ends in tanh)."""
  return x_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(x):
  return jnp.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)


def split_variables(variables):
  return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def apply_net(module, net: NetworkState, params, *args, train: bool, **kwargs):
  """``module.apply`` with ``net``'s non-parameter collections; in training, also returns the
  updated collections (BatchNorm statistics, spectral-norm power-iteration vectors)."""
  variables = {"params": params, **net.model_state}
  if train and net.model_state:
    out, new = module.apply(variables, *args, train=True, mutable=list(net.model_state),
                            **kwargs)
    return out, {**net.model_state, **new}
  return module.apply(variables, *args, train=train, **kwargs), net.model_state


def domain_statistics(images_uint8: np.ndarray) -> np.ndarray:
  """Per-image [mean R, mean G, mean B, high-frequency energy] of uint8 faces: the energy is the
  mean squared 4-neighbour Laplacian of the grey image (blur lowers it, noise and JPEG raise
  it). Host numpy."""
  x = images_uint8.astype(np.float64) / 255.0
  grey = x.mean(-1)
  lap = (4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
         - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
  return np.concatenate([x.mean((1, 2)), (lap ** 2).mean((1, 2))[:, None]], axis=1)


def domain_gaps(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
  """Colour-mean distance and relative high-frequency-energy gap of two face sets."""
  a, b = domain_statistics(images).mean(0), domain_statistics(reference).mean(0)
  return {"colour_gap": float(np.linalg.norm(a[:3] - b[:3])),
          "hf_energy_gap": float(abs(a[3] - b[3]) / max(b[3], 1e-12))}


class HighToLowExperiment(Experiment):
  name = "high_to_low"
  progress_metrics = ("loss_G", "loss_D", "pixel", "lr_G")

  def __init__(self, config, mesh, *, metadata=None):
    super().__init__(config, mesh)
    c = config
    self.local_batch = shard_lib.check_global_batch_size(c.train.batch_size, mesh)
    if c.data.hr_size != 4 * c.data.lr_size:
      from jaxdet.train.config_check import ConfigError
      raise ConfigError(f"config.data.hr_size={c.data.hr_size} must be 4 x config.data.lr_size="
                        f"{c.data.lr_size}: G1 downsamples by 4 (§3.1: 128 -> 32).")
    g, d = c.generator, c.discriminator
    self.G = landmark_gan.HighToLowGenerator(noise_dim=g.noise_dim, features=g.features,
                                             max_features=g.max_features)
    self.D = landmark_gan.ResidualDiscriminator(features=d.features, max_features=d.max_features,
                                                spectral_norm=d.spectral_norm)
    self.opt_G = optim.make_optimizer(c.optim_G, c.train.batch_size)
    self.opt_D = optim.make_optimizer(c.optim_D, c.train.batch_size)
    self._generate = jax.jit(self._generate_fn)
    self._sources = {}

  @classmethod
  def config_schema(cls):
    return high_to_low_defaults()

  @classmethod
  def modes(cls):
    return ("train", "eval", "generate")

  def run_mode(self, mode, workdir):
    if mode == "generate":
      from jaxdet.train import loop
      state = loop.restore_latest(self, workdir, "generate")
      return self.generate(state.experiment, workdir, step=int(jax.device_get(state.step)))
    return super().run_mode(mode, workdir)

  # ---- data ------------------------------------------------------------------------------------
  def source(self, key: str, *, labelled: bool = False, scheme: str = ""):
    """The face source of ``config.data.<key>`` (or a spec), opened once."""
    specs = self.config.data[key] if key in self.config.data else key
    size = self.config.data.lr_size if "lr" in key.split("_")[:2] else self.config.data.hr_size
    cache_key = (tuple([specs] if isinstance(specs, str) else specs), labelled, scheme, size)
    if cache_key not in self._sources:
      self._sources[cache_key] = face_factory.face_source(specs, self.config.data, size=size,
                                                          scheme=scheme, labelled=labelled)
    return self._sources[cache_key]

  def check_inputs(self, mode, workdir):
    if mode == "train":
      self.source("hr"), self.source("real_lr")
    if mode in ("train", "eval"):
      self.source("hr_val"), self.source("real_lr_val")
    if mode == "generate":
      gen = self.config.generate
      if len(gen.splits) != len(gen.sources):
        from jaxdet.train.config_check import ConfigError
        raise ConfigError(f"config.generate.splits {tuple(gen.splits)} and config.generate."
                          f"sources {tuple(gen.sources)} must pair up one to one.")
      for spec in gen.sources:
        self.generate_source(spec)

  def generate_source(self, spec: str):
    src = face_factory.face_source(spec, self.config.data, size=self.config.data.hr_size,
                                   scheme=self.config.generate.scheme)
    if not src.scheme:
      from jaxdet.train.config_check import ConfigError
      raise ConfigError(f"config.generate.sources: {spec!r} has no landmarks; the generated LR "
                        f"faces are stage 2's labelled training data.")
    return src

  def _loader(self, source, size, start_step, seed_offset, augment):
    d = self.config.data
    return FaceLoader(source, batch_size=self.local_batch, train=True, image_size=size,
                      seed=self.config.seed + seed_offset, augment=augment,
                      num_workers=d.num_workers, process_index=jax.process_index(),
                      process_count=jax.process_count(), start_step=start_step)

  def train_batches(self, start_step: int):
    d = self.config.data
    hr = self._loader(self.source("hr"), d.hr_size, start_step, 0, d.augment)
    lr = self._loader(self.source("real_lr"), d.lr_size, start_step, 1, False)
    return ({"hr": a["image"], "real_lr": b["image"]} for a, b in zip(hr, lr))

  # ---- state and step ---------------------------------------------------------------------------
  def init(self, rng):
    d, g = self.config.data, self.config.generator
    kg, kd = jax.random.split(init_key(rng))
    hr = jnp.zeros((1, d.hr_size, d.hr_size, 3), jnp.float32)
    gp, gs = split_variables(self.G.init(kg, hr, jnp.zeros((1, g.noise_dim)), train=False))
    lr = jnp.zeros((1, d.lr_size, d.lr_size, 3), jnp.float32)
    dp, ds = split_variables(self.D.init(kd, lr, train=False))
    return {"G": NetworkState.create(params=gp, model_state=gs, optimizer=self.opt_G),
            "D": NetworkState.create(params=dp, model_state=ds, optimizer=self.opt_D)}

  def target(self, hr):
    """F(I_HR) of Eq. 4, in [-1, 1]."""
    return subsample_jnp(hr, factor=self.config.data.hr_size // self.config.data.lr_size,
                         sigma=self.config.loss.subsample_sigma)

  def generator(self, G: NetworkState, params, hr, z, target, *, train: bool):
    """G1's LR face in [-1, 1] (and G1's new BatchNorm statistics when training); with
    ``generator.residual``, G1's output is added to ``target`` = F(I_HR)."""
    out, stats = apply_net(self.G, G, params, hr, z, train=train)
    if self.config.generator.residual:
      out = jnp.clip(target + out, -1.0, 1.0)
    return out, stats

  def train_step(self, state, batch, step, rng):
    """A D1 update on the hinge loss (Eq. 2), then a G1 update on Eq. 1 against the new D1."""
    c, l = self.config, self.config.loss
    G, D = state["G"], state["D"]
    hr, real = to_pixels(batch["hr"]), to_pixels(batch["real_lr"])
    z = jax.random.normal(rng, (hr.shape[0], c.generator.noise_dim), jnp.float32)
    target = self.target(hr)
    fake, _ = self.generator(G, G.params, hr, z, target, train=True)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(p):
      logits, stats = apply_net(self.D, D, p, jnp.concatenate([real, fake]), train=True)
      loss = gan.hinge_d_loss(logits[:real.shape[0]], logits[real.shape[0]:])
      return loss, (stats, logits)
    (loss_d, (d_stats, d_logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        D.params)
    D_new = D.apply_gradients(self.opt_D, d_grads, step, model_state=d_stats)

    def g_loss_fn(p):
      out, g_stats = self.generator(G, p, hr, z, target, train=True)
      logits, _ = apply_net(self.D, D_new, D_new.params, out, train=False)
      l_gan, l_pixel = gan.hinge_g_loss(logits), gan.pixel_l2(out, target)
      return l.alpha * l_gan + l.beta * l_pixel, (g_stats, l_gan, l_pixel)
    (loss_g, (g_stats, l_gan, l_pixel)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        G.params)
    G_new = G.apply_gradients(self.opt_G, g_grads, step, model_state=g_stats)
    b = real.shape[0]
    metrics = {"loss_G": loss_g, "loss_D": loss_d, "gan_G": l_gan, "pixel": l_pixel,
               "d_real": jnp.mean(d_logits[:b]), "d_fake": jnp.mean(d_logits[b:]),
               "lr_G": self.opt_G.schedule(step), "lr_D": self.opt_D.schedule(step)}
    return {"G": G_new, "D": D_new}, metrics

  # ---- generation, evaluation ---------------------------------------------------------------------
  def _generate_fn(self, state, hr_uint8, keys):
    """uint8 HR faces [B, 128, 128, 3] and one key per face -> (G1's uint8 LR faces, F(HR) as
    uint8, D1's scores of G1's faces)."""
    hr = to_pixels(hr_uint8)
    z = jax.vmap(lambda k: jax.random.normal(k, (self.config.generator.noise_dim,)))(keys)
    G, D = state["G"], state["D"]
    target = self.target(hr)
    out, _ = self.generator(G, G.params, hr, z, target, train=False)
    scores, _ = apply_net(self.D, D, D.params, out, train=False)
    return to_uint8(out), to_uint8(target), scores

  def generate_lr(self, state, hr_uint8: np.ndarray, indices: np.ndarray, tag: int = 0):
    """G1 on host HR faces; the noise of face ``i`` depends only on ``(seed, tag, i)``."""
    base = jax.random.fold_in(jax.random.key(self.config.seed), 1_000 + tag)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.int32))
    return jax.tree.map(np.asarray, self._generate(state, jnp.asarray(hr_uint8), keys))

  def _hr_images(self, source, indices) -> np.ndarray:
    size = self.config.data.hr_size
    images = []
    for i in indices:
      ex = source[int(i)]
      if ex.image.shape[:2] != (size, size):
        raise ValueError(f"face {ex.key!r} is {ex.image.shape[1]} x {ex.image.shape[0]} px; G1 "
                         f"reads {size} x {size} HR faces (config.data.hr_size): give the source "
                         f"that crop size.")
      images.append(ex.image)
    return np.stack(images)

  def generate(self, state, workdir: str, step: int = -1) -> dict:
    """Writes the generated-LR datasets of ``config.generate`` (resumable, per shard; every
    process writes its share of the shards). ``step``: the G1 checkpoint, recorded in each
    split's meta so that a rerun after more training is an error, not a mixed dataset."""
    gen, d = self.config.generate, self.config.data
    multi = jax.process_count() > 1
    if multi:
      from jax.experimental import multihost_utils
    out_dir = gen.output_dir or os.path.join(workdir, "generated")
    scale = d.lr_size / d.hr_size
    summary = {}
    for t, (split, spec) in enumerate(zip(gen.splits, gen.sources)):
      src = self.generate_source(spec)
      n = len(src)
      if jax.process_index() == 0:
        generated_faces.write_meta(out_dir, split, {
            "num_examples": n, "shard_size": int(gen.shard_size), "scheme": src.scheme,
            "image_size": int(d.lr_size), "hr_size": int(d.hr_size), "source": spec,
            "seed": int(self.config.seed), "checkpoint_step": int(step)})
      if multi:
        multihost_utils.sync_global_devices(f"generate {split}: meta")
      todo = generated_faces.missing_shards(out_dir, split, n, gen.shard_size)
      todo = [k for k in todo if k % jax.process_count() == jax.process_index()]
      for done, k in enumerate(todo):
        idx = np.arange(k * gen.shard_size, min((k + 1) * gen.shard_size, n))
        exs = [src[int(i)] for i in idx]
        lr = []
        for s in range(0, len(idx), gen.batch_size):
          part = idx[s:s + gen.batch_size]
          lr.append(self.generate_lr(state, self._hr_images(src, part), part, tag=t)[0])
        generated_faces.write_shard(out_dir, split, k, {
            "image": np.concatenate(lr),
            "landmarks": np.stack([e.landmarks for e in exs]) * scale,
            "visible": np.stack([e.visible for e in exs]),
            "box": np.stack([e.box for e in exs]) * scale,
            "identity": np.array([e.identity for e in exs], np.int32),
            "key": np.array([e.key for e in exs])})
        print(f"generate {split}: shard {done + 1}/{len(todo)} ({len(idx)} faces)", flush=True)
      if multi:
        multihost_utils.sync_global_devices(f"generate {split}: shards")
      if not generated_faces.missing_shards(out_dir, split, n, gen.shard_size):
        if jax.process_index() == 0:
          generated_faces.mark_done(out_dir, split)
      summary[split] = n
    print(f"generated LR faces in {out_dir}: {summary}", flush=True)
    return {"output_dir": out_dir, **{f"num_{k}": v for k, v in summary.items()}}

  def _val_indices(self, source):
    n = len(source)
    m = self.config.eval.max_images
    return np.arange(min(n, m) if m > 0 else n)

  def evaluate(self, state, *, workdir, step):
    """Pixel loss to F(HR), D1's scores, and the domain gaps of G1(HR) and F(HR) to real LR."""
    del workdir, step
    hr_src, lr_src = self.source("hr_val"), self.source("real_lr_val")
    idx = self._val_indices(hr_src)
    fakes, subs, scores, pixel = [], [], [], []
    for s in range(0, len(idx), self.config.eval.batch_size):
      part = idx[s:s + self.config.eval.batch_size]
      fake, sub, score = self.generate_lr(state, self._hr_images(hr_src, part), part, tag=999)
      fakes.append(fake), subs.append(sub), scores.append(score)
      pixel.append(np.mean(((fake.astype(np.float64) - sub) / 127.5) ** 2, axis=(1, 2, 3)))
    fakes, subs = np.concatenate(fakes), np.concatenate(subs)
    lr_idx = self._val_indices(lr_src)
    real = np.stack([lr_src[int(i)].image for i in lr_idx])
    real_scores = []
    for s in range(0, len(real), self.config.eval.batch_size):
      part = real[s:s + self.config.eval.batch_size]
      D = state["D"]
      real_scores.append(np.asarray(apply_net(self.D, D, D.params, to_pixels(jnp.asarray(part)),
                                              train=False)[0]))
    gen_gap, sub_gap = domain_gaps(fakes, real), domain_gaps(subs, real)
    return {"pixel_rmse": float(np.sqrt(np.concatenate(pixel).mean())),
            "d_fake": float(np.concatenate(scores).mean()),
            "d_real": float(np.concatenate(real_scores).mean()),
            **{f"generated_{k}": v for k, v in gen_gap.items()},
            **{f"subsampled_{k}": v for k, v in sub_gap.items()}}

  def eval_images(self, state, *, step):
    """HR | F(HR) | G1(HR) | a real LR face, one row per val face (Fig. 4)."""
    n = int(self.config.eval.log_images)
    if n <= 0 or jax.process_index() != 0:
      return {}
    from jaxdet import visualize
    hr_src, lr_src = self.source("hr_val"), self.source("real_lr_val")
    idx = np.arange(min(n, len(hr_src)))
    hr = self._hr_images(hr_src, idx)
    fake, sub, _ = self.generate_lr(state, hr, idx, tag=999)
    tiles = []
    for j in range(len(idx)):
      tiles += [hr[j], sub[j], fake[j], lr_src[j % len(lr_src)].image]
    return {"hr_sub_generated_real": visualize.image_grid(tiles, columns=4)}
