"""Embedded face benchmark: rendered faces with exact 68-point landmarks, built on first use.

Stands in for the data of the low-resolution landmark paper (§3 datasets, §4.1: AFLW 19 points /
300W 68 points as HR, WIDER FACE faces of 20-40 px as real LR; Table 2: TinyFace identification)
when those are not at hand. Nothing is downloaded. The faces, their landmarks and visibility and
the real-LR degradation are described in ``jaxdet.data.face_render``.

Splits (identity parameters from ``(seed, split, identity)``; every split has its own identities;
hr / real-LR splits 5 faces per identity):

* ``hr_train`` / ``hr_test``: 128 x 128, labelled (the AFLW / 300W role);
* ``real_lr_train`` / ``real_lr_test``: 32 x 32 real LR (the WIDER FACE 20-40 px role): other
  renders put through ``face_render.degrade_to_real_lr``; truth = HR landmarks x 32/128.
  ``real_lr_train`` is unlabelled by default (S4); ``real_lr_test`` keeps its truth;
* ``id_train`` / ``id_test``: real-LR faces of disjoint identities (default 40 + 40, 6 each) for
  the closed-set identification of Table 2 (TinyFace role).

Storage: ``<root>/<split>.npz``: ``images`` uint8 [n, S, S, 3], ``landmarks68`` float32
[n, 68, 2], ``visible68`` bool [n, 68], ``box`` float32 [n, 4], ``identity`` int32 [n], ``pose``
float32 [n, 3] (yaw, pitch, roll); ``meta.json`` last. Deterministic for a seed, atomic (temporary
directory + rename), cached at ``$JAXDET_DATA/faces_v1`` (else ``~/.cache/jaxdet/faces_v1``;
other sizes / seeds add a suffix). CLI: ``python -m jaxdet.data.face_benchmark --root DIR``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from jaxdet.data.face_records import FROM_68_TO_5, FROM_68_TO_19, FaceExample, from_68
from jaxdet.data.face_records import scheme as landmark_scheme
from jaxdet.data.face_render import (HR_SIZE, LR_SIZE, degrade_to_real_lr, render_face,
                                     sample_identity, sample_view)

VERSION = 1
SPLITS = ("hr_train", "hr_test", "real_lr_train", "real_lr_test", "id_train", "id_test")
HR_IMAGES_PER_IDENTITY = 5
_DEFAULTS = dict(num_hr_train=2000, num_hr_test=300, num_real_lr_train=2000, num_real_lr_test=300,
                 num_id_train_identities=40, num_id_test_identities=40, images_per_identity=6,
                 seed=0)


# ------------------------------------------------------------------------------- build / cache
def split_layout(**sizes) -> dict:
  """split -> (number of faces, faces per identity, first global identity id) for the sizes of
  ``ensure_face_benchmark`` (defaults for those not given)."""
  z = {**_DEFAULTS, **sizes}
  per_id = z["images_per_identity"]
  counts = (z["num_hr_train"], z["num_hr_test"], z["num_real_lr_train"], z["num_real_lr_test"],
            z["num_id_train_identities"] * per_id, z["num_id_test_identities"] * per_id)
  layout, first = {}, 0
  for split, n in zip(SPLITS, counts):
    per = per_id if split.startswith("id_") else HR_IMAGES_PER_IDENTITY
    layout[split] = (int(n), per, first)
    first += -(-int(n) // per)
  return layout


def render_example(seed: int, split: str, i: int, per_identity: int) -> dict:
  """Face ``i`` of ``split``: ``image`` / ``landmarks`` as stored (LR for real-LR splits), the
  clean HR render ``hr`` / ``hr_landmarks``, ``visible``, ``pose`` and the split-local identity."""
  tag = SPLITS.index(split)
  identity = sample_identity(np.random.default_rng([seed, 1, tag, i // per_identity]))
  rng = np.random.default_rng([seed, 2, tag, i])
  view = sample_view(rng)
  hr, lm, vis = render_face(rng, identity, view)
  out = dict(hr=hr, hr_landmarks=lm, image=hr, landmarks=lm, visible=vis, identity=i // per_identity,
             pose=np.array([view["yaw"], view["pitch"], view["roll"]], np.float32))
  if not split.startswith("hr_"):
    out["image"], out["landmarks"] = degrade_to_real_lr(hr, rng), lm * np.float32(LR_SIZE / HR_SIZE)
  return out


def build_face_benchmark(out_dir, *, seed: int = 0, verbose: bool = True, **sizes) -> dict:
  """Writes every split into ``out_dir`` (not atomic; ``ensure_face_benchmark`` is)."""
  t0, out_dir, stats, total = time.time(), Path(out_dir), {}, 0
  out_dir.mkdir(parents=True, exist_ok=True)
  for split, (n, per, first) in split_layout(**sizes).items():
    recs = [render_example(seed, split, i, per) for i in range(n)]
    side = HR_SIZE if split.startswith("hr_") else LR_SIZE
    lm = np.array([r["landmarks"] for r in recs], np.float32).reshape(n, 68, 2)
    arrays = dict(images=np.array([r["image"] for r in recs], np.uint8).reshape(n, side, side, 3),
                  landmarks68=lm, visible68=np.array([r["visible"] for r in recs], bool).reshape(n, 68),
                  box=np.concatenate([lm.min(1), lm.max(1)], 1).astype(np.float32),
                  identity=np.array([first + r["identity"] for r in recs], np.int32),
                  pose=np.array([r["pose"] for r in recs], np.float32).reshape(n, 3))
    np.savez(out_dir / f"{split}.npz", **arrays)
    iod = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1) if n else np.zeros(1)
    stats[split] = dict(faces=n, size=side, identities=len(set(arrays["identity"].tolist())),
                        mean_interocular=round(float(iod.mean()), 2),
                        hidden_points=round(float(1 - arrays["visible68"].mean()) if n else 0.0, 4))
    total += n
    if verbose:
      print(f"  face benchmark {split}: {n} faces ({time.time() - t0:.1f}s)", flush=True)
  seconds = time.time() - t0
  meta = dict(version=VERSION, seed=seed, **sizes, stats=stats, build_seconds=round(seconds, 2),
              faces_per_second=round(total / max(seconds, 1e-9), 1))
  with open(out_dir / "meta.json", "w") as f:  # written last: marks a complete build
    json.dump(meta, f, indent=1)
  return meta


def default_root(**params) -> Path:
  base = Path(os.environ["JAXDET_DATA"]) if os.environ.get("JAXDET_DATA") else Path.home() / ".cache" / "jaxdet"
  params = {**_DEFAULTS, **params}
  name = f"faces_v{VERSION}"
  if params != _DEFAULTS:
    name += "-" + "-".join(str(params[k]) for k in _DEFAULTS)
  return base / name


def _read_meta(root: Path, want: dict):
  try:
    with open(root / "meta.json") as f:
      meta = json.load(f)
  except FileNotFoundError:
    return None
  got = {k: meta.get(k) for k in want}
  if got != want:
    raise ValueError(f"'{root}' holds a face benchmark built with {got}, not {want}; pass another "
                     "root or delete that directory.")
  return meta


def ensure_face_benchmark(root=None, *, num_hr_train: int = 2000, num_hr_test: int = 300,
                          num_real_lr_train: int = 2000, num_real_lr_test: int = 300,
                          num_id_train_identities: int = 40, num_id_test_identities: int = 40,
                          images_per_identity: int = 6, seed: int = 0, verbose: bool = True) -> Path:
  """The benchmark directory, built first (deterministically from ``seed``, atomically) if
  ``root`` (default ``default_root(...)``) holds no complete build. Raises ValueError if it holds
  a build with other parameters."""
  sizes = dict(num_hr_train=num_hr_train, num_hr_test=num_hr_test, num_real_lr_train=num_real_lr_train,
               num_real_lr_test=num_real_lr_test, num_id_train_identities=num_id_train_identities,
               num_id_test_identities=num_id_test_identities, images_per_identity=images_per_identity)
  if min(sizes.values()) < 0 or images_per_identity < 1:
    raise ValueError(f"face benchmark sizes must be >= 0 (images_per_identity >= 1), got {sizes}")
  root = Path(root) if root is not None else default_root(**sizes, seed=seed)
  want = dict(version=VERSION, seed=seed, **sizes)
  if _read_meta(root, want) is not None:
    return root
  if root.exists() and any(root.iterdir()):
    raise ValueError(f"'{root}' exists, is not empty and has no meta.json (not a complete face "
                     "benchmark build); pass another root or delete that directory.")
  root.parent.mkdir(parents=True, exist_ok=True)
  for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by killed builds
    if time.time() - stale.stat().st_mtime > 3600:
      shutil.rmtree(stale, ignore_errors=True)
  tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  if verbose:
    print(f"Building the jaxdet face benchmark in {root} (once) ...", flush=True)
  try:
    meta = build_face_benchmark(tmp, seed=seed, verbose=verbose, **sizes)
    if root.exists():
      root.rmdir()
    os.rename(tmp, root)
  except OSError:
    if _read_meta(root, want) is None:  # not a concurrent build that finished first
      raise
    meta = _read_meta(root, want)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  if verbose:
    print(f"Face benchmark ready in {meta['build_seconds']}s ({meta['faces_per_second']} faces/s).",
          flush=True)
  return root


# -------------------------------------------------------------------------------------- source
_TO_SCHEME = {"68": np.eye(68), "19": FROM_68_TO_19, "5": FROM_68_TO_5}


class FaceBenchmarkSource:
  """A split of the embedded face benchmark as a ``FaceSource``.

  ``scheme``: '68', '19' or '5' (``face_records.from_68``; a derived point is visible when all
  the points it averages are). ``labelled``: ``None`` = every split but ``real_lr_train`` (the
  unlabelled real LR faces of setting S4); ``False`` hides the landmarks (``scheme`` is then '').
  """

  def __init__(self, root, split: str, *, scheme: str = "68", labelled: bool | None = None):
    if split not in SPLITS:
      raise ValueError(f"unknown face benchmark split {split!r}: use one of {', '.join(SPLITS)}.")
    self.root, self.split = Path(root), split
    if not (self.root / "meta.json").exists():
      raise FileNotFoundError(
          f"no face benchmark in '{self.root}': build it with jaxdet.data.face_benchmark."
          f"ensure_face_benchmark(root) or `python -m jaxdet.data.face_benchmark --root {self.root}`.")
    self._weights = _TO_SCHEME[landmark_scheme(scheme).name]
    self.labelled = split != "real_lr_train" if labelled is None else bool(labelled)
    self.scheme = str(scheme) if self.labelled else ""
    with open(self.root / "meta.json") as f:
      self._len = int(json.load(f)["stats"][split]["faces"])
    self._data = None

  def __len__(self) -> int:
    return self._len

  def arrays(self) -> dict:
    """The split's arrays (images, landmarks68, visible68, box, identity, pose), loaded once."""
    if self._data is None:
      with np.load(self.root / f"{self.split}.npz") as z:
        self._data = {k: z[k] for k in z.files}
    return self._data

  def __getitem__(self, i: int) -> FaceExample:
    if not -self._len <= int(i) < self._len:
      raise IndexError(f"face {i} of {self.split} (size {self._len})")
    i, d = int(i) % self._len, self.arrays()
    lm = vis = None
    if self.labelled:
      lm = from_68(d["landmarks68"][i], self.scheme)
      vis = ((self._weights > 0) @ ~d["visible68"][i]) == 0
    return FaceExample(image=d["images"][i], landmarks=lm, visible=vis, box=d["box"][i],
                       identity=int(d["identity"][i]), key=f"{self.split}/{i}")


def save_preview(root, path, count: int = 8) -> None:
  """A grid of HR test faces and real-LR test faces (x4) with their landmarks (red: hidden)."""
  from jaxdet.visualize import draw_points, image_grid
  tiles = []
  for split, k in (("hr_test", 1), ("real_lr_test", 4)):
    src = FaceBenchmarkSource(root, split)
    for i in np.unique(np.linspace(0, len(src) - 1, min(count, len(src))).astype(int)):
      ex = src[int(i)]  # spread over the split: 5 consecutive faces share an identity
      img = np.kron(ex.image, np.ones((k, k, 1), np.uint8))
      img = draw_points(img, ex.landmarks * k, color=(0, 255, 0), radius=0, visible=ex.visible)
      tiles.append(draw_points(img, ex.landmarks[~ex.visible] * k, color=(255, 0, 0), radius=0))
  Image.fromarray(image_grid(tiles, columns=count)).save(path)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description="Build the jaxdet embedded face benchmark, print stats.")
  ap.add_argument("--root", default=None, help=f"default $JAXDET_DATA/faces_v{VERSION} or "
                  f"~/.cache/jaxdet/faces_v{VERSION}")
  for key, value in _DEFAULTS.items():
    ap.add_argument("--" + key.replace("_", "-"), type=int, default=value)
  ap.add_argument("--preview", default="", help="save a PNG grid of test faces with landmarks")
  a = ap.parse_args(argv)
  t0 = time.time()
  root = ensure_face_benchmark(a.root, **{k: getattr(a, k) for k in _DEFAULTS})
  with open(root / "meta.json") as f:
    meta = json.load(f)
  print(json.dumps({"root": str(root), "build_seconds": meta["build_seconds"],
                    "faces_per_second": meta["faces_per_second"], "stats": meta["stats"],
                    "seconds": round(time.time() - t0, 2)}, indent=1))
  if a.preview:
    save_preview(root, a.preview)
    print(f"wrote {a.preview}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
