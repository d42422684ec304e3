"""Face sources named in a config: ``"kind:argument"`` strings -> ``FaceSource``.

The landmark experiments read several face sets (labelled HR faces, real LR faces, generated LR
faces, evaluation sets). Each is named by one short spec, so a run is retargeted from the command
line (``--config.data.real_lr="('folder:/data/tinyface/Training_Set',)"``); the paths a kind
needs live in ``config.data`` next to it:

=====================  =========================================================================
spec                   source
=====================  =========================================================================
``benchmark:SPLIT``    the embedded face benchmark (``data.benchmark_root``), SPLIT one of
                       hr_train, hr_test, real_lr_train, real_lr_test, id_train, id_test
``300w:SPLIT``         300W (``data.w300_root``): train, common, challenging, full
``300w_dir:PATH``      any folder of image + ``.pts`` pairs (a researcher's own 68-point data)
``aflw:SPLIT``         AFLW-Full 19 points (``data.aflw_mat``, ``data.aflw_images``): train, test
``wider:hr|lr``        WIDER FACE train faces (``data.wider_face_root``) with side > ``data.
                       wider_hr_min_size`` (HR, §3) or in ``data.wider_lr_sizes`` (real LR)
``folder:PATH``        TinyFace-style image folder (unlabelled real LR / identities);
                       ``folder:A+B`` pools folders under the first one's identity names
``tfds:NAME/SPLIT``    tfds face builders (``the300w_lp``, ``aflw2k3d``; ``data.tfds_data_dir``)
``generated:SPLIT``    a generated-LR split written by a high-to-low run (``data.generated_dir``)
=====================  =========================================================================

Several specs in one tuple are concatenated (the paper's HR set is AFLW + 300W + WIDER FACE
faces > 100 px, §3 "High Resolution Dataset"). ``labelled=False`` hides the landmarks of a
labelled source (the real-LR train faces of S4 are unlabelled even when the benchmark knows
their truth).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from jaxdet.data.face_records import FaceExample

KINDS = ("benchmark", "300w", "300w_dir", "aflw", "wider", "folder", "tfds", "generated")


class ConcatFaceSource:
  """Several face sources as one (all with the same scheme, or all unlabelled)."""

  def __init__(self, sources: Sequence, names: Sequence[str]):
    schemes = {s.scheme for s in sources}
    if len(schemes) > 1:
      raise ValueError(f"face sources {list(names)} mix landmark schemes {sorted(schemes)}: "
                        f"concatenate only sources with the same points (or unlabelled ones).")
    self.sources, self.names = list(sources), list(names)
    self.scheme = schemes.pop()
    self._offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __getitem__(self, i: int) -> FaceExample:
    k = int(np.searchsorted(self._offsets, i, side="right") - 1)
    return self.sources[k][int(i - self._offsets[k])]


class UnlabelledFaceSource:
  """A source with its landmarks hidden (real LR faces are unlabelled in the paper)."""

  scheme = ""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> FaceExample:
    ex = self.source[i]
    return FaceExample(image=ex.image, box=ex.box, identity=ex.identity, key=ex.key)


class FaceSubset:
  """The first ``n`` faces of a source (``config.eval.max_images``)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(int(n), len(source))
    self.scheme = source.scheme

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> FaceExample:
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]


def _need(data_cfg, key: str, spec: str) -> str:
  value = data_cfg.get(key, "")
  if not value:
    raise ValueError(f"face source {spec!r} needs config.data.{key} (empty).")
  return value


def _one(spec: str, data_cfg, *, size: int, scheme: str):
  kind, _, arg = spec.partition(":")
  if kind not in KINDS or not arg:
    raise ValueError(f"face source {spec!r}: use 'kind:argument' with kind one of "
                      f"{', '.join(KINDS)} (jaxdet.data.face_factory).")
  margin = float(data_cfg.get("crop_margin", 0.25))
  if kind == "benchmark":
    from jaxdet.data import face_benchmark
    n_train, n_test = int(data_cfg.benchmark_train), int(data_cfg.benchmark_test)
    n_ids = int(data_cfg.benchmark_identities)
    root = face_benchmark.ensure_face_benchmark(
        data_cfg.get("benchmark_root") or None, num_hr_train=n_train, num_real_lr_train=n_train,
        num_hr_test=n_test, num_real_lr_test=n_test, num_id_train_identities=n_ids,
        num_id_test_identities=n_ids)
    return face_benchmark.FaceBenchmarkSource(root, arg, scheme=scheme or "68")
  if kind == "generated":
    from jaxdet.data.generated_faces import GeneratedFaceSource
    return GeneratedFaceSource(_need(data_cfg, "generated_dir", spec), arg)
  from jaxdet.data import face_sources
  if kind == "300w":
    return face_sources.W300Source(_need(data_cfg, "w300_root", spec), arg, size=size,
                                   margin=margin)
  if kind == "300w_dir":
    return face_sources.W300Source.from_directory(arg, size=size, margin=margin)
  if kind == "aflw":
    return face_sources.AflwSource(_need(data_cfg, "aflw_mat", spec),
                                   _need(data_cfg, "aflw_images", spec), arg, size=size,
                                   margin=margin)
  if kind == "wider":
    root = _need(data_cfg, "wider_face_root", spec)
    if arg not in ("hr", "lr"):
      raise ValueError(f"face source {spec!r}: use 'wider:hr' or 'wider:lr'.")
    lo, hi = ((float(data_cfg.wider_hr_min_size), float("inf")) if arg == "hr"
              else tuple(float(v) for v in data_cfg.wider_lr_sizes))
    return face_sources.WiderFaceCropSource(
        os.path.join(root, "wider_face_split", "wider_face_train_bbx_gt.txt"),
        os.path.join(root, "WIDER_train", "images"), min_size=lo, max_size=hi, size=size)
  if kind == "folder":
    # 'folder:A+B': several folders with one identity map (the first folder's names), e.g.
    # TinyFace's Gallery_Match + Probe pooled for the identification protocol.
    roots = arg.split("+")
    first = face_sources.ImageFolderFaceSource(roots[0], size=size)
    if len(roots) == 1:
      return first
    rest = [face_sources.ImageFolderFaceSource(r, size=size,
                                               identity_names=first.identity_names)
            for r in roots[1:]]
    return ConcatFaceSource([first] + rest, roots)
  from jaxdet.data import face_tfds
  name, _, split = arg.partition("/")
  return face_tfds.TfdsFaceSource(name, split or "train",
                                  data_dir=data_cfg.get("tfds_data_dir") or None, size=size,
                                  margin=margin)


def face_source(specs, data_cfg, *, size: int, scheme: str = "", labelled: bool = True):
  """The source named by ``specs`` (one spec or a tuple of them, concatenated).

  Args:
    specs: e.g. ``"benchmark:hr_train"`` or ``("aflw:train", "wider:hr")``.
    data_cfg: ``config.data`` (paths of each kind).
    size: side of the face crops a file-based source returns (HR 128, real LR 32).
    scheme: the landmark scheme the benchmark should return ('68', '19' or '5').
    labelled: ``False`` hides the landmarks.
  """
  if isinstance(specs, str):
    specs = (specs,)
  specs = tuple(specs)
  if not specs:
    raise ValueError("an empty tuple of face sources: name at least one, e.g. "
                      "'benchmark:hr_train'.")
  sources = [_one(s, data_cfg, size=size, scheme=scheme) for s in specs]
  if not labelled:
    sources = [UnlabelledFaceSource(s) if s.scheme else s for s in sources]
  return sources[0] if len(sources) == 1 else ConcatFaceSource(sources, specs)
