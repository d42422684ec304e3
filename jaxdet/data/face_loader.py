"""Face-crop batches for heatmap landmark training (low-resolution landmark paper, §3.2 and §4.1).

Order, resume, sharding, eval padding and prefetching are ``loader.StepLoader``'s; this module
turns a ``FaceSource`` example into the network input:

1. (train, ``augment``) the §4.1 augmentation, a random similarity (scale 0.9-1.1, rotation
   +-30 deg, translation up to 20 px at 128 px) applied to pixels and landmarks together
   (``landmark_augment``), at the source resolution;
2. the input transform to ``image_size`` (the experimental settings of §4.1 / §4.2):

   * ``'none'``: the source already has ``image_size`` (e.g. generated or real 32 x 32 LR crops,
     or HR crops for HR-LD); any other size is an error;
   * ``'subsample'``: the paper's F (Gaussian smoothing + average pooling, §3.1 Eq. 4 / §4.1,
     ``jaxdet.ops.subsample``) by the integer factor ``source / image_size``: setting S1's LR
     images made from HR crops;
   * ``'resize'``: PIL bilinear resize to ``image_size`` (e.g. evaluating HR-LD on upsampled LR
     faces, the "current practice of rescaling" baseline, Fig. 1). Pillow's bilinear resize is
     centre-aligned (so coordinates scale exactly) and widens its triangle filter when
     shrinking (it then also low-pass filters).

   Landmarks and box are scaled with the image (continuous coordinates scale exactly).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from jaxdet.data import landmark_augment
from jaxdet.data.face_records import FaceExample, scheme as get_scheme
from jaxdet.data.loader import StepLoader
from jaxdet.ops.subsample import DEFAULT_SIGMA, subsample_uint8

_AUG_TAG = 7011   # ``example_rng`` tag of the similarity augmentation
INPUT_TRANSFORMS = ("none", "subsample", "resize")


class FaceLoader(StepLoader):
  """Iterable over numpy batches of face crops with landmarks.

  Args:
    source: a ``FaceSource`` (``len``, ``source[i] -> FaceExample``, ``scheme``: '68' / '19' /
      '5', or '' for unlabelled faces such as real LR crops).
    batch_size: examples per batch *of this process*.
    train: endless shuffled stream (with augmentation when ``augment``) or one ordered pass.
    image_size: side ``S`` of the square network input (int or ``(S, S)``).
    seed: non-negative int; fixes the order and the augmentation.
    augment: apply the §4.1 similarity augmentation in training.
    scale, rotation_deg, translation_px: its ranges (``translation_px`` at a 128 px source,
      scaled with the source size, see ``landmark_augment.random_similarity``).
    input_transform: 'none', 'subsample' or 'resize' (module docstring).
    subsample_sigma: Gaussian std of F in source pixels (``jaxdet.ops.subsample.DEFAULT_SIGMA``).
    fill: value of pixels the augmentation brings in from outside the crop.
    num_workers, process_index, process_count, start_step, prefetch: see ``StepLoader``.

  Each batch has: ``image`` uint8 ``[b, S, S, 3]``; ``landmarks`` float32 ``[b, N, 2]`` in
  output pixels (zeros when unlabelled); ``visible`` bool ``[b, N]``; ``labelled`` bool ``[b]``;
  ``box`` float32 ``[b, 4]`` xyxy in output pixels (zeros when unknown); ``identity`` int32
  ``[b]`` (-1 unknown / padding); ``index`` int64 ``[b]`` (source index, -1 for padding);
  ``example_valid`` bool ``[b]`` (False for eval padding). ``N`` is the source scheme's number of
  points (0 for an unlabelled source). Landmarks moved outside the image by the augmentation
  keep their visibility flag (their heatmaps are simply partly or wholly off the map).
  """

  def __init__(self, source, *, batch_size: int, train: bool, image_size, seed: int = 0,
               augment: bool = True, scale=(0.9, 1.1), rotation_deg: float = 30.0,
               translation_px: float = 20.0, input_transform: str = "none",
               subsample_sigma: float = DEFAULT_SIGMA, fill=0, num_workers: int = 2,
               process_index: int = 0, process_count: int = 1, start_step: int = 0,
               prefetch: int = 2):
    super().__init__(source, batch_size=batch_size, train=train, seed=seed,
                     num_workers=num_workers, process_index=process_index,
                     process_count=process_count, start_step=start_step, prefetch=prefetch)
    if np.ndim(image_size) == 0:
      image_size = (image_size, image_size)
    if len(image_size) != 2 or int(image_size[0]) != int(image_size[1]) or int(image_size[0]) < 1:
      raise ValueError(f"image_size must be a positive int S (square S x S input), got {image_size}")
    if input_transform not in INPUT_TRANSFORMS:
      raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {input_transform!r}")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
      raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
    if rotation_deg < 0 or translation_px < 0 or subsample_sigma < 0:
      raise ValueError("rotation_deg, translation_px and subsample_sigma must be >= 0, got "
                       f"{rotation_deg}, {translation_px}, {subsample_sigma}")
    name = getattr(source, "scheme", None)
    if name is None:
      raise ValueError(f"{type(source).__name__} has no 'scheme' attribute: a FaceSource names its "
                       "landmark scheme ('68', '19', '5', or '' when unlabelled)")
    self.scheme = str(name)
    self.num_points = get_scheme(self.scheme).num_points if self.scheme else 0
    self.image_size = int(image_size[0])
    self.augment = bool(augment)
    self.scale = (lo, hi)
    self.rotation_deg = float(rotation_deg)
    self.translation_px = float(translation_px)
    self.input_transform = input_transform
    self.subsample_sigma = float(subsample_sigma)
    self.fill = fill

  # ------------------------------------------------------------------ one example
  def _check_points(self, ex: FaceExample):
    if ex.landmarks is None:
      return
    if not self.scheme:
      raise ValueError(f"face {ex.key!r} has {len(ex.landmarks)} landmarks but the source "
                       f"({type(self.source).__name__}) declares no scheme (scheme='')")
    if len(ex.landmarks) != self.num_points:
      raise ValueError(f"face {ex.key!r} has {len(ex.landmarks)} landmarks; scheme "
                       f"{self.scheme!r} of {type(self.source).__name__} has {self.num_points}")

  def to_input(self, image: np.ndarray, landmarks, box, key: str = ""):
    """Applies ``input_transform`` (no augmentation): ``(image [S, S, 3], landmarks, box)``."""
    s = self.image_size
    h, w = image.shape[:2]
    mode = self.input_transform
    if mode == "none":
      if (h, w) != (s, s):
        raise ValueError(
            f"face {key!r} of {type(self.source).__name__} is {h} x {w} but the loader has "
            f"image_size={s} and input_transform='none', which needs {s} x {s} source crops. Use "
            f"input_transform='subsample' (F, integer factor) or 'resize', or image_size={h}.")
      return image, landmarks, box
    if mode == "subsample":
      if h % s or w % s or h // s != w // s:
        raise ValueError(
            f"face {key!r} of {type(self.source).__name__} is {h} x {w}: input_transform="
            f"'subsample' needs a square source whose side is an integer multiple of "
            f"image_size={s} (F averages factor x factor blocks).")
      factor = h // s
      out = subsample_uint8(image, factor, self.subsample_sigma)
      sx = sy = 1.0 / factor
    else:
      out = np.asarray(Image.fromarray(image).resize((s, s), Image.BILINEAR))
      sx, sy = s / w, s / h
    mult = np.array([sx, sy], np.float32)
    if landmarks is not None:
      landmarks = (np.asarray(landmarks, np.float32) * mult).astype(np.float32)
    if box is not None:
      box = (np.asarray(box, np.float32) * np.tile(mult, 2)).astype(np.float32)
    return out, landmarks, box

  def prepare(self, position: int, index: int) -> dict:
    """``source[index]``, augmented (train) and brought to ``image_size``."""
    ex: FaceExample = self.source[index]
    self._check_points(ex)
    image, landmarks, box = ex.image, ex.landmarks, ex.box
    if self.train and self.augment:
      rng = self.example_rng(_AUG_TAG, position)
      m = landmark_augment.random_similarity(
          rng, image.shape[:2], scale=self.scale, rotation_deg=self.rotation_deg,
          translation_px=self.translation_px)
      image, landmarks = landmark_augment.warp_face(image, landmarks, m, fill=self.fill)
      box = landmark_augment.transform_box(m, box)
    image, landmarks, box = self.to_input(image, landmarks, box, ex.key)
    return dict(image=image, landmarks=landmarks, visible=ex.visible, box=box,
                identity=int(ex.identity), index=int(index))

  # ------------------------------------------------------------------ batch
  def collate(self, examples: list[dict | None]) -> dict[str, np.ndarray]:
    """Stacks prepared examples into the batch dict of the class docstring (None: padding)."""
    b, s, n = len(examples), self.image_size, self.num_points
    batch = {
        "image": np.zeros((b, s, s, 3), np.uint8),
        "landmarks": np.zeros((b, n, 2), np.float32),
        "visible": np.zeros((b, n), bool),
        "labelled": np.zeros((b,), bool),
        "box": np.zeros((b, 4), np.float32),
        "identity": np.full((b,), -1, np.int32),
        "index": np.full((b,), -1, np.int64),
        "example_valid": np.zeros((b,), bool),
    }
    for i, ex in enumerate(examples):
      if ex is None:
        continue
      batch["image"][i] = ex["image"]
      if ex["landmarks"] is not None:
        batch["landmarks"][i] = ex["landmarks"]
        batch["visible"][i] = ex["visible"]
        batch["labelled"][i] = True
      if ex["box"] is not None:
        batch["box"][i] = ex["box"]
      batch["identity"][i] = ex["identity"]
      batch["index"][i] = ex["index"]
      batch["example_valid"][i] = True
    return batch
