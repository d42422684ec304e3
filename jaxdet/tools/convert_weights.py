"""Convert torchvision ImageNet weights to jaxdet's backbone ``.npz`` (no torch needed).

Usage::

    python -m jaxdet.tools.convert_weights resnet50-0676ba61.pth --arch resnet50 \\
        --out weights/resnet50_imagenet.npz
    python -m jaxdet.tools.convert_weights vgg16-397923af.pth --arch vgg16 \\
        --out weights/vgg16_imagenet.npz

Input: a torchvision ``state_dict`` saved by ``torch.save`` (read by
``jaxdet.tools.torch_checkpoint`` without torch; a dict holding it under
'state_dict' or 'model' also works, and a DataParallel 'module.' prefix is
stripped) or a ``.safetensors`` file (read with ``safetensors.numpy``; install
``safetensors``).  Output: a flat .npz in the key layout of
``jaxdet.models.weights`` (every key prefixed with ``--prefix``, default
'backbone'), float32, loadable with ``load_backbone_weights``.

ResNet-18/34/50/101/152 (He et al. 2016; torchvision names): ``conv1`` ->
``stem/conv``, ``bn1`` -> ``stem/norm``, ``layer{s}.{b}`` -> ``stage{s}/block{b}``,
``conv{i}``/``bn{i}`` -> ``conv{i}``/``norm{i}`` (basic blocks of 18/34 have
conv1, conv2; bottlenecks conv1..3), ``downsample.0/1`` -> ``downsample_conv``/
``downsample_norm``.  Conv weights OIHW -> HWIO; BN weight/bias/running_mean/
running_var -> scale/bias/mean/var.  Dropped: ``fc.*``, ``*.num_batches_tracked``.

VGG-16 for SSD (``jaxdet.models.vgg``): ``features.{0,2,5,7,10,12,14,17,19,21,
24,26,28}`` -> ``conv1_1`` .. ``conv5_3`` (kernel HWIO, bias).  SSD (Liu et al.
2016, Sec. 3) "convert[s] fc6 and fc7 to convolutional layers, subsample[s]
parameters from fc6 and fc7"; we subsample the same way as SSD's reduced VGG:
``classifier.0.weight`` [4096, 25088] is fc6 over a 512x7x7 pool5 map, i.e. the
conv weight [4096, 512, 7, 7] (torch flattens NCHW); keep every 4th output
channel (4096 -> 1024) and every 3rd spatial tap (rows/cols 0, 3, 6: 7x7 ->
3x3), giving ``conv6`` [3, 3, 512, 1024] whose 3x3 taps are used with dilation 6
(SSD's a-trous conv6).  ``classifier.3.weight`` [4096, 4096] keeps every 4th
output and input channel -> ``conv7`` [1, 1, 1024, 1024]; biases keep every 4th
entry.  ``classifier.6.*`` (the ImageNet classifier) is dropped.

torchvision's models expect RGB in [0, 1] normalised by mean (0.485, 0.456,
0.406), std (0.229, 0.224, 0.225).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping

import numpy as np

from jaxdet.models.resnet import RESNET_SPECS
from jaxdet.models.vgg import VGG16_BLOCKS
from jaxdet.tools.torch_checkpoint import load_torch_state_dict

RESNET_ARCHS = {f"resnet{d}": d for d in RESNET_SPECS}
ARCHS = tuple(RESNET_ARCHS) + ("vgg16",)
BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
FC_SUBSAMPLE = 4     # fc6/fc7 channels: 4096 -> 1024
FC6_TAP_STRIDE = 3   # fc6 spatial taps: 7x7 -> 3x3 (rows/cols 0, 3, 6)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One source array: destination key (without prefix), expected torch shape, transform."""

  dst: str
  shape: tuple[int, ...]
  kind: str  # 'conv' (OIHW -> HWIO), 'copy', 'fc6', 'fc7', 'fc_bias'


def _hwio(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def fc6_to_conv6(w: np.ndarray) -> np.ndarray:
  """fc6 [4096, 512*7*7] -> conv6 kernel [3, 3, 512, 1024] (HWIO), see module docstring."""
  s, t = FC_SUBSAMPLE, FC6_TAP_STRIDE
  return _hwio(w.reshape(w.shape[0], 512, 7, 7)[::s, :, ::t, ::t])


def fc7_to_conv7(w: np.ndarray) -> np.ndarray:
  """fc7 [4096, 4096] -> conv7 kernel [1, 1, 1024, 1024] (HWIO)."""
  s = FC_SUBSAMPLE
  sub = w[::s, ::s]
  return _hwio(sub.reshape(sub.shape + (1, 1)))


_TRANSFORMS = {
    "conv": _hwio,
    "copy": lambda a: a,
    "fc6": fc6_to_conv6,
    "fc7": fc7_to_conv7,
    "fc_bias": lambda b: b[::FC_SUBSAMPLE],
}


def _add_conv_bn(spec, src_conv, src_bn, dst_conv, dst_norm, out_c, in_c, k):
  spec[f"{src_conv}.weight"] = Entry(f"{dst_conv}/kernel", (out_c, in_c, k, k), "conv")
  for torch_name, name in BN_NAMES.items():
    spec[f"{src_bn}.{torch_name}"] = Entry(f"{dst_norm}/{name}", (out_c,), "copy")


def resnet_spec(depth: int) -> dict[str, Entry]:
  """{torchvision key: Entry} for ResNet-``depth`` (fc and num_batches_tracked excluded)."""
  kind, counts = RESNET_SPECS[depth]
  expansion = 1 if kind == "basic" else 4
  spec: dict[str, Entry] = {}
  _add_conv_bn(spec, "conv1", "bn1", "stem/conv", "stem/norm", 64, 3, 7)
  in_c = 64
  for s, n_blocks in enumerate(counts, start=1):
    planes = 64 * 2 ** (s - 1)
    for b in range(n_blocks):
      src, dst = f"layer{s}.{b}", f"stage{s}/block{b}"
      if kind == "basic":
        convs = [(planes, in_c, 3), (planes, planes, 3)]
      else:
        convs = [(planes, in_c, 1), (planes, planes, 3), (planes * expansion, planes, 1)]
      for i, (o, c, k) in enumerate(convs, start=1):
        _add_conv_bn(spec, f"{src}.conv{i}", f"{src}.bn{i}", f"{dst}/conv{i}", f"{dst}/norm{i}",
                     o, c, k)
      out_c = planes * expansion
      stride = 2 if (s > 1 and b == 0) else 1
      if stride != 1 or in_c != out_c:
        _add_conv_bn(spec, f"{src}.downsample.0", f"{src}.downsample.1",
                     f"{dst}/downsample_conv", f"{dst}/downsample_norm", out_c, in_c, 1)
      in_c = out_c
  return spec


def vgg16_spec() -> dict[str, Entry]:
  """{torchvision key: Entry} for VGG-16 -> SSD's conv1_1..conv5_3, conv6, conv7."""
  spec: dict[str, Entry] = {}
  idx, in_c = 0, 3
  for block, n_convs, channels in VGG16_BLOCKS:
    for i in range(1, n_convs + 1):  # features: conv, ReLU pairs, then a max-pool
      name = f"conv{block}_{i}"
      spec[f"features.{idx}.weight"] = Entry(f"{name}/kernel", (channels, in_c, 3, 3), "conv")
      spec[f"features.{idx}.bias"] = Entry(f"{name}/bias", (channels,), "copy")
      idx, in_c = idx + 2, channels
    idx += 1
  spec["classifier.0.weight"] = Entry("conv6/kernel", (4096, 512 * 7 * 7), "fc6")
  spec["classifier.0.bias"] = Entry("conv6/bias", (4096,), "fc_bias")
  spec["classifier.3.weight"] = Entry("conv7/kernel", (4096, 4096), "fc7")
  spec["classifier.3.bias"] = Entry("conv7/bias", (4096,), "fc_bias")
  return spec


def arch_spec(arch: str) -> dict[str, Entry]:
  if arch in RESNET_ARCHS:
    return resnet_spec(RESNET_ARCHS[arch])
  if arch == "vgg16":
    return vgg16_spec()
  raise ValueError(f"unknown --arch {arch!r}; choose one of {list(ARCHS)}")


def is_dropped(key: str, arch: str) -> bool:
  """Source keys with no jaxdet counterpart: BN counters and the ImageNet classifier."""
  if key.endswith("num_batches_tracked"):
    return True
  if arch in RESNET_ARCHS:
    return key.startswith("fc.")
  return key.startswith("classifier.6.")


def _head(items, n: int = 6) -> str:
  items = list(items)
  return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _problems(state_dict: Mapping[str, np.ndarray], arch: str) -> list[str]:
  spec = arch_spec(arch)
  kept = {k for k in state_dict if not is_dropped(k, arch)}
  problems = []
  missing = sorted(set(spec) - kept)
  if missing:
    problems.append(f"missing keys ({len(missing)}): {_head(missing)}")
  unexpected = sorted(kept - set(spec))
  if unexpected:
    problems.append(f"unexpected keys ({len(unexpected)}): {_head(unexpected)}")
  mismatched = [f"{k}: file {tuple(np.shape(state_dict[k]))} vs {arch} {spec[k].shape}"
                for k in sorted(kept & set(spec))
                if tuple(np.shape(state_dict[k])) != spec[k].shape]
  if mismatched:
    problems.append(f"shape mismatch ({len(mismatched)}): {_head(mismatched, 4)}")
  return problems


def strip_data_parallel(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drop the 'module.' prefix that nn.DataParallel adds, when every key has it."""
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def convert_state_dict(state_dict: Mapping[str, np.ndarray], arch: str, prefix: str = "backbone",
                       source: str = "state dict") -> tuple[dict[str, np.ndarray], list[str]]:
  """Map a torchvision state dict to {jaxdet key: float32 array} and the dropped keys.

  Raises ValueError naming ``source``, ``arch``, missing/unexpected keys and shape
  mismatches (and any other arch the keys do match).
  """
  spec = arch_spec(arch)
  state_dict = strip_data_parallel(state_dict)
  problems = _problems(state_dict, arch)
  if problems:
    fits = [a for a in ARCHS if a != arch and not _problems(state_dict, a)]
    hint = (f" The file matches --arch {fits[0]}." if fits else
            f" Expected a torchvision {arch} state_dict (model.state_dict()).")
    raise ValueError(f"{source} is not a torchvision {arch} state dict: "
                     + "; ".join(problems) + "." + hint)
  pre = f"{prefix}/" if prefix else ""
  out = {}
  for key, entry in spec.items():
    arr = np.asarray(state_dict[key])
    if arr.dtype.kind != "f":
      raise ValueError(f"{source}: {key} has dtype {arr.dtype}, expected floating point")
    out[pre + entry.dst] = np.ascontiguousarray(_TRANSFORMS[entry.kind](arr), np.float32)
  dropped = sorted(k for k in state_dict if is_dropped(k, arch))
  return out, dropped


def load_safetensors(path: str) -> dict[str, np.ndarray]:
  """{name: array} from a .safetensors file via ``safetensors.numpy.load_file``."""
  try:
    from safetensors.numpy import load_file
  except ImportError:
    raise ImportError(
        f"reading {path} needs the 'safetensors' package: pip install safetensors "
        "(or pip install 'jaxdet[convert]'), or pass the torchvision .pth file instead"
    ) from None
  try:
    return dict(load_file(path))
  except KeyError as e:  # e.g. 'BF16': no numpy dtype in safetensors.numpy
    raise ValueError(
        f"{path}: safetensors' numpy reader cannot decode dtype {e}; save the tensors as "
        "float32 (or pass a torch .pth file, whose bfloat16 storages are widened)") from None


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Read ``path`` (.safetensors, or a torch.save file: .pth/.pt/.bin/...)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  if path.endswith(".safetensors"):
    return load_safetensors(path)
  return load_torch_state_dict(path)


def summarize_dropped(dropped: list[str]) -> str:
  counters = [k for k in dropped if k.endswith("num_batches_tracked")]
  others = [k for k in dropped if not k.endswith("num_batches_tracked")]
  parts = others + ([f"{len(counters)} x *.num_batches_tracked"] if counters else [])
  return ", ".join(parts) if parts else "none"


def convert_file(src: str, arch: str, out: str, prefix: str = "backbone") -> dict:
  """Convert ``src`` and write ``out`` (.npz); returns a summary dict
  {'arrays', 'params', 'dropped', 'out'}."""
  arrays, dropped = convert_state_dict(load_state_dict(src), arch, prefix, source=src)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "wb") as f:  # a file object: np.savez must not append '.npz'
    np.savez(f, **arrays)
  os.replace(tmp, out)
  return {"arrays": len(arrays), "params": int(sum(a.size for a in arrays.values())),
          "dropped": dropped, "out": out}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxdet.tools.convert_weights",
      description="Convert torchvision ImageNet weights (.pth or .safetensors) to a jaxdet "
                  "backbone .npz (see jaxdet/models/weights.py).")
  parser.add_argument("src", help="torchvision state dict: .pth (torch.save) or .safetensors")
  parser.add_argument("--arch", required=True, choices=ARCHS)
  parser.add_argument("--out", help="output .npz (default: weights/<arch>_imagenet.npz)")
  parser.add_argument("--prefix", default="backbone", help="key prefix (default: backbone)")
  args = parser.parse_args(argv)
  out = args.out or os.path.join("weights", f"{args.arch}_imagenet.npz")
  try:
    summary = convert_file(args.src, args.arch, out, args.prefix)
  except (ValueError, OSError, ImportError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
    print(f"convert_weights: error: {e}", file=sys.stderr)
    return 1
  print(f"converted {args.arch}: {args.src} -> {out}")
  print(f"  arrays written: {summary['arrays']}, parameters: {summary['params']:,}")
  print(f"  dropped source keys ({len(summary['dropped'])}): "
        f"{summarize_dropped(summary['dropped'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
