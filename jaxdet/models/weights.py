"""Pretrained backbone weights as flat .npz files (ImageNet initialisation, as in
RetinaNet, Lin et al. 2017, Sec. 4.1: "ResNet ... pre-trained on ImageNet1k").

Key layout: each array is stored under the '/'-joined path of its variable in the
flax tree, *without* the collection name, e.g. for ``RetinaNet`` with a ResNet
backbone::

    backbone/stem/conv/kernel                    [7, 7, 3, 64]   (HWIO)
    backbone/stem/norm/{scale,bias,mean,var}     [64]
    backbone/stage1/block0/conv1/kernel          [1, 1, 64, 64]
    backbone/stage1/block0/norm1/{scale,bias,mean,var}
    backbone/stage1/block0/downsample_conv/kernel, .../downsample_norm/...
    ...
    backbone/stage4/block2/conv3/kernel          [1, 1, 512, 2048]

Because variable names never collide across collections, one file serves every
norm kind: with 'frozen_bn' all four norm arrays live in 'batch_stats'; with
'batch_norm' scale/bias are in 'params' and mean/var in 'batch_stats'.

Converting torchvision: ``python -m jaxdet.tools.convert_weights SRC.pth --arch
resnet50 --out weights/resnet50_imagenet.npz`` (``jaxdet/tools/convert_weights.py``;
reads .pth without torch, or .safetensors; also VGG-16 for SSD).  Mapping: conv1 ->
stem/conv, bn1 -> stem/norm, layer{s}.{b} -> stage{s}/block{b}, conv{i}/bn{i} ->
conv{i}/norm{i}, downsample.0/1 -> downsample_conv/downsample_norm; conv weights
OIHW -> HWIO (``w.transpose(2, 3, 1, 0)``); bn weight/bias/running_mean/
running_var -> scale/bias/mean/var; drop fc.*; prefix every key with 'backbone/'.
torchvision expects RGB in [0, 1] normalised by mean (0.485, 0.456, 0.406),
std (0.229, 0.224, 0.225).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

COLLECTIONS = ("params", "batch_stats")


def _key_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _is_variables(tree) -> bool:
  return isinstance(tree, Mapping) and "params" in tree and set(tree) <= set(COLLECTIONS)


def flatten_weights(tree) -> dict[str, jax.Array]:
  """{'a/b/kernel': leaf}; for a variables dict {'params':..., 'batch_stats':...}
  the collection name is dropped (a name present in two collections is an error)."""
  flat: dict[str, jax.Array] = {}
  parts = [tree[c] for c in COLLECTIONS if c in tree] if _is_variables(tree) else [tree]
  for part in parts:
    for path, leaf in jax.tree_util.tree_leaves_with_path(part):
      key = _key_str(path)
      if key in flat:
        raise ValueError(f"variable {key!r} appears in two collections; cannot flatten")
      flat[key] = leaf
  return flat


def save_params_npz(params, path: str) -> None:
  """Write every leaf of ``params`` (a params tree or a variables dict) to ``path``
  (.npz, keys as in the module docstring); bfloat16 leaves are stored as float32."""
  arrays = {}
  for key, leaf in flatten_weights(params).items():
    a = np.asarray(leaf)
    if a.dtype.kind not in "fiub":  # e.g. bfloat16 (ml_dtypes) -> float32
      a = a.astype(np.float32)
    arrays[key] = a
  np.savez(path, **arrays)


def load_backbone_weights(params, path: str, prefix: str = "backbone"):
  """Return ``params`` with every leaf under ``prefix`` replaced by the .npz entry of
  the same key (cast to the leaf's dtype); leaves outside ``prefix`` are kept.

  ``params`` is a params tree or a variables dict {'params', 'batch_stats'}
  (needed for norm statistics; with 'frozen_bn' the whole norm is in
  'batch_stats').  Keys of the file outside ``prefix`` are ignored.  Raises
  ValueError naming missing keys (in the tree, not in the file), unexpected keys
  (in the file under ``prefix``, not in the tree) and shape mismatches.
  """
  flat = flatten_weights(params)
  pre = f"{prefix}/" if prefix else ""
  targets = {k: v for k, v in flat.items() if k.startswith(pre)}
  if not targets:
    raise ValueError(f"the params tree has no variables under prefix {prefix!r}")
  with np.load(path, allow_pickle=False) as f:
    file_keys = list(f.keys())
    loaded = {k: f[k] for k in file_keys if k.startswith(pre)}
  if not loaded:
    raise ValueError(
        f"{path}: no keys under prefix {prefix!r} (file has e.g. {sorted(file_keys)[:3]}); "
        f"keys must be '/'-joined flax paths like {sorted(targets)[0]!r}"
    )

  problems = []
  missing = sorted(set(targets) - set(loaded))
  if missing:
    problems.append(f"missing from the file ({len(missing)}): {_head(missing)}")
  unexpected = sorted(set(loaded) - set(targets))
  if unexpected:
    hint = ""
    if not _is_variables(params):
      hint = " (norm statistics? pass the variables dict {'params': ..., 'batch_stats': ...})"
    problems.append(f"not in the params tree ({len(unexpected)}): {_head(unexpected)}{hint}")
  mismatched = [
      f"{k}: file {tuple(loaded[k].shape)} vs model {tuple(targets[k].shape)}"
      for k in sorted(set(targets) & set(loaded))
      if tuple(loaded[k].shape) != tuple(targets[k].shape)
  ]
  if mismatched:
    problems.append(f"shape mismatch ({len(mismatched)}): {_head(mismatched)}")
  if problems:
    raise ValueError(f"cannot load backbone weights from {path}: " + "; ".join(problems))

  def replace(p, leaf):
    key = _key_str(p)
    return jnp.asarray(loaded[key], dtype=leaf.dtype) if key in loaded else leaf

  if _is_variables(params):
    return {c: jax.tree_util.tree_map_with_path(replace, t) for c, t in params.items()}
  return jax.tree_util.tree_map_with_path(replace, params)


def _head(items, n: int = 8) -> str:
  shown = ", ".join(items[:n])
  return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
