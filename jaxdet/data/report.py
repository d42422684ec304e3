"""What a data source holds and what its cleaning changed: per-split counts, printed at start-up.

``source_report(source)`` counts, for any ``DetectionSource``, the images and the objects that
training and evaluation use, and copies every drop / repair counter of the source's ``stats``
(``coco_json`` module docstring: the cleaning rule is the same for training examples and the
evaluation ground truth, so these counts describe both). ``format_report`` turns
``{"train": report, "val": report}`` into a few console lines; ``required_max_boxes`` is the
``config.data.max_boxes`` the data needs (``DetectionLoader`` refuses examples with more objects).

Cost: ``CocoJsonSource`` and ``TfdsSource`` answer from their ``annotation_summary()`` (no image
decoding; for TFDS one annotation pass over the split the first time, see ``tfds_source``). Another
source is read with ``annotation(i)`` if it has it, else with ``source[i]``, which decodes every
image (slow: meant for small hand-built sources).
"""
from __future__ import annotations

import numpy as np

# Drop / repair counters every report has (0 when the source has no such counter).
COUNTERS = ("boxes_dropped_degenerate", "boxes_dropped_outside", "boxes_dropped_invalid",
            "boxes_clipped", "bad_images_skipped", "bad_images_at_read")
_COUNTER_WORDS = ("dropped", "skipped", "clipped", "at_read")


def _summary(source) -> dict:
  """``annotation_summary()`` of the source, or the same dict built by reading every record."""
  if hasattr(source, "annotation_summary"):
    return source.annotation_summary()
  get = getattr(source, "annotation", None) or source.__getitem__
  ids, names, objects, crowd = [], [], [], []
  for i in range(len(source)):
    ex = get(i)
    ids.append(int(ex.image_id))
    names.append(ex.file_name)
    c = int(np.asarray(ex.is_crowd, bool).sum())
    crowd.append(c)
    objects.append(ex.num_objects - c)
  return {"image_ids": ids, "file_names": names, "objects": np.asarray(objects, np.int64),
          "crowd": np.asarray(crowd, np.int64)}


def source_report(source) -> dict:
  """Counts of one source (one split), always with the same keys.

  Returns a JSON-serialisable dict:

  * ``source``: the source's class name; ``min_box_size``: its cleaning threshold (None if it
    has none);
  * ``images``: images kept; ``objects``: kept non-crowd objects (training targets, and the
    objects COCOeval scores); ``crowd``: kept crowd / difficult objects (``iscrowd=1`` in the
    evaluation ground truth, ignored by COCOeval, not training targets unless ``drop_crowd=False``);
  * ``images_without_objects``: images without a kept non-crowd object;
  * ``max_objects_per_image`` with ``max_objects_image_id`` / ``max_objects_file_name`` of the
    first image that has it (None when there are no images);
  * the ``COUNTERS`` (0 when the source does not count that case) and any other counter of
    ``source.stats`` whose name contains 'dropped', 'skipped', 'clipped' or 'at_read'.
  """
  s = _summary(source)
  objects = np.asarray(s["objects"], np.int64).reshape(-1)
  crowd = np.asarray(s["crowd"], np.int64).reshape(-1)
  k = int(np.argmax(objects)) if len(objects) else None
  min_box = getattr(source, "min_box_size", None)
  report = {
      "source": type(source).__name__,
      "min_box_size": None if min_box is None else float(min_box),
      "images": int(len(objects)),
      "objects": int(objects.sum()),
      "crowd": int(crowd.sum()),
      "images_without_objects": int((objects == 0).sum()),
      "max_objects_per_image": int(objects[k]) if k is not None else 0,
      "max_objects_image_id": int(s["image_ids"][k]) if k is not None else None,
      "max_objects_file_name": str(s["file_names"][k]) if k is not None else None,
  }
  stats = dict(getattr(source, "stats", None) or {})
  for key in COUNTERS:
    report[key] = int(stats.get(key, 0))
  for key, value in stats.items():
    if key not in report and any(w in key for w in _COUNTER_WORDS):
      report[key] = int(value)
  return report


def required_max_boxes(*sources) -> int:
  """The smallest ``max_boxes`` that holds every training example of ``sources`` (at least 1).

  Counts the objects ``source[i]`` yields: kept non-crowd objects, plus the crowd ones of a source
  with ``drop_crowd=False``. Same cost as ``source_report`` (the summary is computed again).
  """
  need = 1
  for source in sources:
    s = _summary(source)
    n = np.asarray(s["objects"], np.int64).reshape(-1)
    if not getattr(source, "drop_crowd", True):
      n = n + np.asarray(s["crowd"], np.int64).reshape(-1)
    if len(n):
      need = max(need, int(n.max()))
  return need


def _plural(n: int, word: str) -> str:
  return f"{n} {word}{'' if n == 1 else 's'}"


def format_report(report: dict[str, dict]) -> str:
  """One line per split, e.g.

  ``train: 1000 images (3 without objects), 3441 objects (max 9 per image: id 17 'a.jpg');
  dropped: 2 degenerate (w or h < 1 px), 0 outside; clipped 5; 0 crowd; 0 bad images skipped``.
  Counters beyond the usual ones are appended as ``name=value`` when non-zero.
  """
  lines = []
  for split, r in report.items():
    head = f"{split}: {_plural(r['images'], 'image')}"
    if r["images_without_objects"]:
      head += f" ({r['images_without_objects']} without objects)"
    head += f", {_plural(r['objects'], 'object')}"
    if r["max_objects_image_id"] is not None:
      where = f"id {r['max_objects_image_id']}"
      if r.get("max_objects_file_name"):
        where += f" '{r['max_objects_file_name']}'"
      head += f" (max {r['max_objects_per_image']} per image: {where})"
    size = r.get("min_box_size")
    rule = f" (w or h < {size:g} px)" if size is not None else ""
    dropped = (f"dropped: {r['boxes_dropped_degenerate']} degenerate{rule}, "
               f"{r['boxes_dropped_outside']} outside")
    if r.get("boxes_dropped_invalid"):
      dropped += f", {r['boxes_dropped_invalid']} invalid"
    parts = [head, dropped, f"clipped {r['boxes_clipped']}", f"{r['crowd']} crowd",
             f"{r['bad_images_skipped']} bad images skipped"]
    if r.get("bad_images_at_read"):
      parts.append(f"{r['bad_images_at_read']} unreadable at read (black image used)")
    extra = [f"{k}={v}" for k, v in r.items()
             if k not in _FORMATTED and isinstance(v, (int, float)) and v]
    if extra:
      parts.append(", ".join(extra))
    lines.append("; ".join(parts))
  return "\n".join(lines)


_FORMATTED = frozenset((
    "source", "min_box_size", "images", "objects", "crowd", "images_without_objects",
    "max_objects_per_image", "max_objects_image_id", "max_objects_file_name", *COUNTERS))
