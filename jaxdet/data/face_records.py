"""Face records: one face crop with its landmarks, the protocol face sources follow, and the
landmark schemes (68-point 300W, 19-point AFLW, 5-point MTCNN) of the low-resolution landmark
paper (Bulat-style high-to-low GAN + semi-supervised heatmap GAN, §3-4).

Conventions (shared by every face module of jaxdet):

* ``image`` is ``uint8 [H, W, 3]`` RGB, usually square (128 x 128 HR, 32 x 32 LR);
* ``landmarks`` are ``float32 [N, 2]`` ``(x, y)`` in *continuous* pixel coordinates: the image
  spans ``[0, W] x [0, H]`` and pixel ``(row i, col j)`` has its centre at ``(j + 0.5, i + 0.5)``
  (the box convention of ``records.py``). Resizing by a factor ``s`` multiplies coordinates by
  ``s`` exactly (so the LR truth of a 4x average-pooled HR face is ``landmarks / 4``). Files with
  1-based pixel-index coordinates (300W ``.pts``, Matlab) are converted on load (``x - 0.5``);
* ``visible`` is ``bool [N]``: annotated and visible (AFLW marks missing points; 300W has all);
  NRMSE averages over visible points only;
* ``box`` is the face box ``float32 [4]`` absolute ``xyxy`` (AFLW's normaliser is its size);
* ``identity`` is an int for face identification (``-1``: unknown); ``key`` names the record
  (file name or ``split/index``) in error messages.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass
class FaceExample:
  """One face crop. ``landmarks`` / ``visible`` are ``None`` for unlabelled faces (real LR)."""

  image: np.ndarray
  landmarks: np.ndarray | None = None
  visible: np.ndarray | None = None
  box: np.ndarray | None = None
  identity: int = -1
  key: str = ""

  def __post_init__(self):
    self.image = np.asarray(self.image)
    if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[-1] != 3:
      raise ValueError(f"face {self.key!r}: image must be uint8 [H, W, 3], got "
                       f"{self.image.dtype} {self.image.shape}.")
    if self.landmarks is not None:
      self.landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 2)
      if self.visible is None:
        self.visible = np.ones(len(self.landmarks), bool)
      self.visible = np.asarray(self.visible, bool).reshape(-1)
      if len(self.visible) != len(self.landmarks):
        raise ValueError(f"face {self.key!r}: {len(self.landmarks)} landmarks but "
                         f"{len(self.visible)} visibility flags.")
    if self.box is None and self.landmarks is not None and self.visible.any():
      pts = self.landmarks[self.visible]
      self.box = np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)
    if self.box is not None:
      self.box = np.asarray(self.box, np.float32).reshape(4)

  @property
  def labelled(self) -> bool:
    return self.landmarks is not None


@runtime_checkable
class FaceSource(Protocol):
  """Random access to face crops: ``len(source)``, ``source[i] -> FaceExample``, and
  ``scheme`` (a key of ``SCHEMES``; ``''`` for unlabelled sources)."""

  scheme: str

  def __len__(self) -> int: ...

  def __getitem__(self, i: int) -> FaceExample: ...


@dataclasses.dataclass(frozen=True)
class LandmarkScheme:
  """A landmark layout.

  Attributes:
    name: '68' (iBUG/300W), '19' (AFLW-Full, the 21 AFLW points without the ears) or '5'
      (MTCNN: eye centres, nose tip, mouth corners).
    num_points: N.
    pupils: two lists of point indices whose means are the left / right pupil (eye centres),
      in image left / right order.
    outer_eye_corners: the two outer eye-corner indices (inter-ocular distance, 300W), or
      ``None`` when the scheme has none.
    to_five: ``[5, N]`` weights: the MTCNN five points as weighted means of this scheme's points
      (alignment for face identification, Table 2).
    names: one short name per point.
  """

  name: str
  num_points: int
  pupils: tuple[tuple[int, ...], tuple[int, ...]]
  outer_eye_corners: tuple[int, int] | None
  to_five: np.ndarray
  names: tuple[str, ...]

  def five_points(self, landmarks: np.ndarray) -> np.ndarray:
    """``[..., N, 2]`` -> ``[..., 5, 2]`` MTCNN points."""
    return np.einsum("kn,...nc->...kc", self.to_five, np.asarray(landmarks, np.float64))


def _weights(rows: list[list[int]], n: int) -> np.ndarray:
  w = np.zeros((len(rows), n))
  for r, idx in enumerate(rows):
    w[r, idx] = 1.0 / len(idx)
  return w


# 68 points (iBUG, 0-based): jaw 0-16, brows 17-21 | 22-26, nose 27-35, eyes 36-41 | 42-47,
# mouth 48-67. "Left" is the image left throughout.
_NAMES_68 = tuple([f"jaw{i}" for i in range(17)] + [f"brow{i}" for i in range(10)]
                  + [f"nose{i}" for i in range(9)] + [f"eye{i}" for i in range(12)]
                  + [f"mouth{i}" for i in range(20)])
# AFLW-Full 19 points: the 21 AFLW points without the two ears, in AFLW order.
_NAMES_19 = ("left_brow_left", "left_brow_centre", "left_brow_right", "right_brow_left",
             "right_brow_centre", "right_brow_right", "left_eye_left", "left_eye_centre",
             "left_eye_right", "right_eye_left", "right_eye_centre", "right_eye_right",
             "nose_left", "nose_tip", "nose_right", "mouth_left", "mouth_centre", "mouth_right",
             "chin")
_NAMES_5 = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")

# Each of the 19 AFLW points as a mean of 68-point indices (used by the embedded benchmark,
# which renders 68 points and derives the other schemes from them).
FROM_68_TO_19 = _weights([[17], [19], [21], [22], [24], [26], [36], list(range(36, 42)), [39],
                          [42], list(range(42, 48)), [45], [31], [30], [35], [48], [62, 66],
                          [54], [8]], 68)
FROM_68_TO_5 = _weights([list(range(36, 42)), list(range(42, 48)), [30], [48], [54]], 68)

SCHEMES = {
    "68": LandmarkScheme("68", 68, (tuple(range(36, 42)), tuple(range(42, 48))), (36, 45),
                         FROM_68_TO_5, _NAMES_68),
    "19": LandmarkScheme("19", 19, ((7,), (10,)), (6, 11),
                         _weights([[7], [10], [13], [15], [17]], 19), _NAMES_19),
    "5": LandmarkScheme("5", 5, ((0,), (1,)), None, np.eye(5), _NAMES_5),
}


def scheme(name: str) -> LandmarkScheme:
  """The landmark scheme ``name`` ('68', '19' or '5'), with a clear error otherwise."""
  if str(name) not in SCHEMES:
    raise ValueError(f"unknown landmark scheme {name!r}: use one of {sorted(SCHEMES)} "
                     f"(68 = 300W, 19 = AFLW, 5 = MTCNN).")
  return SCHEMES[str(name)]


def from_68(landmarks: np.ndarray, name: str) -> np.ndarray:
  """68-point landmarks ``[..., 68, 2]`` -> scheme ``name``."""
  if name == "68":
    return np.asarray(landmarks, np.float32)
  weights = {"19": FROM_68_TO_19, "5": FROM_68_TO_5}
  scheme(name)  # a clear error for an unknown name
  return np.einsum("kn,...nc->...kc", weights[name], np.asarray(landmarks, np.float64)).astype(np.float32)


# ArcFace's 112 x 112 alignment template of the five MTCNN points (insightface), in continuous
# pixel coordinates of a 112-px crop; scaled to the crop size used (Table 2's alignment).
CANONICAL_FIVE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                               [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
