"""TFDS face-landmark datasets (``the300w_lp``, ``aflw2k3d``) as ``FaceSource``s of face crops.

Extra 68-point data for the low-resolution landmark paper's HR set (§3 uses AFLW + 300W; these
TFDS builders carry 300W-LP, the large-pose augmentation of 300W, and AFLW2000-3D), read with
``builder.as_data_source(split)`` (random access, prepared as ArrayRecord, no TensorFlow needed).
``tensorflow_datasets`` is optional (``pip install jaxdet[tfds]``), imported only when a
``TfdsFaceSource`` is made; ``face_example_from_tfds`` is the pure feature mapping.

Features (catalog pages https://www.tensorflow.org/datasets/catalog/the300w_lp and
https://www.tensorflow.org/datasets/catalog/aflw2k3d, version 1.0.0, one ``train`` split of
61,225 / 2,000 examples):

* ``the300w_lp``: ``image`` uint8 (450, 450, 3); ``landmarks_2d`` float32 (68, 2), plus
  ``landmarks_origin`` / ``landmarks_3d`` (68, 2), ``roi`` and 3DMM parameters;
* ``aflw2k3d``: ``image`` uint8 (450, 450, 3); ``landmarks_68_3d_xy_normalized`` float32
  (68, 2) and ``landmarks_68_3d_z`` (68, 1) (the depth; not used).

Coordinate convention. The catalog gives shapes only; the builders
(``tensorflow_datasets/datasets/{the300w_lp,aflw2k3d}/*_dataset_builder.py``) store the (x, y)
of the 3DDFA ``.mat`` files divided by the constant 450 (the side of every image), x first:
``landmarks_2d = pts_2d / 450`` and ``landmarks_68_3d_xy_normalized = pt3d_68[:2].T / 450``.
Neither the catalog nor the builders state the pixel origin; the ``.mat`` files come from
3DDFA's Matlab pipeline (and 300W-LP's ``landmarks_origin`` from 300W's 1-based ``.pts``), so
we read them as 1-based Matlab coordinates (pixel (1, 1) centred at 1.0): in jaxdet's
continuous convention a point is ``v * 450 - 0.5`` (``ONE_BASED_OFFSET``; were they 0-based,
the error would be 0.5 px of 450, 0.1 % of the image). If an image is not 450 x 450
(a hand-made record), the 450-px coordinates are scaled to its size. Every point counts as
visible (the 3-D landmarks of AFLW2000-3D are projected, self-occluded ones included); the face
box is the bounds of the 68 points, and the source crops ``crop_face(margin)`` around it.
"""
from __future__ import annotations

import numpy as np

from jaxdet.data.face_records import FaceExample
from jaxdet.data.face_sources import _check_size_pad, crop_face
from jaxdet.data.tfds_source import _import_tfds

# dataset -> the feature holding the (68, 2) normalised (x, y)
LANDMARK_FEATURES = {"the300w_lp": "landmarks_2d", "aflw2k3d": "landmarks_68_3d_xy_normalized"}
NORMALISER = 450.0  # the builders divide by this constant (the image side)
ONE_BASED_OFFSET = 0.5  # Matlab 1-based pixel coordinates -> continuous (face_records)


def _base(name: str) -> str:
  base = str(name).split("/")[0].split(":")[0]
  if base not in LANDMARK_FEATURES:
    raise ValueError(f"TFDS face dataset {name!r} is not supported; use one of "
                     f"{sorted(LANDMARK_FEATURES)} (68 points).")
  return base


def face_example_from_tfds(name: str, features: dict, *, key: str = "",
                           landmarks_feature: str | None = None) -> FaceExample:
  """One TFDS record -> a ``FaceExample`` of the *whole* image (landmarks in its continuous
  pixel coordinates, all visible, box = their bounds; module docstring for the convention).

  ``landmarks_feature`` overrides the default feature (e.g. ``'landmarks_origin'`` of
  ``the300w_lp``, the original 300W annotation, same normalisation).
  """
  base = _base(name)
  key = key or base
  image = np.asarray(features["image"])
  if image.ndim == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{key}: 'image' must be uint8 [H, W, 3], got {image.dtype} {image.shape}.")
  feature = landmarks_feature or LANDMARK_FEATURES[base]
  if feature not in features:
    raise ValueError(f"{key}: no feature {feature!r} (features: {sorted(features)}).")
  xy = np.asarray(features[feature], np.float64)
  if xy.shape != (68, 2) or not np.isfinite(xy).all():
    raise ValueError(f"{key}: {feature!r} must be 68 finite (x, y) pairs, got shape {xy.shape}.")
  h, w = image.shape[:2]
  pixels = (xy * NORMALISER - ONE_BASED_OFFSET) * [w / NORMALISER, h / NORMALISER]
  return FaceExample(image, pixels.astype(np.float32), np.ones(68, bool), key=key)


class TfdsFaceSource:
  """A prepared TFDS face split (``the300w_lp`` / ``aflw2k3d``) as 68-point face crops.

  Args:
    name: 'the300w_lp' or 'aflw2k3d' (a version suffix is fine).
    split: TFDS split ('train' is the only one; slices like 'train[:90%]' work).
    data_dir: TFDS data dir (default: TFDS' own).
    size, margin, pad: the crop (``face_sources.crop_face``) around the landmarks' bounds.

  Keys are ``NAME/SPLIT/INDEX``.
  """

  scheme = "68"

  def __init__(self, name: str, split: str = "train", *, data_dir=None, size: int = 128,
               margin: float = 0.25, pad: str = "zero"):
    _base(name)
    _check_size_pad(size, margin, pad)
    self.name, self.split, self.data_dir = name, split, data_dir
    self.size, self.margin, self.pad = int(size), float(margin), pad
    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    prepare = (f"tfds build {name} --data_dir={data_dir or '~/tensorflow_datasets'} "
               "--file_format=array_record")
    if not builder.is_prepared():
      raise FileNotFoundError(f"TFDS dataset '{name}' is not prepared in "
                              f"'{data_dir or 'the default TFDS data_dir'}'. Prepare it with: "
                              f"{prepare}")
    try:
      self._ds = builder.as_data_source(split)
    except NotImplementedError as e:
      raise ValueError(f"TFDS dataset '{name}' is prepared, but not as ArrayRecord (needed for "
                       f"random access). Rebuild it with: {prepare}") from e

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i: int) -> FaceExample:
    if not -len(self) <= i < len(self):
      raise IndexError(f"index {i} out of range for {len(self)} faces")
    i = range(len(self))[i]
    ex = face_example_from_tfds(self.name, self._ds[i], key=f"{self.name}/{self.split}/{i}")
    crop, lm, box = crop_face(ex.image, ex.box, self.size, ex.landmarks, margin=self.margin,
                              pad=self.pad)
    return FaceExample(crop, lm, ex.visible, box, key=ex.key)

  def __repr__(self) -> str:
    return f"TfdsFaceSource('{self.name}', '{self.split}', faces={len(self)}, size={self.size})"
