"""A folder of images as a detection source without annotations (``--mode=predict``).

Every file is checked once when the source is made (PIL ``open`` + ``verify``: the header and, for
PNG, the chunk checksums; JPEG data is only fully checked when decoded). With ``skip_bad_images``
the unreadable ones are left out, listed in ``skipped_files``, counted in
``stats['bad_images_skipped']`` and reported in one printed line; without it the first unreadable
file is an error that names it and the option to set.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import warnings

import numpy as np
from PIL import Image

from jaxdet.data.records import DetectionExample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SKIP_HINT = "rerun with --config.data.skip_bad_images=True to skip unreadable images"


def _check(path: str) -> str | None:
  """None if ``path`` opens and verifies as an image, else the reason."""
  try:
    with Image.open(path) as img:
      img.verify()
  except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
    return f"{type(e).__name__}: {e}"
  return None


class FolderSource:
  """Images of ``folder`` (sorted by name); ``image_id`` is the index in that order.

  ``category_ids`` / ``class_names`` are those of the detector that will run on them, so
  results carry the training dataset's ids and names.

  Args:
    folder: the folder (not searched recursively); files with an ``IMAGE_EXTENSIONS`` suffix.
    category_ids, class_names: the detector's categories.
    config_key: the config key that named ``folder`` (for error messages).
    skip_bad_images: leave unreadable files out (see the module docstring) instead of raising.
      A file that passes the check but fails to decode later gives a black 1x1 image (no
      detections) with a warning, counted in ``stats['bad_images_at_read']``.

  ``files`` are the kept file names (``files[image_id]``), ``skipped_files`` the left-out ones.
  """

  def __init__(self, folder: str, category_ids, class_names, *,
               config_key: str = "config.predict.input_dir", skip_bad_images: bool = False):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"{config_key}={folder!r} is not a folder of images.")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise FileNotFoundError(f"{config_key}={folder!r} holds no "
                              f"{'/'.join(IMAGE_EXTENSIONS)} images.")
    self.folder = folder
    self.skip_bad_images = bool(skip_bad_images)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      problems = list(pool.map(_check, [os.path.join(folder, f) for f in files]))
    bad = [(f, p) for f, p in zip(files, problems) if p is not None]
    if bad and not self.skip_bad_images:
      more = f" ({len(bad) - 1} more unreadable file(s) in {folder})" if len(bad) > 1 else ""
      raise ValueError(f"Cannot read image {os.path.join(folder, bad[0][0])}: {bad[0][1]}{more}. "
                       f"Fix or remove it, or {SKIP_HINT}.")
    self.files = [f for f, p in zip(files, problems) if p is None]
    self.skipped_files = [f for f, _ in bad]
    self.stats = {"images": len(self.files), "bad_images_skipped": len(bad), "bad_images_at_read": 0}
    self._lock = threading.Lock()
    if bad:
      print(f"FolderSource({folder}): skipped {len(bad)} unreadable image(s) of {len(files)}: "
            f"{', '.join(self.skipped_files[:5])}{', ...' if len(bad) > 5 else ''} "
            f"(first: {bad[0][1]})")
    if not self.files:
      raise FileNotFoundError(f"{config_key}={folder!r}: none of its {len(files)} image files "
                              f"is readable.")
    self.category_ids = list(category_ids)
    self.class_names = list(class_names)
    self.num_classes = len(self.category_ids)
    self.image_ids = list(range(len(self.files)))

  def __len__(self):
    return len(self.files)

  def annotation(self, i) -> DetectionExample:
    """Image ``i``'s record without decoding it: its size from the file header (aspect-ratio
    grouping sorts images by orientation before any is read). 1 x 1 where the header cannot
    be read, as ``__getitem__``'s black stand-in image."""
    try:
      with Image.open(os.path.join(self.folder, self.files[i])) as img:
        width, height = img.size
    except Exception:  # noqa: BLE001 - __getitem__ reports (or skips) it when it is read
      width = height = 1
    return DetectionExample(image=None, boxes=np.zeros((0, 4), np.float32),
                            classes=np.zeros((0,), np.int32), image_id=i,
                            file_name=self.files[i], height=height, width=width)

  def __getitem__(self, i):
    path = os.path.join(self.folder, self.files[i])
    try:
      with Image.open(path) as img:
        image = np.asarray(img.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
      if not self.skip_bad_images:
        raise ValueError(f"Cannot read image {path}: {type(e).__name__}: {e}. "
                         f"Fix or remove it, or {SKIP_HINT}.") from e
      with self._lock:
        self.stats["bad_images_at_read"] += 1
      warnings.warn(f"Cannot read image {path}: {type(e).__name__}: {e}; using a black image "
                    "instead (no detections).", RuntimeWarning)
      image = np.zeros((1, 1, 3), np.uint8)
    return DetectionExample(image=image, boxes=np.zeros((0, 4), np.float32),
                            classes=np.zeros((0,), np.int32), image_id=i,
                            file_name=self.files[i])
