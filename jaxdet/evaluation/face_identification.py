"""Closed-set face identification protocol of the low-resolution landmark paper (§4.3 "Face
Recognition experiments", Table 2).

The protocol (§4.3 "Evaluation Protocol"):

1. *Alignment.* "After detecting the landmarks, training and testing images are aligned to the
   canonical coordinates using affine transformation": the five MTCNN points (eye centres, nose
   tip, mouth corners; other schemes are reduced with ``LandmarkScheme.five_points``) are mapped
   by a least-squares similarity (Umeyama 1991) onto ArcFace's 112-px template
   ``CANONICAL_FIVE_112`` scaled to ``out_size`` (``align_faces``). ``points=None`` gives the
   "not aligned" reference row: faces only resized to ``out_size``.
2. *Embedding network.* A LightCNN-style network (``jaxdet.models.face_embedding``; §4.3 trains
   LightCNN-29 from scratch on the TinyFace training identities) is trained as a softmax
   classifier over the training identities (``train_embedding``); its L2-normalised features
   are the face embeddings (``embed``).
3. *Closed-set 1:N identification* on the disjoint test identities: "for each test class, half
   of the face images are randomly assigned to the probe set, and the remaining to the gallery
   set" (``split_probe_gallery``; the distractor set is dropped as in §4.3); probes are ranked
   against the gallery by cosine similarity; Top-k (k = 1, 5, 10, 20, in percent) and mean
   average precision (a fraction, Table 2's 0.32) (``identification_metrics``).

Coordinates are continuous pixel coordinates (pixel centre at +0.5, ``jaxdet.data.
face_records``). The warp uses PIL's affine transform with bilinear filtering, which samples
input pixel ``(j, i)`` at continuous ``(j + 0.5, i + 0.5)`` for output pixel centres
``(x + 0.5, y + 0.5)``: the same convention, so no half-pixel correction is needed.

Layering: ``jaxdet.evaluation`` must not import ``jaxdet.models`` (tests/test_layering.py), so
``train_embedding`` / ``embed`` / ``identification_protocol`` take the network as an argument
(any flax module ``model.apply(variables, x, train=...) -> [B, D]``, e.g.
``jaxdet.models.face_embedding.LightCNN(width=16, embed_dim=64)``).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from PIL import Image

from jaxdet.data.face_records import CANONICAL_FIVE_112, SCHEMES, LandmarkScheme
from jaxdet.data.face_records import scheme as get_scheme

TOP_KS = (1, 5, 10, 20)   # Table 2


# ------------------------------------------------------------------------------- alignment
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991; rotation, uniform scale
  ``s >= 0``, translation; reflections excluded), as a ``2 x 3`` matrix ``M`` with
  ``dst ~ M[:, :2] @ src + M[:, 2]``. ``src``, ``dst``: ``[K, 2]``, K >= 2."""
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
    raise ValueError(f"similarity_transform: src and dst must both be [K, 2] with K >= 2, got "
                     f"{src.shape} and {dst.shape}.")
  if not (np.isfinite(src).all() and np.isfinite(dst).all()):
    raise ValueError("similarity_transform: points must be finite (missing landmarks?).")
  mu_s, mu_d = src.mean(0), dst.mean(0)
  sc, dc = src - mu_s, dst - mu_d
  var_s = (sc ** 2).sum(1).mean()
  if var_s <= 1e-12:
    raise ValueError("similarity_transform: the source points coincide (degenerate landmarks).")
  cov = dc.T @ sc / len(src)                        # [2, 2], Umeyama's Sigma_xy
  u, sv, vt = np.linalg.svd(cov)
  d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rot = u @ np.diag(d) @ vt
  scale = float((sv * d).sum() / var_s)
  t = mu_d - scale * rot @ mu_s
  return np.concatenate([scale * rot, t[:, None]], axis=1)


def canonical_five(out_size: int) -> np.ndarray:
  """ArcFace's five-point template scaled from 112 px to ``out_size`` (continuous coords)."""
  return CANONICAL_FIVE_112.astype(np.float64) * (out_size / 112.0)


def align_faces(images: np.ndarray, five_points: np.ndarray, out_size: int = 32) -> np.ndarray:
  """Warp each face so its five points land on ``canonical_five(out_size)`` (§4.3 "aligned to
  the canonical coordinates using affine transformation", ArcFace's template).

  Args:
    images: ``uint8 [B, H, W, 3]``.
    five_points: ``[B, 5, 2]`` MTCNN points (left eye, right eye, nose, left / right mouth
      corner, image left / right) in continuous pixel coordinates of ``images``.
    out_size: side of the aligned faces.
  Returns:
    ``uint8 [B, out_size, out_size, 3]``; pixels that map outside the input are black.
  """
  images = np.asarray(images)
  pts = np.asarray(five_points, np.float64)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"align_faces: images must be uint8 [B, H, W, 3], got {images.dtype} "
                     f"{images.shape}.")
  if pts.shape != (len(images), 5, 2):
    raise ValueError(f"align_faces: five_points must be [B, 5, 2] = [{len(images)}, 5, 2], got "
                     f"{pts.shape} (convert other schemes with LandmarkScheme.five_points).")
  dst = canonical_five(out_size)
  out = np.empty((len(images), out_size, out_size, 3), np.uint8)
  for b in range(len(images)):
    m = similarity_transform(pts[b], dst)            # input -> output coordinates
    a_inv = np.linalg.inv(m[:, :2])
    inv = np.concatenate([a_inv, (-a_inv @ m[:, 2])[:, None]], axis=1)   # output -> input
    im = Image.fromarray(images[b]).transform((out_size, out_size), Image.Transform.AFFINE,
                                              tuple(inv.reshape(-1)), Image.Resampling.BILINEAR)
    out[b] = np.asarray(im)
  return out


def resize_faces(images: np.ndarray, out_size: int = 32) -> np.ndarray:
  """The "not aligned" reference: faces only resized (bilinear) to ``out_size``."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"resize_faces: images must be uint8 [B, H, W, 3], got {images.dtype} "
                     f"{images.shape}.")
  if images.shape[1:3] == (out_size, out_size):
    return images.copy()
  return np.stack([np.asarray(Image.fromarray(im).resize((out_size, out_size),
                                                         Image.Resampling.BILINEAR))
                   for im in images])


def to_five_points(points: np.ndarray, scheme: str | LandmarkScheme | None = None) -> np.ndarray:
  """``[n, N, 2]`` landmarks of ``scheme`` -> ``[n, 5, 2]`` MTCNN points. With ``scheme=None``
  the scheme is the one with N points (5 = already MTCNN points, 19 = AFLW, 68 = 300W)."""
  points = np.asarray(points, np.float64)
  if points.ndim != 3 or points.shape[-1] != 2:
    raise ValueError(f"landmarks must be [n, N, 2], got {points.shape}.")
  n = points.shape[1]
  if scheme is None:
    found = [s for s in SCHEMES.values() if s.num_points == n]
    if not found:
      raise ValueError(f"no landmark scheme has {n} points (known: "
                       f"{sorted(s.num_points for s in SCHEMES.values())}); pass scheme=.")
    scheme = found[0]
  elif not isinstance(scheme, LandmarkScheme):
    scheme = get_scheme(scheme)
  if scheme.num_points != n:
    raise ValueError(f"landmarks have {n} points but scheme {scheme.name!r} has "
                     f"{scheme.num_points}.")
  return scheme.five_points(points)


# ------------------------------------------------------------------------ probe / gallery
def split_probe_gallery(identities: np.ndarray, seed: int, singletons: str = "error") -> np.ndarray:
  """Random probe / gallery split of §4.3: for each identity with n images, ``floor(n / 2)`` of
  them (chosen by ``seed``) are probes and the rest (at least one) the gallery.

  An identity with a single image cannot give a probe that has a true match in the gallery:
  ``singletons='error'`` (default) raises, ``'gallery'`` keeps such images in the gallery only
  (they act as distractors). Returns ``bool [n]``, True for probes.
  """
  ids = np.asarray(identities).reshape(-1)
  if singletons not in ("error", "gallery"):
    raise ValueError(f"singletons={singletons!r}: use 'error' or 'gallery'.")
  rng = np.random.default_rng(seed)
  probe = np.zeros(len(ids), bool)
  uniq, counts = np.unique(ids, return_counts=True)
  if singletons == "error" and (counts < 2).any():
    bad = uniq[counts < 2]
    raise ValueError(f"split_probe_gallery: {len(bad)} identities have a single image (e.g. "
                     f"{bad[:5].tolist()}) and cannot be split into probe and gallery; drop "
                     f"them or pass singletons='gallery'.")
  for u in uniq:                                      # sorted: deterministic for a seed
    idx = np.flatnonzero(ids == u)
    probe[rng.permutation(idx)[: len(idx) // 2]] = True
  return probe


# ------------------------------------------------------------------------------- metrics
def _l2n(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def identification_metrics(probe_emb: np.ndarray, probe_ids: np.ndarray,
                           gallery_emb: np.ndarray, gallery_ids: np.ndarray,
                           ks: Sequence[int] = TOP_KS) -> dict:
  """Closed-set 1:N identification (§4.3, Table 2) with cosine similarity.

  Each probe ranks the gallery by decreasing cosine similarity (ties keep gallery order).
  ``top{k}``: percent of probes with an image of their identity among the k first gallery
  items. ``mAP``: mean over probes of the average precision of that ranking (the mean of
  precision@r over the ranks r of the probe's true matches), a fraction in [0, 1].

  Every probe identity must have at least one gallery image (closed set).
  """
  p, g = _l2n(probe_emb), _l2n(gallery_emb)
  pid, gid = np.asarray(probe_ids).reshape(-1), np.asarray(gallery_ids).reshape(-1)
  if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1]:
    raise ValueError(f"embeddings must be [n, D] with the same D, got {p.shape} and {g.shape}.")
  if len(p) != len(pid) or len(g) != len(gid) or not len(p) or not len(g):
    raise ValueError(f"{len(p)} probe embeddings / {len(pid)} ids, {len(g)} gallery embeddings "
                     f"/ {len(gid)} ids: need matching, non-empty sets.")
  missing = np.setdiff1d(pid, gid)
  if len(missing):
    raise ValueError(f"closed-set identification: {len(missing)} probe identities have no "
                     f"gallery image (e.g. {missing[:5].tolist()}).")
  order = np.argsort(-(p @ g.T), axis=1, kind="stable")       # [P, G] gallery ranking
  rel = gid[order] == pid[:, None]                            # [P, G] true matches in order
  first = rel.argmax(1)                                       # rank (0-based) of the first match
  out = {f"top{k}": float(100.0 * np.mean(first < k)) for k in ks}
  hits = np.cumsum(rel, axis=1)
  prec = hits / np.arange(1, rel.shape[1] + 1)
  ap = (prec * rel).sum(1) / rel.sum(1)
  out["mAP"] = float(ap.mean())
  out["num_probes"] = int(len(p))
  out["num_gallery"] = int(len(g))
  return out


# --------------------------------------------------------------------- embedding network
def _to_input(x):
  return x.astype(jnp.float32) / 127.5 - 1.0


@functools.lru_cache(maxsize=8)
def _init_fn(model):
  return jax.jit(lambda key, x: model.init({"params": key, "dropout": key}, _to_input(x),
                                           train=False))


def lr_schedule(lr: float, steps: int) -> np.ndarray:
  """Cosine decay of the learning rate from ``lr`` to ``0.1 lr`` over ``steps`` (per step)."""
  return np.asarray(optax.cosine_decay_schedule(lr, steps, alpha=0.1)(np.arange(steps)),
                    np.float32)


_ADAM = optax.scale_by_adam()


@functools.lru_cache(maxsize=8)
def _train_step(model, batch_size: int, flip: bool, mutable: tuple[str, ...]):
  """One jitted classifier step (Adam + decoupled weight decay, i.e. AdamW, with the learning
  rate and decay as arguments), cached so that every row of a protocol run, whatever its
  number of steps or learning rate, compiles it once."""

  def loss_fn(params, state, x, y, rng):
    out = model.apply({"params": params["net"], **state}, x, train=True,
                      mutable=list(mutable) or False, rngs={"dropout": rng})
    emb, new_state = out if mutable else (out, state)
    logits = emb @ params["head"]["kernel"] + params["head"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

  @functools.partial(jax.jit, static_argnums=0)
  def step(unravel, flat, state, opt_state, data, targets, idx, flips, i, key, lr, weight_decay):
    # the optimizer sees one flat parameter vector: Adam's per-leaf updates of a deep pytree
    # take seconds to compile on XLA:CPU, a single vector a fraction of that.
    x = _to_input(data[idx])
    if flip:
      x = jnp.where(flips[:, None, None, None], x[:, :, ::-1], x)
    (loss, state), grads = jax.value_and_grad(
        lambda f: loss_fn(unravel(f), state, x, targets[idx], jax.random.fold_in(key, i)),
        has_aux=True)(flat)
    updates, opt_state = _ADAM.update(grads, opt_state, flat)
    return flat - lr * (updates + weight_decay * flat), state, opt_state, loss

  return step


def train_embedding(images: np.ndarray, identities: np.ndarray, *, model: Any, steps: int = 300,
                    batch_size: int = 32, seed: int = 0, lr: float = 1e-3,
                    weight_decay: float = 5e-4, flip: bool = True) -> dict:
  """Train ``model`` as a softmax classifier over the identities (§4.3: LightCNN trained from
  scratch on the training identities; Table 2a).

  ``model(x [B, S, S, 3] in [-1, 1], train) -> [B, D]`` is followed by a linear classifier head
  over the C distinct identities (zero-initialised); softmax cross-entropy; Adam (optax
  ``scale_by_adam``) with decoupled weight decay ``weight_decay`` (AdamW) and a cosine decay of
  the learning rate to 0.1 ``lr`` (``lr_schedule``); batches drawn at random (with
  replacement) each step; random horizontal flips when ``flip``.

  Args:
    images: ``uint8 [n, S, S, 3]`` (aligned or resized faces).
    identities: ``[n]`` integer identities (any values; at least two distinct).
  Returns:
    The embedding network's variables (the classifier head is dropped), for ``embed``.
  """
  images = np.asarray(images)
  ids = np.asarray(identities).reshape(-1)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"train_embedding: images must be uint8 [n, S, S, 3], got {images.dtype} "
                     f"{images.shape}.")
  if len(ids) != len(images):
    raise ValueError(f"train_embedding: {len(images)} images but {len(ids)} identities.")
  if steps < 1 or batch_size < 1:
    raise ValueError(f"train_embedding: steps ({steps}) and batch_size ({batch_size}) must be >= 1.")
  _, labels = np.unique(ids, return_inverse=True)
  num_classes = int(labels.max()) + 1
  if num_classes < 2:
    raise ValueError("train_embedding: need at least two identities to train a classifier.")

  key = jax.random.key(seed)
  k_init, key = jax.random.split(key)
  x0 = jnp.asarray(images[:1])
  variables = dict(_init_fn(model)(k_init, x0))
  dim = jax.eval_shape(lambda v: model.apply(v, _to_input(x0), train=False), variables).shape[-1]
  # zero-initialised classifier head: no random draw to compile (slow on XLA:CPU), and softmax
  # training starts from uniform predictions; the embedding gets gradients from the first update.
  head = {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))}
  params = {"net": variables.pop("params"), "head": head}
  state = variables                                   # e.g. 'batch_stats' (none for LightCNN)
  flat, unravel = ravel_pytree(params)
  opt_state = _ADAM.init(flat)
  data = jnp.asarray(images)
  targets = jnp.asarray(labels, jnp.int32)
  step = _train_step(model, int(batch_size), bool(flip), tuple(state.keys()))
  wd = jnp.float32(weight_decay)
  # batches and flips are drawn on the host: XLA:CPU compiles each threefry draw slowly, and
  # the step is compiled once per model anyway.
  rng = np.random.default_rng(seed)
  for i, lr_t in enumerate(lr_schedule(lr, steps)):
    idx = rng.integers(0, len(images), batch_size).astype(np.int32)
    flips = rng.random(batch_size) < 0.5
    flat, state, opt_state, loss = step(unravel, flat, state, opt_state, data, targets, idx,
                                        flips, np.int32(i), key, lr_t, wd)
  params = unravel(flat)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"train_embedding: the loss diverged ({float(loss)}); lower lr.")
  return {"params": params["net"], **state}


@functools.lru_cache(maxsize=16)
def _embed_fn(model):
  return jax.jit(lambda v, x: model.apply(v, _to_input(x), train=False))


def embed(model: Any, variables: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """L2-normalised embeddings ``float32 [n, D]`` of ``uint8 [n, S, S, 3]`` faces (cosine
  similarity is then a dot product). Batches are padded to ``batch_size`` (one compilation)."""
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"embed: images must be uint8 [n, S, S, 3], got {images.dtype} "
                     f"{images.shape}.")
  fn = _embed_fn(model)
  bs = max(1, min(batch_size, len(images)))
  out = []
  for i in range(0, len(images), bs):
    chunk = images[i:i + bs]
    pad = bs - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(fn(variables, jnp.asarray(chunk)))[: bs - pad])
  emb = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
  return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------ protocol
def prepare_faces(images: np.ndarray, points: np.ndarray | None, out_size: int,
                  scheme: str | LandmarkScheme | None = None) -> np.ndarray:
  """Aligned faces (``points`` of any scheme) or, with ``points=None``, resized faces."""
  if points is None:
    return resize_faces(images, out_size)
  return align_faces(images, to_five_points(points, scheme), out_size)


def identification_protocol(train_images: np.ndarray, train_ids: np.ndarray,
                            train_points: np.ndarray | None, test_images: np.ndarray,
                            test_ids: np.ndarray, test_points: np.ndarray | None, *,
                            model: Any = None, scheme: str | LandmarkScheme | None = None,
                            out_size: int = 32, steps: int = 300, batch_size: int = 32,
                            seed: int = 0, lr: float = 1e-3, weight_decay: float = 5e-4,
                            ks: Sequence[int] = TOP_KS, singletons: str = "error") -> dict:
  """One row of Table 2: align (or only resize, ``points=None``) train and test faces, train
  ``model`` on the train identities, identify the test identities closed-set (§4.3).

  Args:
    train_images, test_images: ``uint8 [n, H, W, 3]`` faces (e.g. real LR faces, §4.3 TinyFace).
    train_ids, test_ids: ``[n]`` identities (train and test identities are disjoint in §4.3;
      not required here).
    train_points, test_points: ``[n, N, 2]`` landmarks of ``scheme`` in the pixels of the
      images (predicted by G2, or the truth), or ``None`` for the "not aligned" row.
    model: the embedding network, a flax module ``(x, train) -> [B, D]`` (e.g.
      ``jaxdet.models.face_embedding.LightCNN(width=16, embed_dim=64)``); required (evaluation/
      may not import jaxdet.models).
    scheme: landmark scheme of the points (name or ``LandmarkScheme``); ``None``: inferred from
      the number of points (5 / 19 / 68).
    out_size, steps, batch_size, seed, lr, weight_decay: alignment and training settings
      (``seed`` also draws the probe / gallery split).
  Returns:
    ``{'top1', 'top5', 'top10', 'top20'}`` (percent), ``'mAP'`` (fraction), and counts.
  """
  if model is None:
    raise TypeError("identification_protocol needs model=, the embedding network (e.g. "
                    "jaxdet.models.face_embedding.LightCNN(width=..., embed_dim=...)); "
                    "jaxdet.evaluation may not import jaxdet.models (tests/test_layering.py).")
  if (train_points is None) != (test_points is None):
    raise ValueError("identification_protocol: give points for both train and test faces (an "
                     "aligned row) or for neither (the not-aligned row).")
  train_faces = prepare_faces(train_images, train_points, out_size, scheme)
  test_faces = prepare_faces(test_images, test_points, out_size, scheme)
  test_ids = np.asarray(test_ids).reshape(-1)
  if len(test_ids) != len(test_faces):
    raise ValueError(f"{len(test_faces)} test images but {len(test_ids)} test identities.")
  probe = split_probe_gallery(test_ids, seed, singletons)
  variables = train_embedding(train_faces, train_ids, model=model, steps=steps,
                              batch_size=batch_size, seed=seed, lr=lr, weight_decay=weight_decay)
  emb = embed(model, variables, test_faces)
  out = identification_metrics(emb[probe], test_ids[probe], emb[~probe], test_ids[~probe], ks)
  out.update(aligned=train_points is not None, out_size=int(out_size),
             num_train_images=int(len(train_faces)),
             num_train_ids=int(len(np.unique(np.asarray(train_ids)))),
             num_test_ids=int(len(np.unique(test_ids))))
  return out
