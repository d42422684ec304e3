"""WIDER FACE ground truth for any detection source: image keys and proxy easy / medium / hard.

The official WIDER FACE evaluation (``jaxdet.evaluation.wider_face``) reads one prediction file per
image, ``EVENT/IMAGE.txt``, and scores it against ground truth grouped the same way. This module
connects a jaxdet ``DetectionSource`` (and its COCO-style results) to that layout.

**Image keys** (``image_keys``; the one place that maps an image id to ``(event, image name)``):

1. a source with ``official_key(i)`` (``jaxdet.data.wider_face.WiderFaceSource``), also inside a
   ``jaxdet.data.factory.Subset``: its official keys;
2. a source whose file names are all ``EVENT/NAME.ext`` with a WIDER FACE event folder
   (``<number>--<name>``, e.g. ``0--Parade``): ``(EVENT, NAME)``. TFDS ``wider_face`` stores
   ``image/filename`` that way (the path of the official annotation file), so a ``TfdsSource`` of
   ``wider_face`` gets the official keys too, as would a COCO-JSON conversion keeping the paths;
3. any other source: one event, ``SINGLE_EVENT`` (``0--jaxdet``), image names from the file names
   (extension dropped, ``/`` -> ``_``; prefixed with the image id where names would collide, or
   the image id alone where there is no file name).

**Proxy subsets** (``proxy_ground_truth``). The official Easy / Medium / Hard subsets come from the
detection rate of EdgeBox proposals on each face (Yang et al., "WIDER FACE: A Face Detection
Benchmark", CVPR 2016, §3: a face is easy, medium or hard by how well EdgeBox recalls it, so
difficulty mixes scale, occlusion and pose); only the official ``wider_{easy,medium,hard}_val.mat``
files of ``eval_tools`` define them, and only for the validation images. For any other source
(train split, the embedded benchmark, val without the ``.mat`` files) this module builds a *proxy*
by face height, using the summary of MTGAN (Bai et al., IJCV 2019, §4.1 "WIDER FACE dataset"):
"The Easy/Medium/Hard subsets contain faces with heights larger than 50/30/10 pixels".

* a face counts in a subset if its height is larger than ``PROXY_MIN_HEIGHT[subset]`` px
  (``h > 50`` easy, ``h > 30`` medium, ``h > 10`` hard: nested like the official subsets, easy
  within medium within hard);
* every other face of the image is *ignore* in that subset, exactly how the official ``gt_list``
  works: a detection matched to it is neither a true nor a false positive, and it is not in the
  recall denominator;
* crowd objects (``iscrowd = 1``) are ignore in every subset;
* the faces are the source's kept ones (``source.coco``): faces a source dropped (WIDER FACE
  ``invalid`` faces, degenerate boxes) are absent, so a detection on one is a false positive,
  whereas the official ground truth lists them as ignore.

Proxy numbers are for comparing runs with each other, not with published WIDER FACE numbers.
"""
from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping, Sequence

import numpy as np

from jaxdet.evaluation.wider_face import WiderFaceGroundTruth

PROXY_MIN_HEIGHT = {"easy": 50.0, "medium": 30.0, "hard": 10.0}  # px: a face counts if h > it
SINGLE_EVENT = "0--jaxdet"
_WIDER_EVENT = re.compile(r"^\d+--[^/]+$")


def describe_proxy(min_height: Mapping[str, float] = PROXY_MIN_HEIGHT) -> str:
  """``'easy > 50 px, medium > 30 px, hard > 10 px'``: the proxy rule, for notes and origins."""
  return ", ".join(f"{s} > {float(h):g} px" for s, h in min_height.items())


def source_coco(source):
  """The source's pycocotools ground truth: ``source.coco``, else built from its annotations
  (``jaxdet.evaluation.coco.coco_from_source``, e.g. for a ``TfdsSource``)."""
  coco = getattr(source, "coco", None)
  if coco is not None:
    return coco
  from jaxdet.evaluation.coco import coco_from_source
  return coco_from_source(source)


def face_category_id(coco) -> int:
  """The category scored as "face": the one named ``face``, else the only category."""
  cats = list(coco.dataset.get("categories", []))
  named = [c for c in cats if str(c.get("name", "")).lower() == "face"]
  if len(named) == 1:
    return int(named[0]["id"])
  if len(cats) == 1:
    return int(cats[0]["id"])
  names = [c.get("name") for c in cats]
  raise ValueError(f"The WIDER FACE protocol scores one class, but the ground truth has "
                   f"{len(cats)} categories {names} and none (or several) named 'face'. Evaluate "
                   "a face dataset (e.g. config.data.benchmark_subset='faces') or set "
                   "config.eval.protocol='coco'.")


def _official_key_fn(source):
  """``i -> (event, name)`` from ``official_key``, looking through ``Subset`` wrappers."""
  if hasattr(source, "official_key"):
    return source.official_key
  inner, indices = getattr(source, "source", None), getattr(source, "indices", None)
  if inner is not None and indices is not None:
    fn = _official_key_fn(inner)
    if fn is not None:
      return lambda i: fn(indices[i])
  return None


def _file_names(source, coco) -> list[str]:
  ids = [int(i) for i in source.image_ids]
  coco = getattr(source, "coco", None) if coco is None else coco
  if coco is not None and all(i in coco.imgs for i in ids):
    return [str(coco.imgs[i].get("file_name") or "") for i in ids]
  get = getattr(source, "annotation", None) or source.__getitem__
  return [str(get(i).file_name or "") for i in range(len(source))]


def image_keys(source, coco=None) -> list[tuple[str, str]]:
  """``(event, image name)`` of every image of ``source``, in ``source.image_ids`` order (rules
  in the module docstring). ``coco``: the source's ground truth, to read file names from."""
  fn = _official_key_fn(source)
  if fn is not None:
    return [tuple(fn(i)) for i in range(len(source))]
  names = _file_names(source, coco)
  parts = [posixpath.split(n.replace(os.sep, "/")) for n in names]
  if names and all(_WIDER_EVENT.match(d) and b for d, b in parts):
    return [(d, posixpath.splitext(b)[0]) for d, b in parts]
  ids = [int(i) for i in source.image_ids]
  stems = [posixpath.splitext(n.replace(os.sep, "/"))[0].replace("/", "_") for n in names]
  if len(set(stems)) != len(stems) or not all(stems):
    stems = [f"{i}_{s}" if s else str(i) for i, s in zip(ids, stems)]
  return [(SINGLE_EVENT, s) for s in stems]


def predictions_by_key(results: Sequence[Mapping], image_ids: Sequence[int],
                       keys: Sequence[tuple[str, str]], *,
                       category_id: int | None = None) -> dict[str, dict[str, np.ndarray]]:
  """COCO result dicts -> ``{event: {name: float64 [n, 5] x y w h score}}`` with an entry
  (possibly empty) for every image, the input of ``wider_face.write_predictions`` /
  ``evaluate_wider_face``. ``keys[k]`` is the key of ``image_ids[k]``; results of another category
  than ``category_id`` (if given) are left out; a result of an unknown image is an error."""
  if len(keys) != len(image_ids):
    raise ValueError(f"{len(keys)} keys for {len(image_ids)} images.")
  index_of = {int(i): k for k, i in enumerate(image_ids)}
  rows: list[list] = [[] for _ in keys]
  for r in results:
    k = index_of.get(int(r["image_id"]))
    if k is None:
      raise ValueError(f"result of image_id {r['image_id']}, which is not an image of the "
                       "evaluated source.")
    if category_id is not None and int(r["category_id"]) != category_id:
      continue
    rows[k].append([*(float(v) for v in r["bbox"]), float(r["score"])])
  out: dict[str, dict[str, np.ndarray]] = {}
  for (event, name), dets in zip(keys, rows):
    out.setdefault(event, {})[name] = np.asarray(dets, np.float64).reshape(-1, 5)
  return out


def _grouped(keys: Sequence[tuple[str, str]], values: Sequence) -> tuple[list, list, list]:
  """Events in first-appearance order, their image names and the values of those images."""
  events: dict[str, int] = {}
  images: list[list[str]] = []
  per_image: list[list] = []
  seen = set()
  for key, value in zip(keys, values):
    if key in seen:
      raise ValueError(f"image key {key[0]}/{key[1]} appears twice; image keys must be unique.")
    seen.add(key)
    e = events.setdefault(key[0], len(events))
    if e == len(images):
      images.append([])
      per_image.append([])
    images[e].append(key[1])
    per_image[e].append(value)
  return list(events), images, per_image


def proxy_ground_truth(source, *, coco=None, keys: Sequence[tuple[str, str]] | None = None,
                       category_id: int | None = None,
                       min_height: Mapping[str, float] = PROXY_MIN_HEIGHT) -> WiderFaceGroundTruth:
  """A ``WiderFaceGroundTruth`` of ``source`` with face-height proxy subsets (module docstring).

  Args:
    source: a ``DetectionSource`` (``image_ids``; ``coco`` or ``annotation``).
    coco: its pycocotools ground truth (default ``source_coco(source)``).
    keys: ``(event, name)`` per image (default ``image_keys(source, coco)``).
    category_id: the face category (default ``face_category_id(coco)``).
    min_height: subset -> height in pixels a face must exceed (``>``) to count there.
  """
  coco = source_coco(source) if coco is None else coco
  keys = image_keys(source, coco) if keys is None else list(keys)
  category_id = face_category_id(coco) if category_id is None else int(category_id)
  ids = [int(i) for i in source.image_ids]
  faces = []
  for image_id in ids:
    anns = [a for a in coco.imgToAnns.get(image_id, []) if int(a["category_id"]) == category_id]
    boxes = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)
    faces.append((boxes, crowd))
  events, images, grouped = _grouped(keys, faces)
  subsets = {s: [[np.flatnonzero((b[:, 3] > float(min_height[s])) & ~c) + 1 for b, c in event]
                 for event in grouped] for s in min_height}
  origin = f"proxy subsets by face height ({describe_proxy(min_height)}) of {type(source).__name__}"
  return WiderFaceGroundTruth(events, images, [[b for b, _ in event] for event in grouped],
                              subsets, origin=origin)


def restrict_ground_truth(gt: WiderFaceGroundTruth,
                          keys: Sequence[tuple[str, str]]) -> WiderFaceGroundTruth:
  """``gt`` reduced to the images ``keys`` (e.g. the first ``config.eval.max_images`` of val), in
  ``gt``'s order. A key that ``gt`` lacks is an error (another split or dataset)."""
  wanted = set(keys)
  known = set(gt.keys())
  missing = [k for k in keys if k not in known]
  if missing:
    shown = ", ".join(f"{e}/{n}" for e, n in missing[:3])
    raise ValueError(f"{len(missing)} of the {len(keys)} evaluated images are not in the WIDER "
                     f"FACE ground truth of {gt.origin} (e.g. {shown}); the official .mat files "
                     "describe the val split of the official release.")
  kept = [(ev, name) for ev, name in gt.keys() if (ev, name) in wanted]
  where = {key: (e, j) for e, ev in enumerate(gt.events) for j, key in
           enumerate((ev, n) for n in gt.images[e])}
  events, images, picked = _grouped(kept, [where[k] for k in kept])
  return WiderFaceGroundTruth(
      events, images, [[gt.boxes[e][j] for e, j in event] for event in picked],
      {s: [[per_event[e][j] for e, j in event] for event in picked]
       for s, per_event in gt.subsets.items()},
      origin=gt.origin)

