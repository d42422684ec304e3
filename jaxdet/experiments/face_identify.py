"""``--mode=identify`` of a landmark run: the face identification protocol of Table 2 (§4.3).

Faces of the identification sets (``config.identify.train`` / ``.test``: the embedded benchmark's
real-LR faces of synthetic identities, or TinyFace-style folders) are aligned to canonical
five-point coordinates with the landmarks G2 predicts *directly in low resolution* (or, for an
``hr_ld`` run, on the faces upsampled to 128 px, the rescaling baseline of §4.3), a small
embedding network is trained on the train identities, and the test identities are identified
closed-set (half of each identity's faces are probes, the rest the gallery): top-1/5/10/20 and
mAP. Two reference rows use the same protocol: faces aligned with their *true* landmarks (when
the source has them) and faces not aligned at all. Written to ``<workdir>/identification.json``.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from PIL import Image

from jaxdet.data import face_factory
from jaxdet.evaluation import face_identification as fid
from jaxdet.models.face_embedding import LightCNN


def _load(exp, specs):
  cfg = exp.config.identify
  src = face_factory.face_source(specs, exp.config.data, size=cfg.source_size,
                                 scheme=exp.config.landmarks.scheme)
  exs = [src[i] for i in range(len(src))]
  images = np.stack([e.image for e in exs])
  ids = np.array([e.identity for e in exs], np.int64)
  if (ids < 0).any():
    raise ValueError(f"identification faces {specs!r}: {int((ids < 0).sum())} faces have no "
                     f"identity; use a source with identities (e.g. benchmark:id_train or an "
                     f"image folder with one sub-folder per identity).")
  truth = (np.stack([e.landmarks for e in exs]) if src.scheme == exp.scheme.name
           and all(e.landmarks is not None for e in exs) else None)
  return images, ids, truth


def _predicted_points(exp, state, images: np.ndarray) -> np.ndarray:
  """G2's landmarks in the pixels of ``images`` (resized to the model's input when needed)."""
  s = exp.config.landmarks.input_size
  if images.shape[1] == s:
    return exp.predict(state, images)
  big = np.stack([np.asarray(Image.fromarray(im).resize((s, s), Image.BILINEAR))
                  for im in images])
  return exp.predict(state, big) * (images.shape[1] / s)


def identify(exp, state, workdir: str) -> dict:
  cfg = exp.config.identify
  train_images, train_ids, train_truth = _load(exp, cfg.train)
  test_images, test_ids, test_truth = _load(exp, cfg.test)
  five = exp.scheme.five_points
  kw = dict(model=LightCNN(width=cfg.width, embed_dim=cfg.embed_dim), out_size=cfg.aligned_size,
            steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=exp.config.seed)
  rows = {}
  pred_train = five(_predicted_points(exp, state, train_images))
  pred_test = five(_predicted_points(exp, state, test_images))
  rows[f"aligned_{exp.config.landmarks.setting}"] = fid.identification_protocol(
      train_images, train_ids, pred_train, test_images, test_ids, pred_test, **kw)
  if train_truth is not None and test_truth is not None:
    rows["aligned_true_landmarks"] = fid.identification_protocol(
        train_images, train_ids, five(train_truth), test_images, test_ids, five(test_truth), **kw)
  rows["not_aligned"] = fid.identification_protocol(train_images, train_ids, None, test_images,
                                                   test_ids, None, **kw)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "identification.json"), "w") as f:
      json.dump(rows, f, indent=1)
    keys = ("top1", "top5", "top10", "top20", "mAP")
    print(f"{'alignment':<28}" + "".join(f"{k:>8}" for k in keys))
    for name, r in rows.items():
      print(f"{name:<28}" + "".join(f"{r[k]:8.3f}" if k == "mAP" else f"{r[k]:8.2f}"
                                    for k in keys))
  return {f"{name}_{k}": v for name, r in rows.items() for k, v in r.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}
