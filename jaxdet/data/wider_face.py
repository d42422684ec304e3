"""WIDER FACE from the official annotation text files, as a ``DetectionSource``.

WIDER FACE (Yang et al., CVPR 2016) is the face benchmark of MTGAN (Bai et al., IJCV 2019, §4.1
"WIDER FACE dataset": train on the training split, report easy / medium / hard AP on the validation
split, Table 8). The official release describes each split in ``wider_face_split/
wider_face_{train,val}_bbx_gt.txt`` next to the images ``WIDER_{train,val}/images/EVENT/NAME.jpg``;
per image (its ``readme.txt``):

* the image path relative to ``images/`` (``0--Parade/0_Parade_marchingband_1_465.jpg``),
* the number of faces ``N``,
* ``N`` lines ``x1 y1 w h blur expression illumination invalid occlusion pose`` (pixels; the flags
  are small integers). An image with ``N = 0`` is still followed by one line of zeros, which is
  not a face (a file without that line is read as well).

Reading: boxes become absolute ``xyxy`` ``[x1, y1, x1 + w, y1 + h]`` (jaxdet's convention, no
"+1"; the official *evaluation* measures IoU with "+1" sizes, see ``jaxdet.evaluation.wider_face``);
the single class is ``face`` (class 0, category id 1). The annotation file gives no image sizes,
so every image header is read once when the source is made (PIL, no decoding; 8 threads).

Which faces are kept, counted in ``.stats`` over the kept images (``annotations`` = all face lines
of those images = ``boxes_kept`` + ``boxes_dropped_invalid`` + ``boxes_dropped_degenerate`` +
``boxes_dropped_outside``):

* ``invalid`` = 1 faces (``invalid_faces`` counts them all): dropped by default
  (``drop_invalid=True``, counted as ``boxes_dropped_invalid``) because the dataset flags their
  annotation as not valid (readme: "invalid: false->0 (valid image), true->1 (invalid image)"), so
  they are unreliable targets, and because ``jaxdet.data.tfds_source`` drops them from TFDS
  ``wider_face`` too: either source gives the same objects for the same split.
  ``drop_invalid=False`` keeps them as ordinary faces;
* the remaining boxes go through the cleaning rule of ``CocoJsonSource``
  (``jaxdet.data.coco_json.clean_boxes``, on the annotated ``w``, ``h``): ``w`` or ``h <
  min_box_size`` dropped as degenerate, boxes reaching outside the image clipped, boxes left
  degenerate by clipping dropped as outside. Training examples (``source[i]``) and ``.coco`` hold
  the same faces.

``images_without_objects`` counts images without a kept face (``N = 0`` images included). Image
ids are the 0-based position of the image in the annotation file (stable when
``skip_bad_images`` leaves images out). ``official_key(i)`` = ``(event, name)`` and
``official_predictions(results)`` map detections to the layout of the official evaluation
(``jaxdet.evaluation.wider_face.write_predictions``). Parse errors name the file and line.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import io
import math
import posixpath
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from jaxdet.data.coco_json import clean_boxes, read_annotated_image
from jaxdet.data.records import DetectionExample

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_FIELDS = "x1 y1 w h " + " ".join(ATTRIBUTES)


class _Record(NamedTuple):
  path: str  # as written in the annotation file
  line: int  # 1-based line of the path
  faces: np.ndarray  # float64 [n, 10]


def _numbers(text: str) -> list[float] | None:
  try:
    values = [float(p) for p in text.split()]
  except ValueError:
    return None
  return values if values else None


def parse_annotation_file(path) -> list[_Record]:
  """Parses ``wider_face_{split}_bbx_gt.txt`` (module docstring); errors name the file and line."""
  path = Path(path)
  raw = path.read_text(encoding="utf-8", errors="replace").splitlines()
  lines = [(k + 1, s.strip()) for k, s in enumerate(raw) if s.strip()]  # (line number, text)
  records, seen = [], {}
  i = 0

  def err(line: int, what: str) -> ValueError:
    return ValueError(f"{path}:{line}: {what}")

  while i < len(lines):
    line_no, image = lines[i]
    if _numbers(image) is not None:
      raise err(line_no, f"expected an image path (EVENT/NAME.jpg), got numbers {image!r} "
                         "(more face lines than the face count of the image before?).")
    if image in seen:
      raise err(line_no, f"image '{image}' is listed twice (first on line {seen[image]}).")
    seen[image] = line_no
    if i + 1 >= len(lines):
      raise err(line_no, f"the file ends after image '{image}'; expected its number of faces.")
    count_line, count_text = lines[i + 1]
    try:
      n = int(count_text)
    except ValueError:
      n = -1
    if n < 0:
      raise err(count_line, f"expected the number of faces of '{image}' (an integer >= 0), "
                            f"got {count_text!r}.")
    i += 2
    faces = np.zeros((n, 10), np.float64)
    for k in range(n):
      if i >= len(lines):
        raise err(len(raw), f"the file ends after {k} of the {n} face lines of '{image}' "
                            f"(count on line {count_line}).")
      face_line, text = lines[i]
      values = _numbers(text)
      if values is None or len(values) != 10:
        got = "a non-numeric line" if values is None else f"{len(values)} numbers"
        raise err(face_line, f"face {k + 1} of {n} of '{image}': expected 10 numbers "
                             f"'{_FIELDS}', got {got}: {text!r}.")
      if not all(math.isfinite(v) for v in values):
        raise err(face_line, f"face {k + 1} of '{image}': non-finite number in {text!r}.")
      if any(v != round(v) or v < 0 for v in values[4:]):
        raise err(face_line, f"face {k + 1} of '{image}': the flags "
                             f"({', '.join(ATTRIBUTES)}) must be integers >= 0, got {text!r}.")
      faces[k] = values
      i += 1
    if n == 0 and i < len(lines):
      values = _numbers(lines[i][1])
      if values is not None:  # the all-zero placeholder line of an image without faces
        if any(values):
          raise err(lines[i][0], f"'{image}' has 0 faces, so this line should be the all-zero "
                                 f"placeholder, got {lines[i][1]!r}.")
        i += 1
    records.append(_Record(image, line_no, faces))
  return records


class WiderFaceSource:
  """A ``DetectionSource`` over an official WIDER FACE annotation file and its image folder.

  Args:
    annotation_file: ``wider_face_split/wider_face_{train,val}_bbx_gt.txt``.
    image_dir: the ``images`` folder the paths are relative to (``WIDER_val/images``).
    drop_invalid: drop faces flagged ``invalid`` (default True; module docstring).
    min_box_size: boxes narrower or lower than this (pixels) are dropped as degenerate.
    skip_bad_images: if True, images that are missing or unreadable are left out (counted in
      ``stats['bad_images_skipped']``, listed in ``skipped_files``, the count printed) and an image
      that fails to decode later is replaced by a black image without faces
      (``stats['bad_images_at_read']``). If False, such an image is an error naming it.
  """

  num_classes = 1
  class_names = ["face"]
  category_ids = [1]
  has_masks = False  # boxes only: no instance segmentations (``DetectionExample.masks`` is None)

  def __init__(self, annotation_file, image_dir, *, drop_invalid: bool = True,
               min_box_size: float = 1.0, skip_bad_images: bool = False):
    self.annotation_file = Path(annotation_file)
    self.image_dir = Path(image_dir)
    self.drop_invalid = bool(drop_invalid)
    self.min_box_size = float(min_box_size)
    self.skip_bad_images = bool(skip_bad_images)
    self.drop_crowd = True  # WIDER FACE has no crowd objects
    if not self.annotation_file.is_file():
      raise FileNotFoundError(
          f"WIDER FACE annotation file not found: '{self.annotation_file}'. Hint: pass "
          "wider_face_split/wider_face_train_bbx_gt.txt or wider_face_val_bbx_gt.txt of the "
          "official release.")
    if not self.image_dir.is_dir():
      raise FileNotFoundError(
          f"Image directory not found: '{self.image_dir}' (images of '{self.annotation_file}'). "
          "Hint: pass the 'images' folder of WIDER_train or WIDER_val.")
    self._lock = threading.Lock()
    records = parse_annotation_file(self.annotation_file)
    sizes = self._read_sizes(records)
    self.skipped_files = [r.path for r, s in zip(records, sizes) if isinstance(s, str)]
    if self.skipped_files:
      first = next(s for s in sizes if isinstance(s, str))
      print(f"WiderFaceSource({self.annotation_file.name}): skipped {len(self.skipped_files)} "
            f"unreadable image(s) of {len(records)}; first: {first}")
    self.stats = {
        "images": 0, "annotations": 0, "boxes_kept": 0, "boxes_clipped": 0,
        "boxes_dropped_degenerate": 0, "boxes_dropped_outside": 0, "boxes_dropped_invalid": 0,
        "invalid_faces": 0, "crowd": 0, "images_without_objects": 0,
        "bad_images_skipped": len(self.skipped_files), "bad_images_at_read": 0,
    }
    self._ids, self._paths, self._hw, self._lines = [], [], [], []
    self._boxes, self._coco_boxes, self._attributes = [], [], []
    st = self.stats
    for index, (rec, size) in enumerate(zip(records, sizes)):
      if isinstance(size, str):
        continue
      width, height = size
      faces = rec.faces
      invalid = faces[:, 7] != 0
      st["annotations"] += len(faces)
      st["invalid_faces"] += int(invalid.sum())
      candidate = ~invalid if self.drop_invalid else np.ones(len(faces), bool)
      st["boxes_dropped_invalid"] += int((~candidate).sum())
      xywh = faces[candidate, :4]
      xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
      cl = clean_boxes(xyxy, width, height, self.min_box_size, wh=xywh[:, 2:])
      st["boxes_dropped_degenerate"] += int(cl.degenerate.sum())
      st["boxes_dropped_outside"] += int(cl.outside.sum())
      st["boxes_clipped"] += int(cl.clipped.sum())
      st["boxes_kept"] += int(cl.keep.sum())
      st["images_without_objects"] += int(not cl.keep.any())
      kept = cl.boxes[cl.keep]
      self._ids.append(index)
      self._paths.append(rec.path)
      self._hw.append((int(height), int(width)))
      self._lines.append(rec.line)
      self._boxes.append(kept.astype(np.float32).reshape(-1, 4))
      self._coco_boxes.append(kept.reshape(-1, 4))
      self._attributes.append(faces[candidate][cl.keep, 4:].astype(np.int64).reshape(-1, 6))
    st["images"] = len(self._ids)

  def _read_sizes(self, records) -> list:
    """``(width, height)`` of every image, or a problem description (str) when skipping."""

    def size(rec):
      path = self.image_dir / rec.path
      try:
        with Image.open(path) as img:
          wh = img.size
          if self.skip_bad_images:
            img.verify()
        return wh
      except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
        msg = f"{path}: {type(e).__name__}: {e}"
        if self.skip_bad_images:
          return msg
        raise OSError(f"Cannot read image '{path}' (line {rec.line} of "
                      f"'{self.annotation_file}'): {type(e).__name__}: {e}. Hint: fix or remove "
                      "the file, or pass skip_bad_images=True (--config.data.skip_bad_images=True) "
                      "to leave unreadable images out.") from e

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      return list(pool.map(size, records))

  # ------------------------------------------------------------------ DetectionSource API
  def __len__(self) -> int:
    return len(self._ids)

  @property
  def image_ids(self) -> list[int]:
    return list(self._ids)

  def image_path(self, index: int) -> Path:
    return self.image_dir / self._paths[index]

  def official_key(self, index: int) -> tuple[str, str]:
    """``(event, image name without extension)`` of image ``index``: the folder and file name of
    its prediction file in the official evaluation layout (``EVENT/NAME.txt``)."""
    path = self._paths[index]
    return posixpath.dirname(path), posixpath.splitext(posixpath.basename(path))[0]

  def face_attributes(self, index: int) -> dict[str, np.ndarray]:
    """The annotation flags of the kept faces of image ``index`` (``int64 [n]`` per name in
    ``ATTRIBUTES``, rows in the order of ``annotation(index).boxes``)."""
    a = self._attributes[index]
    return {name: a[:, k].copy() for k, name in enumerate(ATTRIBUTES)}

  def annotation_summary(self) -> dict:
    """Per-image face counts without decoding anything (``jaxdet.data.report`` uses it)."""
    return {"image_ids": self.image_ids, "file_names": list(self._paths),
            "objects": np.asarray([len(b) for b in self._boxes], np.int64),
            "crowd": np.zeros(len(self._boxes), np.int64)}

  def annotation(self, index: int) -> DetectionExample:
    """Example ``index`` without decoding the image (the kept faces)."""
    h, w = self._hw[index]
    boxes = self._boxes[index]
    return DetectionExample(image=None, boxes=boxes, classes=np.zeros(len(boxes), np.int32),
                            image_id=self._ids[index], file_name=self._paths[index],
                            height=h, width=w)

  def _count_bad_read(self) -> None:
    with self._lock:
      self.stats["bad_images_at_read"] += 1

  def __getitem__(self, index: int) -> DetectionExample:
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} images")
    index = range(len(self))[index]
    ann = self.annotation(index)
    image = read_annotated_image(
        self.image_path(index), ann.height, ann.width, size_name="header",
        where=f"line {self._lines[index]} of '{self.annotation_file}'",
        skip_bad_images=self.skip_bad_images, on_skip=self._count_bad_read)
    if image is None:
      return DetectionExample(np.zeros((ann.height, ann.width, 3), np.uint8), np.zeros((0, 4)),
                              np.zeros((0,)), ann.image_id, ann.file_name)
    return DetectionExample(image=image, boxes=ann.boxes, classes=ann.classes,
                            image_id=ann.image_id, file_name=ann.file_name)

  # ------------------------------------------------------------------ evaluation
  def official_predictions(self, results) -> dict[str, dict[str, np.ndarray]]:
    """COCO result dicts (``jaxdet.evaluation.coco.detections_to_coco``) -> the input of
    ``jaxdet.evaluation.wider_face.write_predictions``: ``{event: {name: [n, 5]}}`` rows
    ``[x, y, w, h, score]``, with an entry (possibly empty) for *every* image of the source, so
    that the official evaluation finds a file for each one."""
    index_of = {image_id: k for k, image_id in enumerate(self._ids)}
    rows: list[list] = [[] for _ in self._ids]
    for r in results:
      k = index_of.get(int(r["image_id"]))
      if k is None:
        raise ValueError(f"official_predictions: image_id {r['image_id']} is not an image of "
                         f"{self!r}.")
      rows[k].append([*(float(v) for v in r["bbox"]), float(r["score"])])
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, dets in enumerate(rows):
      event, name = self.official_key(k)
      out.setdefault(event, {})[name] = np.asarray(dets, np.float64).reshape(-1, 5)
    return out

  @functools.cached_property
  def coco(self):
    """pycocotools ``COCO`` ground truth of the kept images and faces (``annotation(i)``), built
    once, silently: category 1 ``face``, ``bbox`` the cleaned ``[x, y, w, h]``, ``area = w * h``,
    ``iscrowd = 0``. (The official WIDER FACE AP needs the easy / medium / hard membership of the
    eval_tools ``.mat`` files: ``jaxdet.evaluation.wider_face``.)"""
    from pycocotools.coco import COCO

    images, anns = [], []
    for k, image_id in enumerate(self._ids):
      h, w = self._hw[k]
      images.append({"id": image_id, "file_name": self._paths[k], "width": w, "height": h})
      for x1, y1, x2, y2 in self._coco_boxes[k].tolist():
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                     "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": 1, "name": "face"}]}
    with contextlib.redirect_stdout(io.StringIO()):
      gt.createIndex()
    return gt

  def __repr__(self) -> str:
    return (f"WiderFaceSource('{self.annotation_file}', images={len(self)}, "
            f"drop_invalid={self.drop_invalid}, stats={self.stats})")
