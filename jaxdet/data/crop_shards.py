"""Mined RoI crops on disk: a resumable shard writer, a random-access reader and a step loader.

MTGAN trains on crops of the RoIs of a trained baseline detector (Zhang et al., Fig. 2 (B)-(C),
§4.2), mined once, offline (``roi_crops.mine_rois``). This module stores them:

* :class:`CropShardWriter` appends the crops of whole images to ``.npz`` shards and records each
  committed shard in a per-process JSON index. Every file is written to ``NAME.tmp`` and renamed
  into place (``os.replace``, atomic on POSIX), the shard before the index, so the index only
  ever lists complete shards. **Resume rule:** an image is done once the index lists it
  (``completed_images()``); a mining run killed at any point is resumed by reopening the writer
  on the same directory and mining every image not in ``completed_images()``. The work lost is
  the buffered, not yet committed images (at most about ``shard_size`` crops per process); stray
  ``.tmp`` files and a shard renamed before its index was written are deleted on reopening.
* :class:`CropShardSource` reads all shards of a directory as one random-access dataset
  (``len``, ``source[i] -> dict``), reading only the requested rows (the shards are uncompressed,
  so a row is a byte range of the file).
* :class:`CropLoader` batches them on ``loader.StepLoader`` (step = data position, exact resume)
  with an optional horizontal flip applied consistently to ``I_HR``, ``I_LR`` and the regression
  target ``v`` of MTGAN Eq. 7 (mirroring the image negates ``dx`` and leaves ``dy, dw, dh``).

Layout of a directory::

  index_p00000.json            process 0's index (format, version, fields, meta, counts, shards)
  crops_p00000_000000.npz      process 0's shards: one ``FIELD.npy`` per field, one row per crop
  crops_p00001_000000.npz      ... (each mining process writes only its own files)

Fields of a crop (one row): ``hr`` uint8 [S, S, 3] (``I_HR``), ``lr`` uint8 [S/4, S/4, 3]
(``I_LR``), ``label`` int32 (MTGAN's ``u``: class + 1, 0 background), ``reg_target`` float32 [4]
(``v``), ``roi`` float32 [4] (the RoI, xyxy pixels of the source image), ``score`` float32 (the
baseline detector's score, for the paper's ensemble of §4.3), ``iou`` float32 (best IoU with the
ground truth) and ``image_id`` int64 (the source image).
"""
from __future__ import annotations

import json
import os
import re
import struct
import threading
import zipfile
from typing import Any

import numpy as np

from jaxdet.data.loader import StepLoader

FORMAT, VERSION = "jaxdet.crop_shards", 1
# Per-crop fields: dtype and row shape (None: an image, shape fixed by the first crop written).
FIELDS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "hr": ("uint8", None), "lr": ("uint8", None), "label": ("int32", ()),
    "reg_target": ("float32", (4,)), "roi": ("float32", (4,)), "score": ("float32", ()),
    "iou": ("float32", ()), "image_id": ("int64", ()),
}
_INDEX_RE = re.compile(r"^index_p(\d{5})\.json$")


def _index_name(process_index: int) -> str:
  return f"index_p{process_index:05d}.json"


def _shard_prefix(process_index: int) -> str:
  return f"crops_p{process_index:05d}_"


def _write_atomic(path: str, write) -> None:
  """``write(file)`` into ``path + '.tmp'``, fsync, then rename over ``path``."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _read_index(path: str) -> dict:
  try:
    with open(path) as f:
      index = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"crop index {path} is unreadable: {e}") from e
  if not isinstance(index, dict) or index.get("format") != FORMAT:
    raise ValueError(f"crop index {path} is not a {FORMAT} index")
  if index.get("version") != VERSION:
    raise ValueError(f"crop index {path} has version {index.get('version')}; this reader knows {VERSION}")
  return index


# ---------------------------------------------------------------------------------------- writer
class CropShardWriter:
  """Writes mined crops as ``.npz`` shards of whole images, resumably (see the module docstring).

  Usage::

    with CropShardWriter(directory, process_index=jax.process_index(), meta={...}) as writer:
      done = writer.completed_images()
      for example in my_share_of_the_images:
        if example.image_id not in done:
          writer.add_image(example.image_id, roi_crops.mine_rois(...))

  Args:
    directory: created if missing; may hold the files of other processes (never touched).
    shard_size: a shard is committed as soon as the buffered images hold ``>= shard_size`` crops
      (the crops of one image are never split, so a shard may be larger by one image).
    process_index: names this writer's files; concurrent writers need distinct ones.
    meta: JSON-serialisable description of the mining run (baseline workdir, thresholds, class
      names, ...), stored in the index and exposed as ``CropShardSource.meta``. Reopening a
      directory with a different ``meta`` is an error (the crops would mix two settings);
      ``None`` on reopening keeps the stored one.
  """

  def __init__(self, directory: str, *, shard_size: int = 2048, process_index: int = 0,
               meta: dict | None = None):
    if shard_size < 1:
      raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if process_index < 0:
      raise ValueError(f"process_index must be >= 0, got {process_index}")
    self.directory = os.fspath(directory)
    self.shard_size = int(shard_size)
    self.process_index = int(process_index)
    os.makedirs(self.directory, exist_ok=True)
    self._index_path = os.path.join(self.directory, _index_name(self.process_index))
    if meta is not None:
      meta = json.loads(json.dumps(meta))  # as it reads back (tuples -> lists); fails early if not JSON
    if os.path.exists(self._index_path):
      index = _read_index(self._index_path)
      if index.get("process_index") != self.process_index:
        raise ValueError(f"crop index {self._index_path} belongs to process "
                         f"{index.get('process_index')}, not {self.process_index}")
      if meta is not None and index.get("meta") != meta:
        raise ValueError(
            f"{self.directory} holds crops mined with meta={index.get('meta')!r}; this writer has "
            f"meta={meta!r}. Mine into a new directory, or delete this one to start again.")
      self._index = index
    else:
      self._index = {"format": FORMAT, "version": VERSION, "process_index": self.process_index,
                     "meta": meta, "fields": None, "num_crops": 0, "num_images": 0,
                     "label_counts": {}, "shards": []}
    self._done = {int(i) for shard in self._index["shards"] for i in shard["image_ids"]}
    self._buffer: list[dict[str, np.ndarray]] = []
    self._buffer_ids: list[int] = []
    self._buffered_crops = 0
    self._remove_leftovers()

  def _remove_leftovers(self) -> None:
    """Deletes this process's ``.tmp`` files and shards its index does not list (a kill between
    renaming a shard and writing the index that lists it)."""
    listed = {shard["file"] for shard in self._index["shards"]}
    prefix, index_name = _shard_prefix(self.process_index), _index_name(self.process_index)
    for name in os.listdir(self.directory):
      mine = name.startswith(prefix) or name.startswith(index_name)
      if mine and (name.endswith(".tmp") or (name.endswith(".npz") and name not in listed)):
        os.remove(os.path.join(self.directory, name))

  # -------------------------------------------------------------- queries
  def completed_images(self) -> set[int]:
    """Image ids whose crops are committed, by this process or any other index in the directory
    (so a rerun with another process count still skips them). Buffered images are not included."""
    done = set(self._done)
    for name in os.listdir(self.directory):
      if _INDEX_RE.match(name) and name != _index_name(self.process_index):
        index = _read_index(os.path.join(self.directory, name))
        done.update(int(i) for shard in index["shards"] for i in shard["image_ids"])
    return done

  @property
  def num_crops(self) -> int:
    """Crops committed by this process plus those buffered."""
    return int(self._index["num_crops"]) + self._buffered_crops

  # -------------------------------------------------------------- writing
  def add_image(self, image_id: int, crops: dict[str, Any]) -> None:
    """Buffers all crops of one image (``k >= 0`` rows of every field but ``image_id``; see
    ``FIELDS``); commits a shard when ``shard_size`` crops are buffered. An image without crops
    is recorded as done all the same."""
    image_id = int(image_id)
    if image_id in self._done or image_id in self._buffer_ids:
      raise ValueError(f"image {image_id} was already added to {self.directory} by process "
                       f"{self.process_index}; skip completed_images() when resuming")
    expected = set(FIELDS) - {"image_id"}
    if set(crops) != expected:
      raise ValueError(f"crops of image {image_id} must have exactly the fields {sorted(expected)}; "
                       f"missing {sorted(expected - set(crops))}, unknown {sorted(set(crops) - expected)}")
    k = len(np.asarray(crops["label"]).reshape(-1))
    fields = self._index["fields"]
    rows = {"image_id": np.full((k,), image_id, np.int64)}
    for name, (dtype, shape) in FIELDS.items():
      if name == "image_id":
        continue
      value = np.asarray(crops[name])
      if shape is None:  # an image field: [k, h, w, 3] uint8, (h, w) fixed by the first crop
        if value.dtype != np.uint8:
          raise ValueError(f"crops of image {image_id}: {name} must be uint8, got {value.dtype}")
        if fields is not None:
          shape = tuple(fields[name]["shape"])
        elif k:
          shape = value.shape[1:]
          if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"crops of image {image_id}: {name} must be [k, h, w, 3], got {value.shape}")
        elif value.size == 0:  # no crop yet anywhere: nothing to check, nothing stored
          rows[name] = np.zeros((0, 0, 0, 3), np.uint8)
          continue
      if value.shape != (k,) + tuple(shape):
        raise ValueError(f"crops of image {image_id}: {name} has shape {value.shape}, expected "
                         f"{(k,) + tuple(shape)} (k = {k} crops, from label)")
      rows[name] = value.astype(dtype, copy=False)
    if fields is None and k:
      self._index["fields"] = {name: {"dtype": FIELDS[name][0], "shape": list(rows[name].shape[1:])}
                               for name in FIELDS}
    self._buffer.append(rows)
    self._buffer_ids.append(image_id)
    self._buffered_crops += k
    if self._buffered_crops >= self.shard_size:
      self.flush()

  def flush(self) -> None:
    """Commits the buffered images as one shard (nothing to do with an empty buffer)."""
    if not self._buffer_ids:
      return
    fields = self._index["fields"]
    arrays = {}
    for name, (dtype, _) in FIELDS.items():
      parts = [rows[name] for rows in self._buffer if len(rows[name])]
      if parts:
        arrays[name] = np.concatenate(parts)
      else:  # only images without crops so far
        if fields:
          shape = tuple(fields[name]["shape"])
        else:
          shape = (0, 0, 3) if name in ("hr", "lr") else FIELDS[name][1]
        arrays[name] = np.zeros((0,) + shape, dtype)
    number = len(self._index["shards"])
    name = f"{_shard_prefix(self.process_index)}{number:06d}.npz"
    _write_atomic(os.path.join(self.directory, name), lambda f: np.savez(f, **arrays))
    labels, counts = np.unique(arrays["label"], return_counts=True)
    label_counts = {str(int(l)): int(c) for l, c in zip(labels, counts)}
    index = dict(self._index)
    index["shards"] = self._index["shards"] + [{
        "file": name, "num_crops": int(len(arrays["label"])), "image_ids": list(self._buffer_ids),
        "label_counts": label_counts}]
    index["num_crops"] = int(self._index["num_crops"]) + int(len(arrays["label"]))
    index["num_images"] = int(self._index["num_images"]) + len(self._buffer_ids)
    totals = dict(self._index["label_counts"])
    for l, c in label_counts.items():
      totals[l] = totals.get(l, 0) + c
    index["label_counts"] = dict(sorted(totals.items(), key=lambda kv: int(kv[0])))
    _write_atomic(self._index_path, lambda f: f.write(json.dumps(index, indent=1).encode()))
    self._index = index
    self._done.update(self._buffer_ids)
    self._buffer, self._buffer_ids, self._buffered_crops = [], [], 0

  def close(self) -> None:
    """Commits what is buffered. (A writer that is never closed loses only its buffer.)"""
    self.flush()

  def __enter__(self) -> "CropShardWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()  # buffered images are complete even when mining stopped on an exception


# ---------------------------------------------------------------------------------------- reader
def _npz_layout(path: str) -> dict[str, tuple[int, np.dtype, tuple[int, ...]]]:
  """``{field: (byte offset of the array data, dtype, shape)}`` of an uncompressed ``.npz``."""
  layout = {}
  with open(path, "rb") as f, zipfile.ZipFile(f) as z:
    for info in z.infolist():
      if not info.filename.endswith(".npy"):
        continue
      if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"crop shard {path}: {info.filename} is compressed; shards are written "
                         "uncompressed (np.savez) so that single rows can be read")
      f.seek(info.header_offset)
      local = f.read(30)
      if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"crop shard {path} is corrupt (bad local header of {info.filename})")
      name_len, extra_len = struct.unpack("<HH", local[26:30])
      f.seek(info.header_offset + 30 + name_len + extra_len)
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
      elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
      else:
        raise ValueError(f"crop shard {path}: {info.filename} has .npy version {version}")
      if fortran:
        raise ValueError(f"crop shard {path}: {info.filename} is Fortran-ordered")
      layout[info.filename[:-4]] = (f.tell(), np.dtype(dtype), tuple(shape))
  return layout


class CropShardSource:
  """All crops of a :class:`CropShardWriter` directory as one random-access dataset.

  Order: processes by index, then shards in commit order, then rows. ``source[i]`` is a dict with
  one crop's fields (``FIELDS``: arrays for ``hr``, ``lr``, ``reg_target``, ``roi``; numpy scalars
  for the rest); it reads just that row from its shard and is safe to call from several threads.

  Opening checks that every index is readable and consistent (format, fields and ``meta`` equal
  across processes, the shards it lists exist, counts add up, no image is in two shards); a
  shard's arrays are checked against its index when first read. Any mismatch is a ValueError
  naming the file. A missing directory, or one without indices or crops, is a FileNotFoundError
  saying that the directory holds no mined crops.

  Attributes: ``meta`` (the writer's), ``fields`` (``{name: (dtype, row shape)}``),
  ``num_images``, ``label_counts`` (``{label: count}``), ``directory``.
  """

  def __init__(self, directory: str):
    self.directory = os.fspath(directory)
    if not os.path.isdir(self.directory):
      raise FileNotFoundError(f"{self.directory} holds no mined crops: the directory does not exist "
                              "(mine the RoI crops into it first)")
    names = sorted(n for n in os.listdir(self.directory) if _INDEX_RE.match(n))
    if not names:
      raise FileNotFoundError(f"{self.directory} holds no mined crops: it has no index_p*.json "
                              "(mine the RoI crops into it first, or finish a mining run)")
    self._files: list[tuple[str, str]] = []  # (shard path, index path)
    counts: list[int] = []
    seen_images: dict[int, str] = {}
    self.meta, fields = None, None
    self.label_counts: dict[int, int] = {}
    self.num_images = 0
    for n, name in enumerate(names):
      path = os.path.join(self.directory, name)
      index = _read_index(path)
      if index.get("process_index") != int(_INDEX_RE.match(name).group(1)):
        raise ValueError(f"crop index {path} is inconsistent: it names process "
                         f"{index.get('process_index')}")
      if n == 0:
        self.meta = index.get("meta")
      elif index.get("meta") != self.meta:
        raise ValueError(f"crop index {path} is inconsistent with {names[0]}: meta "
                         f"{index.get('meta')!r} != {self.meta!r} (two mining settings in one directory)")
      if index.get("fields") is not None:
        if fields is None:
          fields = index["fields"]
        elif index["fields"] != fields:
          raise ValueError(f"crop index {path} is inconsistent: fields {index['fields']} differ "
                           f"from those of the other indices {fields}")
      total = 0
      for shard in index.get("shards", []):
        shard_path = os.path.join(self.directory, shard["file"])
        if not os.path.isfile(shard_path):
          raise ValueError(f"crop index {path} is inconsistent: it lists {shard['file']}, which is missing")
        for image_id in shard["image_ids"]:
          if int(image_id) in seen_images:
            raise ValueError(f"crop index {path} is inconsistent: image {image_id} is in "
                             f"{shard['file']} and in {seen_images[int(image_id)]} (mined twice)")
          seen_images[int(image_id)] = shard["file"]
        self._files.append((shard_path, path))
        counts.append(int(shard["num_crops"]))
        total += int(shard["num_crops"])
        for label, c in shard.get("label_counts", {}).items():
          self.label_counts[int(label)] = self.label_counts.get(int(label), 0) + int(c)
      if total != index.get("num_crops"):
        raise ValueError(f"crop index {path} is inconsistent: its shards hold {total} crops, "
                         f"num_crops says {index.get('num_crops')}")
      self.num_images += sum(len(s["image_ids"]) for s in index.get("shards", []))
    self._ends = np.cumsum(np.asarray(counts, np.int64)) if counts else np.zeros((0,), np.int64)
    if not len(self._ends) or self._ends[-1] == 0:
      raise FileNotFoundError(f"{self.directory} holds no mined crops: its indices list 0 crops")
    if fields is None:
      raise ValueError(f"crop indices in {self.directory} are inconsistent: they list crops but no fields")
    self.fields = {name: (np.dtype(spec["dtype"]), tuple(spec["shape"])) for name, spec in fields.items()}
    if set(self.fields) != set(FIELDS):
      raise ValueError(f"crop indices in {self.directory} are inconsistent: fields {sorted(self.fields)}, "
                       f"expected {sorted(FIELDS)}")
    self.label_counts = dict(sorted(self.label_counts.items()))
    self._layouts: dict[int, dict] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self._ends[-1])

  def _count(self, shard: int) -> int:
    return int(self._ends[shard] - (self._ends[shard - 1] if shard else 0))

  def _layout(self, shard: int) -> dict:
    layout = self._layouts.get(shard)
    if layout is not None:
      return layout
    shard_path, index_path = self._files[shard]
    try:
      layout = _npz_layout(shard_path)
    except (OSError, zipfile.BadZipFile) as e:
      raise ValueError(f"crop shard {shard_path} (listed in {index_path}) is unreadable: {e}") from e
    count = self._count(shard)
    for name, (dtype, row_shape) in self.fields.items():
      if name not in layout:
        raise ValueError(f"crop shard {shard_path} does not match its index {index_path}: no field {name}")
      _, got_dtype, got_shape = layout[name]
      if got_dtype != dtype or got_shape != (count,) + row_shape:
        raise ValueError(f"crop shard {shard_path} does not match its index {index_path}: {name} is "
                         f"{got_dtype} {got_shape}, the index says {dtype} {(count,) + row_shape}")
    with self._lock:
      self._layouts[shard] = layout
    return layout

  def __getitem__(self, i) -> dict[str, Any]:
    n = len(self)
    i = int(i)
    if not -n <= i < n:
      raise IndexError(f"crop index {i} out of range for {n} crops in {self.directory}")
    i %= n
    shard = int(np.searchsorted(self._ends, i, side="right"))
    row = i - int(self._ends[shard - 1] if shard else 0)
    layout = self._layout(shard)
    out = {}
    with open(self._files[shard][0], "rb") as f:
      for name, (dtype, row_shape) in self.fields.items():
        offset = layout[name][0]
        size = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        f.seek(offset + row * size)
        data = f.read(size)
        if len(data) != size:
          raise ValueError(f"crop shard {self._files[shard][0]} is truncated (field {name}, row {row})")
        value = np.frombuffer(data, dtype).reshape(row_shape).copy()
        out[name] = value[()] if not row_shape else value
    return out

  def labels(self) -> np.ndarray:
    """``label`` of every crop, int32 ``[len(self)]`` (reads one field of each shard)."""
    out = []
    for shard, (path, _) in enumerate(self._files):
      if not self._count(shard):  # a shard of images without crops (its fields may be empty)
        continue
      offset, dtype, shape = self._layout(shard)["label"]
      with open(path, "rb") as f:
        f.seek(offset)
        out.append(np.frombuffer(f.read(dtype.itemsize * shape[0]), dtype))
    return np.concatenate(out).astype(np.int32)


# ---------------------------------------------------------------------------------------- loader
_FLIP_TAG = 7011  # ``example_rng`` tag of the horizontal flip


def flip_crop(example: dict[str, Any]) -> dict[str, Any]:
  """Mirrors a crop left-right: ``hr`` and ``lr`` reversed along the width, ``dx`` of
  ``reg_target`` negated (the RoI and its ground truth mirror together, so ``gx - rx`` changes
  sign while widths, heights and ``dy`` do not). ``roi`` / ``image_id`` / ``score`` / ``iou``
  describe the source crop and stay as they are."""
  out = dict(example)
  out["hr"] = np.ascontiguousarray(np.asarray(example["hr"])[:, ::-1])
  out["lr"] = np.ascontiguousarray(np.asarray(example["lr"])[:, ::-1])
  reg = np.array(example["reg_target"], np.float32)
  reg[0] = -reg[0]
  out["reg_target"] = reg
  return out


class CropLoader(StepLoader):
  """Batches of mined crops; order, sharding, resume and eval padding are ``StepLoader``'s.

  Args:
    source: a :class:`CropShardSource` (or any ``len`` + ``source[i] -> dict`` with its fields).
    batch_size: crops per batch *of this process*.
    train: endless shuffled stream (with the flip), or one ordered pass padded to whole batches.
    hflip: in training, mirror a crop with probability 1/2 (``flip_crop``), drawn from
      ``example_rng(7011, position)``, so the batch of a step never depends on how it was reached.
    seed, num_workers, process_index, process_count, start_step, prefetch: see ``StepLoader``.

  Batch: ``hr`` uint8 [b, S, S, 3]; ``lr`` uint8 [b, S/4, S/4, 3]; ``label`` int32 [b];
  ``reg_target`` float32 [b, 4]; ``valid`` bool [b]; plus the crop's provenance for evaluation:
  ``roi`` float32 [b, 4], ``score`` float32 [b], ``image_id`` int64 [b]. Eval padding rows are
  zeros with ``valid`` False, ``label`` -1 and ``image_id`` -1.
  """

  def __init__(self, source, *, batch_size: int, train: bool, seed: int = 0, hflip: bool = True,
               num_workers: int = 2, process_index: int = 0, process_count: int = 1,
               start_step: int = 0, prefetch: int = 2):
    super().__init__(source, batch_size=batch_size, train=train, seed=seed, num_workers=num_workers,
                     process_index=process_index, process_count=process_count,
                     start_step=start_step, prefetch=prefetch)
    self.hflip = bool(hflip)
    first = source[0]
    self._hr_shape = tuple(np.shape(first["hr"]))
    self._lr_shape = tuple(np.shape(first["lr"]))

  def prepare(self, position: int, index: int) -> dict[str, Any]:
    example = self.source[index]
    if self.train and self.hflip and self.example_rng(_FLIP_TAG, position).random() < 0.5:
      example = flip_crop(example)
    return example

  def collate(self, examples: list[dict[str, Any] | None]) -> dict[str, np.ndarray]:
    b = len(examples)
    batch = {"hr": np.zeros((b,) + self._hr_shape, np.uint8),
             "lr": np.zeros((b,) + self._lr_shape, np.uint8),
             "label": np.full((b,), -1, np.int32), "reg_target": np.zeros((b, 4), np.float32),
             "valid": np.zeros((b,), bool), "roi": np.zeros((b, 4), np.float32),
             "score": np.zeros((b,), np.float32), "image_id": np.full((b,), -1, np.int64)}
    for i, ex in enumerate(examples):
      if ex is None:
        continue
      for name in ("hr", "lr", "label", "reg_target", "roi", "score", "image_id"):
        batch[name][i] = ex[name]
      batch["valid"][i] = True
    return batch
