"""Detection records: one annotated image, and the protocol every dataset source follows.

Conventions (shared by all of jaxdet, see DESIGN.md "Conventions"):

* ``image`` is ``uint8 [H, W, 3]`` RGB;
* ``boxes`` are absolute-pixel ``xyxy`` float32 (COCO ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``,
  no "+1" convention); COCO ``xywh`` only exists at the edges (JSON in, results out);
* ``classes`` are contiguous ints ``0..C-1``; a source keeps the mapping back to the original
  category ids in ``category_ids`` (``category_ids[c]`` is the dataset id of contiguous class ``c``).

No paper equation is implemented here; these are the data structures the RetinaNet-family
training targets (AP-loss, Chen et al. §3.1.1) are built from.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@dataclasses.dataclass
class DetectionExample:
  """One image with its (cleaned) box annotations.

  Attributes:
    image: ``uint8 [H, W, 3]`` RGB, or ``None`` for an annotation-only record (see
      ``DetectionSource.annotation``).
    boxes: ``float32 [n, 4]`` absolute-pixel ``xyxy``.
    classes: ``int32 [n]`` contiguous class indices ``0..C-1``.
    image_id: the dataset's image id (COCO ``image.id``), used to report detections.
    file_name: image file name relative to the source's image root (informational).
    is_crowd: ``bool [n]``: crowd regions (COCO ``iscrowd``) or VOC "difficult" objects; they are
      ignored by COCO evaluation. Sources drop them from training examples by default.
    height, width: original image size; filled from ``image`` when it is given.
    masks: optional instance segmentations, one COCO ``segmentation`` per object (same order as
      ``boxes``) in original image pixels: a polygon list ``[[x1, y1, x2, y2, ...], ...]`` or an
      RLE dict ``{"size": [h, w], "counts": str | list}``. ``None``: the source has no instance
      masks. ``jaxdet.data.instance_masks`` rasterises them into box frames (Mask R-CNN targets,
      He et al. 2017 §3).
  """

  image: np.ndarray | None
  boxes: np.ndarray
  classes: np.ndarray
  image_id: int
  file_name: str = ""
  is_crowd: np.ndarray | None = None
  height: int = -1
  width: int = -1
  masks: list | None = None

  def __post_init__(self):
    self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
    self.classes = np.asarray(self.classes, np.int32).reshape(-1)
    if self.is_crowd is None:
      self.is_crowd = np.zeros(self.classes.shape, bool)
    self.is_crowd = np.asarray(self.is_crowd, bool).reshape(-1)
    if not (len(self.boxes) == len(self.classes) == len(self.is_crowd)):
      raise ValueError(
          f"DetectionExample(image_id={self.image_id}): boxes ({len(self.boxes)}), classes "
          f"({len(self.classes)}) and is_crowd ({len(self.is_crowd)}) must have one row per object."
      )
    if self.masks is not None:
      if not isinstance(self.masks, (list, tuple)):
        raise ValueError(
            f"DetectionExample(image_id={self.image_id}): masks must be None or a list with one "
            f"COCO segmentation per object, got {type(self.masks).__name__}.")
      self.masks = list(self.masks)
      if len(self.masks) != len(self.boxes):
        raise ValueError(
            f"DetectionExample(image_id={self.image_id}): masks ({len(self.masks)}) must have one "
            f"segmentation per object ({len(self.boxes)} boxes); pass masks=None if the source has "
            "no instance masks.")
    if self.image is not None:
      if self.image.ndim != 3 or self.image.shape[-1] != 3 or self.image.dtype != np.uint8:
        raise ValueError(
            f"DetectionExample(image_id={self.image_id}): image must be uint8 [H, W, 3] RGB, "
            f"got {self.image.dtype} {self.image.shape}."
        )
      self.height, self.width = int(self.image.shape[0]), int(self.image.shape[1])
    self.image_id = int(self.image_id)

  @property
  def num_objects(self) -> int:
    return int(len(self.boxes))

  def without_crowd(self) -> "DetectionExample":
    """The same example with crowd / difficult objects removed (training targets)."""
    keep = ~self.is_crowd
    masks = None if self.masks is None else [m for m, k in zip(self.masks, keep.tolist()) if k]
    return dataclasses.replace(
        self, boxes=self.boxes[keep], classes=self.classes[keep], is_crowd=self.is_crowd[keep],
        masks=masks)


@runtime_checkable
class DetectionSource(Protocol):
  """Random-access detection dataset (``CocoJsonSource``, ``TfdsSource``, ...).

  ``source[i]`` decodes image ``i`` and returns its training example. Optionally a source also
  has ``annotation(i) -> DetectionExample`` returning the same record with ``image=None`` but
  ``height``/``width`` set and *all* objects (crowd included); ``coco_from_source`` uses it to
  build the evaluation ground truth without decoding images.
  """

  num_classes: int
  class_names: Sequence[str]
  category_ids: Sequence[int]  # contiguous class index -> original dataset category id

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> DetectionExample: ...

  @property
  def image_ids(self) -> list[int]: ...
