"""Face datasets on disk as ``FaceSource``s: 300W, AFLW-Full, WIDER FACE crops, TinyFace folders.

The low-resolution landmark paper (§3, "High Resolution Dataset" / "Low Resolution Dataset"; §4.3)
uses: AFLW (19 points): 20,000 training faces, the remaining 4,386 the validation / test set;
the whole of 300W (68 points; Table 4 reports its common / challenging / full test subsets);
WIDER FACE faces between 20 x 20 and 40 x 40 px as *real LR* faces (47,046) and faces over
100 x 100 px in the HR set (35,543 HR faces with AFLW + 300W); TinyFace for face identification.

Every source returns a square **face crop** of side ``size`` made by ``crop_face``: a square of
side ``max(w, h) * (1 + margin)`` centred on the face box, filled with zeros (``pad="zero"``) or
the nearest image pixels (``pad="edge"``) where it leaves the image, resized with PIL bilinear
(antialiased when shrinking). Landmarks and box go through the same scale and offset, in the
continuous pixel convention of ``face_records`` (pixel centre at +0.5), so a landmark stays on
the pixel it marks. Sources (each class documents its dataset layout): ``W300Source`` (300W
folders of image + ``.pts``), ``AflwSource`` (``AFLWinfo_release.mat`` + AFLW ``flickr``),
``WiderFaceCropSource`` (official WIDER FACE annotation text + images), ``ImageFolderFaceSource``
(TinyFace-style ``root/<identity>/*.jpg`` or ``root/<identity>_<k>.jpg``).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image

from jaxdet.data.face_records import FaceExample
from jaxdet.data.folder import IMAGE_EXTENSIONS
from jaxdet.data.wider_face import parse_annotation_file

PADS = ("zero", "edge")


# ---------------------------------------------------------------------------------- cropping
def crop_window(box, margin: float = 0.25) -> tuple[float, float, float]:
  """The square ``(x0, y0, side)`` that ``crop_face`` cuts around ``box`` (xyxy): centred on the
  box, ``side = max(w, h) * (1 + margin)``. A point ``p`` of the image lands at
  ``(p - (x0, y0)) * size / side`` in the crop (the inverse maps predictions back)."""
  x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
  side = max(x2 - x1, y2 - y1) * (1.0 + float(margin))
  if not (math.isfinite(side) and side > 0):
    raise ValueError(f"crop_face: face box {[x1, y1, x2, y2]} (margin {margin}) has no extent.")
  return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def crop_face(image: np.ndarray, box, size: int, landmarks=None, *, margin: float = 0.25,
              pad: str = "zero"):
  """Cuts the square ``crop_window(box, margin)`` out of ``image`` (``uint8 [H, W, 3]`` or
  ``[H, W]``) and resizes it to ``size x size`` (PIL bilinear; antialiased when shrinking).
  ``box`` (xyxy) and optional ``landmarks`` ``[N, 2]`` are continuous pixel coordinates; ``pad``
  is 'zero' (black) or 'edge' (nearest image pixel) where the square leaves the image.

  Returns ``(crop uint8 [size, size, 3], landmarks float32 [N, 2] or None, box float32 [4])``,
  landmarks and box mapped by exactly the scale and offset of the resampling.
  """
  _check_size_pad(size, margin, pad)
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"crop_face: image must be uint8 [H, W, 3], got {image.dtype} "
                     f"{image.shape}.")
  size = int(size)
  x0, y0, side = crop_window(box, margin)
  scale = side / size  # input pixels per output pixel
  # An integer window holding the square plus the filter support (PIL's bilinear reaches
  # max(scale, 1) input pixels around a sample), padded outside the image: resampling it gives
  # the same pixels as resampling an infinitely padded image.
  m = int(math.ceil(max(scale, 1.0))) + 1
  wx0, wy0 = math.floor(x0) - m, math.floor(y0) - m
  cols = np.arange(wx0, math.ceil(x0 + side) + m)
  rows = np.arange(wy0, math.ceil(y0 + side) + m)
  h, w = image.shape[:2]
  window = image[np.ix_(np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1))]
  if pad == "zero":
    window[(rows < 0) | (rows >= h)] = 0
    window[:, (cols < 0) | (cols >= w)] = 0
  # PIL's resize with a float ``box`` samples output pixel centre j + 0.5 at input coordinate
  # box[0] + (j + 0.5) * scale: the continuous-coordinate mapping, with no half-pixel shift.
  crop = Image.fromarray(window).resize(
      (size, size), Image.Resampling.BILINEAR,
      box=(x0 - wx0, y0 - wy0, x0 - wx0 + side, y0 - wy0 + side))

  def move(points):
    return ((np.asarray(points, np.float64).reshape(-1, 2) - [x0, y0]) / scale).astype(np.float32)

  out_lm = None if landmarks is None else move(landmarks)
  return np.asarray(crop), out_lm, move(box).reshape(4)


def read_image(path, where: str = "") -> np.ndarray:
  """``uint8 [H, W, 3]`` RGB of an image file; errors name the file (and ``where`` it is used)."""
  try:
    with Image.open(path) as img:
      return np.asarray(img.convert("RGB"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"image '{path}'{where} not found.") from e
  except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
    raise OSError(f"Cannot read image '{path}'{where}: {type(e).__name__}: {e}. Hint: fix, "
                  "re-extract or remove the file.") from e


def _check_size_pad(size, margin, pad):
  if int(size) < 1 or float(margin) <= -1 or pad not in PADS:
    raise ValueError(f"face crops need size >= 1, margin > -1 and pad in {PADS}; got "
                     f"size={size}, margin={margin}, pad={pad!r}.")
  return int(size), float(margin), pad


class _Face(NamedTuple):
  path: Path  # image file
  key: str
  box: np.ndarray | None  # float [4] xyxy in the image
  landmarks: np.ndarray | None = None  # float32 [N, 2] in the image
  visible: np.ndarray | None = None
  identity: int = -1


class _CropSource:
  """``FaceSource`` over ``self._faces`` (``_Face`` rows), read and cropped on access."""

  scheme, fit = "", "pad"  # fit: how a face without box (the whole image) becomes a crop
  _faces: list
  size, margin, pad = 128, 0.25, "zero"

  def __len__(self) -> int:
    return len(self._faces)

  def __getitem__(self, i: int) -> FaceExample:
    if not -len(self) <= i < len(self):
      raise IndexError(f"index {i} out of range for {len(self)} faces")
    f = self._faces[i]
    image = read_image(f.path, f" (face '{f.key}' of {type(self).__name__})")
    if f.box is None and self.fit == "stretch":  # the whole image is the face: a resize
      crop = np.asarray(Image.fromarray(image).resize((self.size, self.size),
                                                      Image.Resampling.BILINEAR))
      return FaceExample(crop, box=np.array([0, 0, self.size, self.size], np.float32),
                         identity=f.identity, key=f.key)
    box = [0, 0, image.shape[1], image.shape[0]] if f.box is None else f.box
    crop, lm, box = crop_face(image, box, self.size, f.landmarks, margin=self.margin, pad=self.pad)
    return FaceExample(crop, lm, f.visible, box, identity=f.identity, key=f.key)

  def __repr__(self) -> str:
    return f"{type(self).__name__}(faces={len(self)}, scheme={self.scheme!r}, size={self.size})"


# ---------------------------------------------------------------------------------- 300W
def read_pts(path) -> np.ndarray:
  """Landmarks of a 300W / iBUG ``.pts`` file as ``float32 [N, 2]`` continuous coordinates.

  Format: header lines ``version: 1`` and ``n_points: N``, a line ``{``, N lines ``x y``
  (1-based pixel coordinates, converted with ``- 0.5``), a line ``}``. Errors name file and line.
  """
  path = Path(path)
  try:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
  except OSError as e:
    raise OSError(f"cannot read landmark file '{path}': {e}") from e

  def err(line: int, what: str) -> ValueError:
    return ValueError(f"{path}:{line}: {what} (300W .pts format: 'version: 1', 'n_points: N', "
                      "'{', N lines 'x y', '}').")

  rows = [(k, t.strip()) for k, t in enumerate(lines, 1) if t.strip()]  # (line, text)
  brace = next((j for j, (_, t) in enumerate(rows) if t == "{"), None)
  if brace is None:
    raise err(len(lines), "no '{' line")
  n_points = None
  for k, text in rows[:brace]:
    name, sep, value = text.partition(":")
    if not sep:
      raise err(k, f"expected a header line 'name: value' or '{{', got {text!r}")
    if name.strip() == "n_points":
      n_points = int(value) if value.strip().isdigit() else 0
      if n_points <= 0:
        raise err(k, f"n_points must be a positive integer, got {value.strip()!r}")
  if n_points is None:
    raise err(rows[brace][0], "no 'n_points:' line before '{'")
  points = []
  for k, text in rows[brace + 1:]:
    if text == "}":
      break
    try:
      xy = [float(v) for v in text.split()]
    except ValueError:
      xy = []
    if len(xy) != 2 or not all(math.isfinite(v) for v in xy):
      raise err(k, f"point {len(points) + 1}: expected two finite numbers 'x y', got {text!r}")
    points.append(xy)
  else:
    raise err(len(lines), f"no closing '}}' after {len(points)} points")
  if len(points) != n_points:
    raise err(k, f"{len(points)} points, but n_points is {n_points}")
  if brace + len(points) + 2 < len(rows):
    raise err(rows[brace + len(points) + 2][0], "text after the closing '}'")
  return (np.asarray(points, np.float64) - 0.5).astype(np.float32)


W300_SPLITS = {"train": ("afw", "helen/trainset", "lfpw/trainset"),
               "common": ("helen/testset", "lfpw/testset"), "challenging": ("ibug",),
               "full": ("helen/testset", "lfpw/testset", "ibug")}
# Faces (image + .pts pairs) of each folder of the 300W release: train 3148, common 554,
# challenging 135, full 689.
W300_COUNTS = {"afw": 337, "helen/trainset": 2000, "lfpw/trainset": 811, "helen/testset": 330,
               "lfpw/testset": 224, "ibug": 135}
_SCHEME_OF_POINTS = {68: "68", 19: "19", 5: "5"}


def _pts_pairs(images: list[Path], pts: list[Path], where: str, skip: bool, stats: dict):
  """Matches images and ``.pts`` files by path without suffix; unmatched ones are an error or,
  with ``skip``, counted in ``stats`` and printed."""
  by_stem: dict[Path, Path] = {}
  for p in images:
    if by_stem.setdefault(p.with_suffix(""), p) != p:
      raise ValueError(f"{where}: two images for one .pts name: '{by_stem[p.with_suffix('')]}' "
                       f"and '{p}'. Hint: keep one of them.")
  pts_of = {p.with_suffix(""): p for p in pts}
  no_pts = [p for s, p in by_stem.items() if s not in pts_of]
  no_image = [p for s, p in pts_of.items() if s not in by_stem]
  for what, bad, hint in (("image without a .pts file", no_pts, "add its NAME.pts"),
                          (".pts file without an image", no_image, "add its image")):
    if bad and not skip:
      raise FileNotFoundError(f"{where}: {len(bad)} {what}(s), first '{bad[0]}'. Hint: {hint}, "
                              "remove it, or pass skip_unannotated=True to leave such files out.")
    if bad:
      print(f"{where}: skipped {len(bad)} {what}(s), first '{bad[0]}'")
  for name, bad in (("images_without_pts", no_pts), ("pts_without_image", no_image)):
    stats[name] = stats.get(name, 0) + len(bad)
  return [(by_stem[s], pts_of[s]) for s in sorted(by_stem) if s in pts_of]


def _list_dir(folder: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
  files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
  images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
  return images, [p for p in files if p.suffix.lower() == ".pts"]


class W300Source(_CropSource):
  """300W (68 points) face crops, or any folder of image + ``.pts`` pairs (``from_directory``).

  Layout of the 300W release (ibug.doc.ic.ac.uk/resources/300-W): ``root/afw``,
  ``root/helen/{trainset,testset}``, ``root/lfpw/{trainset,testset}``, ``root/ibug``, each holding
  images (``.jpg``; ``.png`` in lfpw) with a same-name ``.pts`` (``read_pts``) per face. Splits
  (``W300_SPLITS``): ``train`` = afw + helen/trainset + lfpw/trainset (3148 faces), ``common`` =
  helen/testset + lfpw/testset (554), ``challenging`` = ibug (135), ``full`` = common +
  challenging (689). Folder counts other than the release's (``W300_COUNTS``) give a warning.

  Face box = bounds of the points (``crop_face`` around it); keys = image paths relative to
  ``root``. An image without a ``.pts`` (or the reverse) is an error naming it;
  ``skip_unannotated=True`` leaves such files out, printed and counted in ``stats``.
  """

  def __init__(self, root, split: str, *, size: int = 128, margin: float = 0.25,
               pad: str = "zero", skip_unannotated: bool = False):
    root = Path(root)
    if split not in W300_SPLITS:
      raise ValueError(f"300W split {split!r}: use one of {sorted(W300_SPLITS)}.")
    pairs, self.stats, counts = [], {}, {}
    for sub in W300_SPLITS[split]:
      if not (root / sub).is_dir():
        raise FileNotFoundError(f"300W folder '{root / sub}' not found (split {split!r} reads "
                                f"{', '.join(W300_SPLITS[split])}). Hint: root is the folder "
                                "holding afw/, helen/, lfpw/ and ibug/ of the 300W release.")
      found = _pts_pairs(*_list_dir(root / sub, False), str(root / sub), skip_unannotated,
                         self.stats)
      counts[sub] = len(found)
      pairs += found
    self.stats["faces_per_folder"] = counts
    off = {s: (n, W300_COUNTS[s]) for s, n in counts.items() if n != W300_COUNTS[s]}
    if off:
      warnings.warn(f"300W '{root}' split {split!r}: face counts (found, release) {off} differ "
                    "from the 300W release; results are not comparable with published ones.",
                    RuntimeWarning)
    self._setup(pairs, root, size, margin, pad, str(root))
    if self.scheme != "68":
      raise ValueError(f"300W '{root}': the .pts files hold {self.scheme} points, not 68.")

  @classmethod
  def from_directory(cls, path, *, size: int = 128, margin: float = 0.25, pad: str = "zero",
                     skip_unannotated: bool = False) -> "W300Source":
    """Any image + ``.pts`` pairs: ``path`` is a folder (searched recursively) or a list file
    (one image path per line, relative to the list file's folder; ``#`` comments). The scheme
    follows ``n_points`` (68, 19 or 5; all files alike). Keys are paths relative to the folder."""
    path, self = Path(path), cls.__new__(cls)
    self.stats = {}
    if path.is_dir():
      base, (images, pts) = path, _list_dir(path, True)
    elif path.is_file():
      base, images = path.parent, []
      for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
          images.append(base / line)
          if not images[-1].is_file():
            raise FileNotFoundError(f"{path}:{n}: image '{images[-1]}' not found.")
      pts = [p.with_suffix(".pts") for p in images if p.with_suffix(".pts").is_file()]
    else:
      raise FileNotFoundError(f"'{path}' is neither a folder of image + .pts pairs nor a list "
                              "file.")
    pairs = _pts_pairs(images, pts, str(path), skip_unannotated, self.stats)
    self._setup(pairs, base, size, margin, pad, str(path))
    return self

  def _setup(self, pairs, base: Path, size, margin, pad, where: str):
    self.size, self.margin, self.pad = _check_size_pad(size, margin, pad)
    if not pairs:
      raise FileNotFoundError(f"'{where}': no image + .pts pairs found.")
    self._faces, counts = [], {}
    for image, pts in pairs:
      lm = read_pts(pts)
      counts.setdefault(len(lm), pts)
      key = os.path.relpath(image, base).replace(os.sep, "/")
      self._faces.append(_Face(image, key, np.concatenate([lm.min(0), lm.max(0)]), lm,
                               np.ones(len(lm), bool)))
    if len(counts) > 1 or next(iter(counts)) not in _SCHEME_OF_POINTS:
      raise ValueError(f"'{where}': .pts files must all hold 68, 19 or 5 points; found "
                       f"{ {n: str(p) for n, p in counts.items()} } (points: an example file).")
    self.scheme = _SCHEME_OF_POINTS[next(iter(counts))]
    self.stats["faces"] = len(self._faces)


# ---------------------------------------------------------------------------------- AFLW
AFLW_NUM_TRAIN = 20000  # of 24,386 records; the other 4,386 are the test set (paper §3)
AFLW_SPLITS = ("train", "test", "full")


class AflwSource(_CropSource):
  """AFLW-Full (19 points) face crops, the protocol of SAN / LAB / TCDCN.

  ``AFLWinfo_release.mat`` (TCDCN / CUHK "compositional" release; read with ``scipy.io.loadmat``)
  holds, for its 24,386 faces: ``data`` ``[n, 38]`` (the 19 x, then the 19 y; 1-based pixels,
  converted with ``- 0.5``), ``mask_new`` ``[n, 19]`` (1 = visible; ``FaceExample.visible``),
  ``bbox`` ``[n, 4]`` = ``(x1, x2, y1, y2)`` (1-based; the box given to the crop and the
  NRMSE normaliser, kept as given: ``- 0.5`` on every coordinate), ``nameList`` (cell array of
  image paths relative to ``images_root``, the AFLW ``flickr`` folder: ``0/image00002.jpg``)
  and ``ra`` (a 1-based permutation of the records). ``train`` = the records ``ra[:20000]``,
  ``test`` (= ``full``, "AFLW-Full") = ``ra[20000:]``, in ``ra`` order (``num_train`` changes
  20000, e.g. for small test fixtures). Keys are ``NAME#RECORD`` (0-based row of the ``.mat``:
  an image may hold several faces).
  """

  scheme = "19"

  def __init__(self, mat_path, images_root, split: str, *, size: int = 128,
               margin: float = 0.25, pad: str = "zero", num_train: int = AFLW_NUM_TRAIN):
    import scipy.io  # noqa: PLC0415

    self.size, self.margin, self.pad = _check_size_pad(size, margin, pad)
    if split not in AFLW_SPLITS:
      raise ValueError(f"AFLW split {split!r}: use one of {AFLW_SPLITS} (full = test).")
    mat_path, images_root = Path(mat_path), Path(images_root)
    if not mat_path.is_file():
      raise FileNotFoundError(f"AFLW annotation file '{mat_path}' not found. Hint: pass "
                              "AFLWinfo_release.mat (the 19-point AFLW-Full annotations).")
    if not images_root.is_dir():
      raise FileNotFoundError(f"AFLW image folder '{images_root}' not found. Hint: pass the AFLW "
                              "'flickr' folder the nameList paths (0/image00002.jpg) are in.")
    mat = scipy.io.loadmat(str(mat_path))
    missing = [k for k in ("data", "mask_new", "bbox", "nameList", "ra") if k not in mat]
    if missing:
      raise ValueError(f"'{mat_path}' lacks {missing}: not an AFLWinfo_release.mat.")
    n = len(mat["data"])
    sizes = {"data": 38 * n, "mask_new": 19 * n, "bbox": 4 * n, "nameList": n, "ra": n}
    bad = {k: (mat[k].shape, v) for k, v in sizes.items() if mat[k].size != v}
    if bad:
      raise ValueError(f"'{mat_path}': fields with unexpected sizes {bad} (shape, expected size; "
                       f"{n} records).")
    ra = np.asarray(mat["ra"]).reshape(-1).astype(np.int64)
    if not np.array_equal(np.sort(ra), np.arange(1, n + 1)):
      raise ValueError(f"'{mat_path}': 'ra' is not a 1-based permutation of the {n} records.")
    if not 0 < num_train < n:
      raise ValueError(f"'{mat_path}' holds {n} records; num_train={num_train} must lie in "
                       f"(0, {n}).")
    self.num_records, self.num_train = n, int(num_train)
    rows = ra[:num_train] - 1 if split == "train" else ra[num_train:] - 1
    names = np.asarray(mat["nameList"], object).reshape(-1)
    data = np.asarray(mat["data"], np.float64).reshape(n, 38)
    mask = np.asarray(mat["mask_new"]).reshape(n, 19) != 0
    bbox = np.asarray(mat["bbox"], np.float64).reshape(n, 4)
    self._faces = []
    for r in rows.tolist():
      name = str(np.asarray(names[r]).ravel()[0])  # a cell of the nameList cell array
      x1, x2, y1, y2 = bbox[r]
      if not (x2 > x1 and y2 > y1):
        raise ValueError(f"'{mat_path}' record {r} ({name}): bbox (x1, x2, y1, y2) = "
                         f"{bbox[r].tolist()} has no extent.")
      lm = np.stack([data[r, :19], data[r, 19:]], axis=1) - 0.5
      self._faces.append(_Face(images_root / name, f"{name}#{r}",
                               np.array([x1, y1, x2, y2]) - 0.5, lm.astype(np.float32),
                               mask[r].copy()))
    absent = [f.path for f in self._faces if not f.path.is_file()]
    if absent:
      raise FileNotFoundError(f"AFLW {split}: {len(absent)} image(s) of '{mat_path}' missing "
                              f"under '{images_root}', first '{absent[0]}'. Hint: images_root is "
                              "the AFLW 'flickr' folder.")
    self.stats = {"records": n, "faces": len(self._faces),
                  "visible_points": int(sum(f.visible.sum() for f in self._faces))}


# ---------------------------------------------------------------------------------- WIDER FACE
# measure -> (the size compared with min_size, the size compared with max_size)
_MEASURES = {"max": lambda w, h: (max(w, h),) * 2, "sqrt": lambda w, h: (math.sqrt(w * h),) * 2,
             "both": lambda w, h: (min(w, h), max(w, h))}


class WiderFaceCropSource(_CropSource):
  """Unlabelled WIDER FACE face crops whose size lies in ``[min_size, max_size]`` (inclusive).

  Reads the official ``wider_face_{train,val}_bbx_gt.txt`` (``wider_face.parse_annotation_file``;
  boxes ``[x, y, x + w, y + h]`` as ``WiderFaceSource``) and ``WIDER_{train,val}/images``. The
  face size is measured on the annotated ``w``, ``h`` by ``measure``: ``'max'`` (default:
  ``max(w, h)``, the side of the square crop, i.e. its resolution), ``'sqrt'`` (``sqrt(w h)``)
  or ``'both'`` (both sides in range: ``min(w, h) >= min_size`` and ``max(w, h) <= max_size``,
  the literal reading of the paper's "between 20 x 20 and 40 x 40"). Paper §3: 20-40 px are
  real LR faces (crop ``size`` 32), > 100 px HR faces (``size`` 128, ``max_size=inf``).

  Faces are dropped, each counted once in ``stats`` in this order: ``invalid`` flag
  (``drop_invalid``), ``w`` or ``h <= 0`` (degenerate), ``blur > max_blur`` / ``occlusion >
  max_occlusion`` (flags 0 / 1 / 2; None keeps all), then size (``dropped_small`` /
  ``dropped_large``); ``kept`` + drops = ``annotations``. Keys are ``EVENT/NAME.jpg#K`` (K: the
  face's 0-based line among its image's faces); ``box`` is the face box in the crop.
  """

  def __init__(self, annotation_file, images_dir, *, min_size: float, max_size: float,
               size: int, margin: float = 0.0, drop_invalid: bool = True, measure: str = "max",
               max_blur: int | None = None, max_occlusion: int | None = None, pad: str = "zero"):
    self.size, self.margin, self.pad = _check_size_pad(size, margin, pad)
    if measure not in _MEASURES:
      raise ValueError(f"WIDER face size measure {measure!r}: use one of {sorted(_MEASURES)}.")
    if not 0 <= min_size <= max_size:
      raise ValueError(f"WIDER face sizes need 0 <= min_size <= max_size, got [{min_size}, "
                       f"{max_size}].")
    self.measure, self.min_size, self.max_size = measure, float(min_size), float(max_size)
    annotation_file, images_dir = Path(annotation_file), Path(images_dir)
    if not annotation_file.is_file():
      raise FileNotFoundError(f"WIDER FACE annotation file '{annotation_file}' not found. Hint: "
                              "wider_face_split/wider_face_train_bbx_gt.txt of the release.")
    if not images_dir.is_dir():
      raise FileNotFoundError(f"WIDER FACE image folder '{images_dir}' not found. Hint: the "
                              "'images' folder of WIDER_train or WIDER_val.")
    records = parse_annotation_file(annotation_file)
    st = {"images": len(records), **dict.fromkeys((
        "annotations", "dropped_invalid", "dropped_degenerate", "dropped_blur", "dropped_occlusion",
        "dropped_small", "dropped_large", "kept", "images_with_kept_faces"), 0)}
    size_of, self._faces = _MEASURES[measure], []
    for rec in records:
      kept_before = len(self._faces)
      for k, (x, y, w, h, blur, _, _, invalid, occlusion, _) in enumerate(rec.faces.tolist()):
        st["annotations"] += 1
        lo, hi = size_of(w, h) if w > 0 and h > 0 else (0.0, 0.0)
        reason = next((name for name, drop in (
            ("dropped_invalid", drop_invalid and invalid), ("dropped_degenerate", w <= 0 or h <= 0),
            ("dropped_blur", max_blur is not None and blur > max_blur),
            ("dropped_occlusion", max_occlusion is not None and occlusion > max_occlusion),
            ("dropped_small", lo < self.min_size), ("dropped_large", hi > self.max_size))
                       if drop), "kept")
        if reason == "kept":
          self._faces.append(_Face(images_dir / rec.path, f"{rec.path}#{k}",
                                   np.array([x, y, x + w, y + h], np.float64)))
        st[reason] += 1
      st["images_with_kept_faces"] += len(self._faces) > kept_before
    self.stats, absent = st, sorted({str(f.path) for f in self._faces if not f.path.is_file()})
    if absent:
      raise FileNotFoundError(f"WIDER FACE: {len(absent)} image(s) of '{annotation_file}' missing "
                              f"under '{images_dir}', first '{absent[0]}'.")


# ---------------------------------------------------------------------------------- folders
_PREFIX = re.compile(r"^(.+)_(\d+)$")
IDENTITY_MODES = ("auto", "folders", "prefix", "none")


class ImageFolderFaceSource(_CropSource):
  """Face images that are already face crops (TinyFace; any folder), resized to ``size``.

  ``identities`` says where the identity is (TinyFace: ``Training_Set/<id>_<k>.jpg``,
  ``Testing_Set/Gallery_Match/<id>_<k>.jpg``, ``Testing_Set/Probe/<id>_<k>.jpg``):

  ``'folders'`` (``root/<identity>/*.jpg|png...``), ``'prefix'`` (flat files
  ``root/<identity>_<n>.<ext>``), ``'none'`` (every image under ``root``, recursively, identity
  -1: unlabelled real LR faces, ``Gallery_Distractor``) or ``'auto'`` (``prefix`` if every file
  name is ``<identity>_<n>``, ``folders`` if ``root`` holds sub-folders and no images, else
  ``none``).

  Identity names map to contiguous ints in sorted order (digit names numerically), kept in
  ``identity_names``. To share one mapping between sources (probe and gallery), pass the
  other's ``identity_names``: names missing from it get -1 (counted in
  ``stats['unknown_identity']``). ``fit='stretch'`` resizes the whole image to ``size x size``
  (default; TinyFace crops are near-square); ``fit='pad'`` keeps the aspect ratio, padding a
  centred square (``crop_face`` of the whole image, margin 0). Keys are paths relative to
  ``root``. An unreadable image is an error naming it when read.
  """

  def __init__(self, root, *, size: int = 32, identities: str = "auto",
               identity_names: Sequence[str] | None = None, fit: str = "stretch",
               pad: str = "zero"):
    self.size, self.margin, self.pad = _check_size_pad(size, 0.0, pad)
    if identities not in IDENTITY_MODES or fit not in ("stretch", "pad"):
      raise ValueError(f"identities={identities!r}, fit={fit!r}: use identities in "
                       f"{IDENTITY_MODES} and fit in ('stretch', 'pad').")
    root = Path(root)
    if not root.is_dir():
      raise FileNotFoundError(f"face image folder '{root}' not found.")
    self.root, self.fit = root, fit
    top = sorted(root.iterdir())
    top_images = [p for p in top if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if identities == "auto":
      prefixed = top_images and all(_PREFIX.match(p.stem) for p in top_images)
      folders = not top_images and any(p.is_dir() for p in top)
      identities = "prefix" if prefixed else "folders" if folders else "none"
    self.identities = identities
    if identities == "folders":
      files = [(q, p.name) for p in top if p.is_dir() for q in sorted(p.iterdir())
               if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS]
    elif identities == "prefix":
      bad = [p.name for p in top_images if not _PREFIX.match(p.stem)]
      if bad:
        raise ValueError(f"'{root}': file '{bad[0]}' (and {len(bad) - 1} more) is not named "
                         "<identity>_<n>.<ext>; use identities='none' or 'folders'.")
      files = [(p, _PREFIX.match(p.stem).group(1)) for p in top_images]
    else:
      files = [(p, None) for p in sorted(root.rglob("*"))
               if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
      raise FileNotFoundError(f"'{root}' holds no {'/'.join(IMAGE_EXTENSIONS)} images "
                              f"(identities={identities!r}).")
    names = [n for _, n in files if n is not None]
    if identity_names is None:  # sorted; digit names numerically (TinyFace ids are numbers)
      identity_names = sorted(set(names), key=lambda n: (int(n), n) if n.isdigit() else (0, n))
    self.identity_names = [str(n) for n in identity_names]
    index = {n: i for i, n in enumerate(self.identity_names)}
    self._faces = [_Face(p, os.path.relpath(p, root).replace(os.sep, "/"),
                         None, identity=index.get(n, -1) if n is not None else -1)
                   for p, n in files]
    self.stats = {"images": len(self._faces), "identities": len(set(names)),
                  "unknown_identity": sum(1 for n in names if n not in index)}
