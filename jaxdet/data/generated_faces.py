"""Generated-LR face datasets: what the trained high-to-low generator G1 writes for stage 2.

The landmark paper (§3, §4.1) trains G1 to turn labelled HR faces (AFLW, 300W) into realistic
low-resolution ones, then trains the heatmap generator G2 on those *generated LR* faces with the
HR annotations downsampled ("we assume that keypoint locations in a generated LR image stay
relatively same as its downsampled version", §3.2.3). ``python -m jaxdet.main --mode=generate``
of a ``high_to_low`` run writes them here; ``lr_landmarks`` runs read them with
``GeneratedFaceSource``.

Layout of ``<dir>/<split>/``:

* ``meta.json``: ``{"num_examples", "shard_size", "scheme", "image_size", "hr_size", ...}``
  written first (a rerun with other settings is an error rather than a mixed dataset);
* ``shard_00000.npz`` ...: examples ``[k * shard_size, (k + 1) * shard_size)`` in source order:
  ``image`` uint8 [n, S, S, 3], ``landmarks`` float32 [n, N, 2] (HR landmarks x S / HR size),
  ``visible`` bool [n, N], ``box`` float32 [n, 4] (scaled the same way), ``identity`` int32 [n],
  ``key`` str [n] (the HR record's key);
* ``done.json`` once every shard is written.

Shards are written atomically (temporary file + rename), so a killed generation resumes at the
first missing shard, and the noise of example ``i`` depends only on ``(seed, i)``: a resumed
run writes the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import uuid

import numpy as np

from jaxdet.data.face_records import FaceExample

_FIELDS = ("image", "landmarks", "visible", "box", "identity", "key")


def shard_path(directory: str, split: str, k: int) -> str:
  return os.path.join(directory, split, f"shard_{k:05d}.npz")


def write_meta(directory: str, split: str, meta: dict) -> None:
  """Writes ``meta.json``, or checks that an existing one (a resumed run) agrees."""
  path = os.path.join(directory, split, "meta.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
    if diff:
      raise ValueError(f"{path} was written with other settings {diff} (old, new): delete "
                       f"{os.path.dirname(path)} to regenerate, or write to another directory.")
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(meta, f, indent=1)


def missing_shards(directory: str, split: str, num_examples: int, shard_size: int) -> list[int]:
  """Shard numbers not written yet."""
  n = -(-num_examples // shard_size)
  return [k for k in range(n) if not os.path.exists(shard_path(directory, split, k))]


def write_shard(directory: str, split: str, k: int, arrays: dict) -> None:
  """Writes shard ``k`` atomically (``arrays`` has every field of the layout)."""
  missing = set(_FIELDS) - set(arrays)
  if missing:
    raise ValueError(f"shard {k} of {split}: fields {sorted(missing)} missing.")
  path = shard_path(directory, split, k)
  tmp = f"{path}.{uuid.uuid4().hex}.tmp.npz"
  np.savez(tmp, **{f: np.asarray(arrays[f]) for f in _FIELDS})
  os.replace(tmp, path)


def mark_done(directory: str, split: str) -> None:
  with open(os.path.join(directory, split, "done.json"), "w") as f:
    json.dump({"done": True}, f)


def is_done(directory: str, split: str) -> bool:
  return os.path.exists(os.path.join(directory, split, "done.json"))


class GeneratedFaceSource:
  """A generated-LR split as a ``FaceSource`` (all shards loaded once; LR faces are small:
  20,000 AFLW faces at 32 x 32 are 61 MB)."""

  def __init__(self, directory: str, split: str):
    root = os.path.join(directory, split)
    if not is_done(directory, split):
      raise FileNotFoundError(
          f"no finished generated-LR split {split!r} in {directory!r} ({root}/done.json is "
          f"missing): run the high-to-low stage's generation first, e.g. python -m jaxdet.main "
          f"--config=configs/high_to_low.py:demo --workdir=runs/h2l --mode=generate.")
    with open(os.path.join(root, "meta.json")) as f:
      self.meta = json.load(f)
    self.scheme = str(self.meta["scheme"])
    self.split = split
    n, size = int(self.meta["num_examples"]), int(self.meta["shard_size"])
    parts = []
    for k in range(-(-n // size)):
      with np.load(shard_path(directory, split, k)) as z:
        parts.append({f: z[f] for f in _FIELDS})
    self._data = {f: np.concatenate([p[f] for p in parts]) for f in _FIELDS}
    if len(self._data["image"]) != n:
      raise ValueError(f"{root}: meta.json says {n} examples, the shards hold "
                       f"{len(self._data['image'])}; delete the folder and regenerate.")

  def __len__(self) -> int:
    return len(self._data["image"])

  def __getitem__(self, i: int) -> FaceExample:
    d = self._data
    return FaceExample(image=d["image"][i], landmarks=d["landmarks"][i], visible=d["visible"][i],
                       box=d["box"][i], identity=int(d["identity"][i]),
                       key=f"generated/{self.split}/{d['key'][i]}")
