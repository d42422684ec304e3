"""A folder of images as a detection source without annotations (``--mode=predict``)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxdet.data.records import DetectionExample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class FolderSource:
  """Images of ``folder`` (sorted by name); ``image_id`` is the index in that order.

  ``category_ids`` / ``class_names`` are those of the detector that will run on them, so
  results carry the training dataset's ids and names.
  """

  def __init__(self, folder: str, category_ids, class_names, *, config_key: str = "config.predict.input_dir"):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"{config_key}={folder!r} is not a folder of images.")
    self.files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not self.files:
      raise FileNotFoundError(f"{config_key}={folder!r} holds no "
                              f"{'/'.join(IMAGE_EXTENSIONS)} images.")
    self.folder = folder
    self.category_ids = list(category_ids)
    self.class_names = list(class_names)
    self.num_classes = len(self.category_ids)
    self.image_ids = list(range(len(self.files)))

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    path = os.path.join(self.folder, self.files[i])
    try:
      image = np.asarray(Image.open(path).convert("RGB"))
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
      raise ValueError(f"Cannot read image {path}: {e}") from e
    return DetectionExample(image=image, boxes=np.zeros((0, 4), np.float32),
                            classes=np.zeros((0,), np.int32), image_id=i,
                            file_name=self.files[i])
