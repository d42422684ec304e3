"""Read a PyTorch ``.pth`` state dict into numpy arrays without importing torch.

File format (``torch.save`` since torch 1.6, the "zip" serialization; see
``torch/serialization.py``, ``_save`` and ``_load``, and
``torch/_utils.py``, ``_rebuild_tensor_v2``): the file is an uncompressed zip
archive whose records all live under one folder ``<name>/``:

* ``<name>/data.pkl`` -- the pickled object (protocol 2).  Every tensor is
  pickled as the call ``torch._utils._rebuild_tensor_v2(storage,
  storage_offset, size, stride, requires_grad, backward_hooks[, metadata])``
  (parameters as ``torch._utils._rebuild_parameter(tensor, requires_grad,
  hooks)``); every storage is a *persistent id*, the tuple
  ``('storage', torch.<Type>Storage, key, location, numel)``.
* ``<name>/data/<key>`` -- the raw bytes of storage ``key``: ``numel``
  elements of the storage type's dtype, in the byte order given by
* ``<name>/byteorder`` (``little`` or ``big``; absent in old files = little),
  plus ``<name>/version`` (and ``.data/serialization_id`` in newer files).

A tensor is the strided view ``storage[offset + sum_i idx_i * stride_i]``
(strides counted in elements); it is rebuilt here with
``np.lib.stride_tricks.as_strided`` after a bounds check and copied to a
contiguous array.  bfloat16 storages are widened to float32 (a bf16 value is the
top 16 bits of the float32 with the same value).

Unpickling runs whatever callables the pickle names, so ``_Unpickler.find_class``
allows only the tensor-rebuild functions, ``collections.OrderedDict`` and the
storage types; anything else (e.g. ``os.system``, ``argparse.Namespace`` in a
training checkpoint) raises ``UnsafeCheckpointError`` naming the global.  The
pre-1.6 "legacy" format (a bare pickle stream, not a zip) and TorchScript
archives are rejected with advice to re-save with torch >= 1.6 or use
safetensors.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

# torch storage type name -> numpy dtype of one element ('bfloat16' handled apart).
STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}

RESAVE_HINT = (
    "re-save it with torch >= 1.6 (python -c \"import torch; "
    "torch.save(torch.load('OLD.pth', map_location='cpu'), 'NEW.pth')\") or convert it to "
    ".safetensors (safetensors.torch.save_file)"
)


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The pickle references a global that is not needed to rebuild a state dict."""


class CheckpointFormatError(ValueError):
  """The file is not a readable torch zip checkpoint holding a state dict."""


class _StorageType:
  """Stand-in for ``torch.<Name>Storage`` (only its element dtype matters)."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = STORAGE_DTYPES[name]

  def __repr__(self):
    return f"torch.{self.name}"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """numpy version of ``torch._utils._rebuild_tensor_v2``: a contiguous copy of the
  strided view of ``storage`` (a 1-D array) at ``storage_offset``."""
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  offset = int(storage_offset)
  if len(size) != len(stride):
    raise CheckpointFormatError(f"tensor with size {size} has stride {stride} of another rank")
  if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
    raise CheckpointFormatError(
        f"tensor with negative size/stride/offset: size {size}, stride {stride}, offset {offset}")
  if 0 in size:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise CheckpointFormatError(
        f"tensor (size {size}, stride {stride}, offset {offset}) reads element {last} of a "
        f"storage with {storage.size} elements: the checkpoint is truncated or corrupt")
  base = storage[offset:]
  view = np.lib.stride_tricks.as_strided(
      base, shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False)
  return np.array(view, order="C")  # a contiguous copy that owns its memory


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  """``torch._utils._rebuild_parameter(_with_state)``: a Parameter is just its data here."""
  del requires_grad, backward_hooks, state
  return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
  """bfloat16 bit patterns (uint16) -> float32 values (bf16 = top half of a float32)."""
  return (bits.astype(np.uint32) << 16).view(np.float32)


class _Unpickler(pickle.Unpickler):
  """Restricted unpickler for ``<name>/data.pkl`` of a torch zip checkpoint."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
    super().__init__(file)
    self._archive, self._prefix, self._path = archive, prefix, path
    self._order = "<" if byteorder == "little" else ">"
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"{self._path}: the pickle references {module}.{name}, which is not needed for a "
          "tensor state dict; refusing to unpickle it (a pickle can run arbitrary code). "
          f"Allowed: {sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)}. For a training "
          "checkpoint, save only the model's state_dict with torch, or convert it to "
          ".safetensors.") from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise CheckpointFormatError(
          f"{self._path}: unknown persistent id {pid!r}; expected "
          "('storage', storage_type, key, location, numel)")
    _, storage_type, key, _location, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f"{self._path}: persistent id {pid!r} has no storage type")
    key = str(key)
    if key not in self._storages:
      self._storages[key] = self._read_storage(key, storage_type, int(numel))
    return self._storages[key]

  def _read_storage(self, key: str, storage_type: _StorageType, numel: int) -> np.ndarray:
    record = f"{self._prefix}data/{key}"
    try:
      raw = self._archive.read(record)
    except KeyError:
      raise CheckpointFormatError(
          f"{self._path}: storage record {record!r} is missing from the zip") from None
    bf16 = storage_type.dtype == "bfloat16"
    dtype = np.dtype(self._order + ("u2" if bf16 else storage_type.dtype))
    if len(raw) < numel * dtype.itemsize:
      raise CheckpointFormatError(
          f"{self._path}: record {record!r} has {len(raw)} bytes, fewer than {numel} "
          f"elements of {storage_type!r} ({numel * dtype.itemsize} bytes)")
    arr = np.frombuffer(raw, dtype=dtype, count=numel)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    return _bf16_to_f32(arr) if bf16 else arr


def _find_prefix(archive: zipfile.ZipFile, path: str) -> str:
  names = archive.namelist()
  pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
  if len(pkls) != 1:
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
      raise CheckpointFormatError(
          f"{path}: this is a TorchScript archive (torch.jit.save), not a state dict; "
          "save model.state_dict() with torch.save instead")
    raise CheckpointFormatError(
        f"{path}: expected one '<name>/data.pkl' record in the zip, found {pkls or 'none'} "
        f"(records: {names[:5]}...); is this a torch.save checkpoint?")
  return pkls[0][: -len("data.pkl")]


def load_torch_pickle(path: str | os.PathLike) -> Any:
  """Unpickle a torch zip checkpoint; every tensor becomes a numpy array."""
  path = os.fspath(path)
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(2)
    kind = ("the legacy (torch < 1.6) serialization format" if head[:1] == b"\x80"
            else "not a zip archive")
    raise CheckpointFormatError(f"{path}: {kind}, which is not supported; {RESAVE_HINT}")
  with zipfile.ZipFile(path) as archive:
    prefix = _find_prefix(archive, path)
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()
      if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{path}: unknown byteorder record {byteorder!r}")
    with archive.open(f"{prefix}data.pkl") as f:
      return _Unpickler(f, archive, prefix, byteorder, path).load()


def extract_state_dict(obj: Any, path: str = "checkpoint") -> dict[str, np.ndarray]:
  """The {name: array} state dict in ``obj``: ``obj`` itself, or ``obj['state_dict']`` /
  ``obj['model']`` for a training checkpoint.  Raises naming the top-level keys or the
  first non-array entry."""
  if not isinstance(obj, Mapping):
    raise CheckpointFormatError(
        f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
  for container in ("state_dict", "model"):
    if isinstance(obj.get(container), Mapping):
      obj = obj[container]
      break
  bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
  if bad:
    raise CheckpointFormatError(
        f"{path}: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor "
        f"(top-level keys: {list(obj)[:8]}); expected model.state_dict(), or a dict holding "
        "it under 'state_dict' or 'model'")
  return {str(k): v for k, v in obj.items()}


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{torch parameter name: numpy array} from a torch >= 1.6 ``.pth`` file, no torch needed."""
  return extract_state_dict(load_torch_pickle(path), os.fspath(path))
