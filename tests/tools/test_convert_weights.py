"""Tests for jaxdet.tools.convert_weights / torch_checkpoint and jaxdet.models.vgg.

The .pth files are written here without torch in torch's zip format (torch/serialization.py
``_save``): ``archive/data.pkl`` pickled with protocol 2 by the real ``pickle.Pickler``, whose
globals resolve to stand-in modules named ``torch`` / ``torch._utils`` (installed in sys.modules
only while pickling), and ``archive/data/<key>`` raw storages.  References are independent:
hand-written torchvision key names/shapes, the jaxdet model trees (jax.eval_shape), explicit index
arithmetic and plain-numpy forwards over the SOURCE (OIHW, NCHW) arrays.  When torch and
torchvision import, the features are also compared with torchvision's modules.
"""
import collections
import io
import json
import pickle
import pickletools
import re
import struct
import sys
import types
import zipfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models.resnet import ResNet
from jaxdet.models.retinanet import RetinaNet
from jaxdet.models.vgg import L2Norm, VGG16
from jaxdet.models.weights import flatten_weights, load_backbone_weights
from jaxdet.tools import convert_weights as cw
from jaxdet.tools import torch_checkpoint as tc

KEY = jax.random.key(0, impl="rbg")


# ---------------------------------------------------------------- torch-format writer (no torch)
def _rebuild_tensor_v2(*args):  # pickled by reference only
  raise AssertionError("stand-in, never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
STORAGE_TYPES = {n: type(n, (), {"__module__": "torch"})
                 for n in ("FloatStorage", "LongStorage", "HalfStorage", "BFloat16Storage")}
STORAGE_OF = {"float32": "FloatStorage", "int64": "LongStorage", "float16": "HalfStorage"}


FakeStorage = collections.namedtuple("FakeStorage", "key type_name flat")  # flat: 1-D array


class FakeTensor:
  """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, False, {})."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride))

  def __reduce_ex__(self, protocol):
    return _rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


def fake_torch_modules():
  """Modules 'torch' / 'torch._utils' holding the stand-ins, only inside the with block."""
  torch_mod, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
  utils._rebuild_tensor_v2, torch_mod._utils = _rebuild_tensor_v2, utils
  torch_mod.__dict__.update(STORAGE_TYPES)
  return mock.patch.dict(sys.modules, {"torch": torch_mod, "torch._utils": utils})


class TorchPickler(pickle.Pickler):
  def __init__(self, f):
    super().__init__(f, protocol=2)
    self.storages = {}

  def persistent_id(self, obj):
    if isinstance(obj, FakeStorage):
      self.storages[obj.key] = obj
      return ("storage", STORAGE_TYPES[obj.type_name], obj.key, "cpu", obj.flat.size)
    return None


def torch_save(obj, path, byteorder="little"):
  """Write ``obj`` (FakeTensors inside dicts) like torch.save; returns the data.pkl bytes."""
  buf = io.BytesIO()
  with fake_torch_modules():
    pickler = TorchPickler(buf)
    pickler.dump(obj)
  order = "<" if byteorder == "little" else ">"
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/byteorder", byteorder)
    for key, s in pickler.storages.items():
      z.writestr(f"archive/data/{key}", s.flat.astype(s.flat.dtype.newbyteorder(order)).tobytes())
    z.writestr("archive/version", "3\n")
  return buf.getvalue()


def fake_state_dict(arrays):
  """OrderedDict of FakeTensors, one contiguous storage each, with torch's _metadata attribute."""
  out = collections.OrderedDict()
  for i, (k, a) in enumerate(arrays.items()):
    a = np.ascontiguousarray(a)
    storage = FakeStorage(str(i), STORAGE_OF[a.dtype.name], a.reshape(-1))
    out[k] = FakeTensor(storage, 0, a.shape, [s // a.itemsize for s in a.strides])
  out._metadata = collections.OrderedDict([("", {"version": 1})])
  return out


def write_safetensors(path, arrays):
  """The safetensors layout by hand: u64 LE header size, JSON header, raw LE data."""
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for k, a in arrays.items():
    data = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
    header[k] = {"dtype": {"float32": "F32", "int64": "I64"}[a.dtype.name], "shape": list(a.shape),
                 "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  h = json.dumps(header).encode()
  h += b" " * (-len(h) % 8)
  path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(chunks))


# ---------------------------------------------------------------- torchvision ResNet-18 by hand
def resnet18_shapes():
  shapes = {"conv1.weight": (64, 3, 7, 7)}

  def bn(name, c):
    shapes.update({f"{name}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")})
    shapes[f"{name}.num_batches_tracked"] = ()

  bn("bn1", 64)
  for s, planes in enumerate((64, 128, 256, 512), start=1):
    for b in range(2):
      p = f"layer{s}.{b}"
      in_c = planes // 2 if (s > 1 and b == 0) else planes
      for i, c in ((1, in_c), (2, planes)):
        shapes[f"{p}.conv{i}.weight"] = (planes, c, 3, 3)
        bn(f"{p}.bn{i}", planes)
      if s > 1 and b == 0:
        shapes[f"{p}.downsample.0.weight"] = (planes, in_c, 1, 1)
        bn(f"{p}.downsample.1", planes)
  shapes.update({"fc.weight": (1000, 512), "fc.bias": (1000,)})
  return shapes


def random_state_dict(shapes, rng):
  out = {}
  for k, s in shapes.items():
    if k.endswith("num_batches_tracked"):
      out[k] = np.array(123, np.int64)
    elif len(s) == 4:  # He-normal conv so activations stay O(1)
      out[k] = rng.standard_normal(s, np.float32) * np.float32(np.sqrt(2 / np.prod(s[1:])))
    elif k.endswith(("running_var", "weight")):
      out[k] = rng.uniform(0.5, 1.5, s).astype(np.float32)
    else:
      out[k] = (rng.standard_normal(s, np.float32) * 0.1).astype(np.float32)
  return out


def jaxdet_key(k, ndim):
  """torchvision ResNet name -> jaxdet key, written independently of the converter."""
  k = re.sub(r"^conv1\.", "stem.conv.", re.sub(r"^bn1\.", "stem.norm.", k))
  k = re.sub(r"layer(\d)\.(\d)\.", r"stage\1.block\2.", k)
  k = re.sub(r"\.bn(\d)\.", r".norm\1.", k)
  k = k.replace("downsample.0.", "downsample_conv.").replace("downsample.1.", "downsample_norm.")
  last = {"weight": "kernel" if ndim == 4 else "scale", "bias": "bias",
          "running_mean": "mean", "running_var": "var"}
  head, name = k.rsplit(".", 1)
  return "backbone/" + head.replace(".", "/") + "/" + last[name]


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
  d = tmp_path_factory.mktemp("r18")
  sd = random_state_dict(resnet18_shapes(), np.random.default_rng(0))
  pkl = torch_save(fake_state_dict(sd), d / "r18.pth")
  summary = cw.convert_file(str(d / "r18.pth"), "resnet18", str(d / "out" / "r18.npz"))
  with np.load(d / "out" / "r18.npz") as f:
    npz = dict(f)
  return types.SimpleNamespace(sd=sd, pkl=pkl, dir=d, summary=summary, npz=npz)


def resnet18_variables(image=32):
  """ResNet-18 variables shapes nested as a detector's: {'params': {'backbone': ...}, ...}."""
  v = jax.eval_shape(ResNet(depth=18).init, KEY, jnp.zeros((1, image, image, 3)))
  return {c: {"backbone": t} for c, t in v.items()}


def backbone_of(v):
  return {c: t["backbone"] for c, t in v.items()}


# ---------------------------------------------------------------- ResNet conversion
def test_resnet18_pth_matches_jaxdet_tree_and_values(resnet18):
  ops = {op.name for op, _, _ in pickletools.genops(resnet18.pkl)}  # the file is torch's format
  assert resnet18.pkl[:2] == b"\x80\x02" and {"BINPERSID", "REDUCE", "GLOBAL"} <= ops
  assert b"ctorch._utils\n_rebuild_tensor_v2\n" in resnet18.pkl
  assert b"ctorch\nFloatStorage\n" in resnet18.pkl and b"ctorch\nLongStorage\n" in resnet18.pkl
  want = flatten_weights(resnet18_variables())
  assert set(resnet18.npz) == set(want)
  for k, v in want.items():
    assert resnet18.npz[k].shape == v.shape and resnet18.npz[k].dtype == np.float32, k
  kept = {k: a for k, a in resnet18.sd.items() if a.ndim and not k.startswith("fc.")}
  for k, a in kept.items():
    ref = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a  # OIHW -> HWIO
    np.testing.assert_array_equal(resnet18.npz[jaxdet_key(k, a.ndim)], ref, err_msg=k)
  assert len(kept) == len(want) == resnet18.summary["arrays"] == 100
  assert resnet18.summary["params"] == sum(int(np.prod(v.shape)) for v in want.values())
  assert resnet18.summary["dropped"] == sorted(
      ["fc.weight", "fc.bias"] + [k for k in resnet18.sd if k.endswith("num_batches_tracked")])


def test_cli_summary_and_retinanet_load(resnet18, capsys):
  out = resnet18.dir / "cli.npz"
  assert cw.main([str(resnet18.dir / "r18.pth"), "--arch", "resnet18", "--out", str(out)]) == 0
  text = capsys.readouterr().out
  assert "arrays written: 100" in text and "fc.bias, fc.weight, 20 x *.num_batches_tracked" in text
  v = jax.eval_shape(RetinaNet(num_classes=3, num_anchors=9, depth=18).init, KEY,
                     jnp.zeros((1, 64, 64, 3)))
  loaded = load_backbone_weights(v, str(out))
  np.testing.assert_array_equal(loaded["params"]["backbone"]["stage3"]["block0"]["conv1"]["kernel"],
                                resnet18.sd["layer3.0.conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded["batch_stats"]["backbone"]["stem"]["norm"]["var"],
                                resnet18.sd["bn1.running_var"])


def np_conv(x, w, b=None, stride=1, pad=0, dil=1):
  """Plain numpy conv, torch layout: x [C, H, W], w [O, C, kh, kw]."""
  c, h, wd = x.shape
  o, _, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
  ho, wo = [(n + 2 * pad - dil * (k - 1) - 1) // stride + 1 for n, k in ((h, kh), (wd, kw))]
  out = np.zeros((o, ho * wo), np.float32)
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i * dil: i * dil + stride * (ho - 1) + 1: stride,
                 j * dil: j * dil + stride * (wo - 1) + 1: stride]
      out += w[:, :, i, j] @ patch.reshape(c, -1)
  out = out.reshape(o, ho, wo)
  return out if b is None else out + b[:, None, None]


def np_max_pool(x, k, s, pad=0, ceil=False):
  c, h, w = x.shape
  rnd = (lambda a: -(-a // s)) if ceil else (lambda a: a // s)
  ho, wo = rnd(h + 2 * pad - k) + 1, rnd(w + 2 * pad - k) + 1
  xp = np.full((c, s * (ho - 1) + k, s * (wo - 1) + k), -np.inf, np.float32)
  xp[:, pad: pad + h, pad: pad + w] = x[:, : xp.shape[1] - pad, : xp.shape[2] - pad]
  return np.max([xp[:, i: i + s * (ho - 1) + 1: s, j: j + s * (wo - 1) + 1: s]
                 for i in range(k) for j in range(k)], axis=0)


def np_bn(x, sd, name):
  g = lambda n: sd[f"{name}.{n}"][:, None, None]
  return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")


def np_basic_block(x, sd, p, stride):
  relu = lambda a: np.maximum(a, 0)
  y = relu(np_bn(np_conv(x, sd[f"{p}.conv1.weight"], stride=stride, pad=1), sd, f"{p}.bn1"))
  y = np_bn(np_conv(y, sd[f"{p}.conv2.weight"], pad=1), sd, f"{p}.bn2")
  short = x
  if f"{p}.downsample.0.weight" in sd:
    short = np_bn(np_conv(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
  return relu(y + short)


def test_resnet18_features_match_numpy_forward_of_source(resnet18):
  x = np.random.default_rng(1).normal(size=(3, 32, 32)).astype(np.float32)  # CHW
  sd = resnet18.sd
  y = np.maximum(np_bn(np_conv(x, sd["conv1.weight"], stride=2, pad=3), sd, "bn1"), 0)
  y = np_max_pool(y, 3, 2, pad=1)
  c2 = np_basic_block(np_basic_block(y, sd, "layer1.0", 1), sd, "layer1.1", 1)
  c3 = np_basic_block(np_basic_block(c2, sd, "layer2.0", 2), sd, "layer2.1", 1)
  v = load_backbone_weights(resnet18_variables(), str(resnet18.dir / "out" / "r18.npz"))
  feats = ResNet(depth=18).apply(backbone_of(v), jnp.asarray(x.transpose(1, 2, 0)[None]))
  for got, ref in ((feats["C2"], c2), (feats["C3"], c3)):
    ref = ref.transpose(1, 2, 0)
    assert got.shape[1:] == ref.shape
    np.testing.assert_allclose(np.asarray(got[0]), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_safetensors_input_gives_the_same_npz(resnet18, tmp_path, monkeypatch):
  pytest.importorskip("safetensors")
  write_safetensors(tmp_path / "r18.safetensors", resnet18.sd)
  cw.convert_file(str(tmp_path / "r18.safetensors"), "resnet18", str(tmp_path / "r18.npz"))
  with np.load(tmp_path / "r18.npz") as f:
    assert set(f) == set(resnet18.npz)
    for k in f:
      np.testing.assert_array_equal(f[k], resnet18.npz[k], err_msg=k)
  with monkeypatch.context() as m:  # without the package: a clear error
    m.setitem(sys.modules, "safetensors.numpy", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"r18\.safetensors.*pip install safetensors"):
      cw.load_state_dict(str(tmp_path / "r18.safetensors"))


# ---------------------------------------------------------------- reader: strides, dtypes, errors
def test_strided_offset_shared_low_precision_and_out_of_bounds(tmp_path):
  rng = np.random.default_rng(2)
  flat = rng.normal(size=60).astype(np.float32)
  shared = FakeStorage("s", "FloatStorage", flat)
  bits = (rng.normal(size=8).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
  half = rng.normal(size=5).astype(np.float16)
  obj = {"t": FakeTensor(shared, 5, (3, 4), (1, 6)),       # transposed-like, offset 5
         "u": FakeTensor(shared, 0, (2, 3), (3, 1)),       # same storage, contiguous
         "scalar": FakeTensor(shared, 59, (), ()),
         "bf16": FakeTensor(FakeStorage("b", "BFloat16Storage", bits), 2, (2, 3), (3, 1)),
         "half": FakeTensor(FakeStorage("h", "HalfStorage", half), 0, (5,), (1,))}
  for order in ("little", "big"):
    torch_save(obj, tmp_path / f"{order}.pth", byteorder=order)
    sd = tc.load_torch_state_dict(tmp_path / f"{order}.pth")
    want_t = np.array([[flat[5 + i + 6 * j] for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(sd["t"], want_t)
    np.testing.assert_array_equal(sd["u"], flat[:6].reshape(2, 3))
    assert sd["scalar"].shape == () and sd["scalar"] == flat[59]
    bf = (bits.astype(np.uint32) << 16).view(np.float32)   # bf16 = top half of a float32
    assert sd["bf16"].dtype == np.float32
    np.testing.assert_array_equal(sd["bf16"], bf[2:8].reshape(2, 3))
    np.testing.assert_array_equal(sd["half"], half)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in sd.values())
  st = FakeStorage("0", "FloatStorage", np.zeros(10, np.float32))  # strides past the end
  torch_save({"w": FakeTensor(st, 4, (3, 3), (3, 1))}, tmp_path / "bad.pth")
  with pytest.raises(tc.CheckpointFormatError, match="element 12 of a storage with 10"):
    tc.load_torch_state_dict(tmp_path / "bad.pth")


def test_rejects_foreign_globals_without_running_them(tmp_path, capsys):
  marker = tmp_path / "pwned"
  cmd = f"touch {marker}".encode()
  pkl = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
  with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
    z.writestr("archive/data.pkl", pkl)
  with pytest.raises(tc.UnsafeCheckpointError, match=r"evil\.pth.*os\.system.*refusing"):
    tc.load_torch_state_dict(tmp_path / "evil.pth")
  assert cw.main([str(tmp_path / "evil.pth"), "--arch", "resnet18",
                  "--out", str(tmp_path / "o.npz")]) == 1
  assert "os.system" in capsys.readouterr().err and not marker.exists()


def test_legacy_torchscript_and_container_formats(tmp_path):
  (tmp_path / "old.pth").write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
  with pytest.raises(tc.CheckpointFormatError, match=r"legacy.*torch >= 1\.6.*safetensors"):
    tc.load_torch_state_dict(tmp_path / "old.pth")
  with zipfile.ZipFile(tmp_path / "ts.pt", "w") as z:
    z.writestr("m/constants.pkl", b"")
    z.writestr("m/code/__torch__.py", b"")
  with pytest.raises(tc.CheckpointFormatError, match="TorchScript"):
    tc.load_torch_state_dict(tmp_path / "ts.pt")
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  for top in ("state_dict", "model"):
    torch_save({top: fake_state_dict({"x.weight": a}), "epoch": 3}, tmp_path / "c.pth")
    np.testing.assert_array_equal(tc.load_torch_state_dict(tmp_path / "c.pth")["x.weight"], a)
  torch_save({"epoch": 3, "w": fake_state_dict({"x": a})["x"]}, tmp_path / "bad.pth")
  with pytest.raises(tc.CheckpointFormatError, match="'epoch' is a int, not a tensor"):
    tc.load_torch_state_dict(tmp_path / "bad.pth")


def test_key_and_shape_errors_name_key_and_arch(resnet18):
  sd = dict(resnet18.sd)
  module = {"module." + k: v for k, v in sd.items()}   # DataParallel prefix is stripped
  assert set(cw.convert_state_dict(module, "resnet18")[0]) == set(resnet18.npz)
  with pytest.raises(ValueError, match=r"resnet34.*missing keys.*layer1\.2\.bn1.*matches --arch resnet18"):
    cw.convert_state_dict(sd, "resnet34", source="r18.pth")
  del sd["layer2.1.bn2.running_var"]
  sd["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
  sd["layer3.0.conv1.weight"] = np.zeros((256, 128, 1, 1), np.float32)
  with pytest.raises(ValueError) as e:
    cw.convert_state_dict(sd, "resnet18", source="r18.pth")
  msg = str(e.value)
  assert "r18.pth is not a torchvision resnet18 state dict" in msg
  assert "missing keys (1): layer2.1.bn2.running_var" in msg
  assert "unexpected keys (1): layer9.0.conv1.weight" in msg
  assert "layer3.0.conv1.weight: file (256, 128, 1, 1) vs resnet18 (256, 128, 3, 3)" in msg


def test_every_resnet_spec_matches_the_jaxdet_tree():
  for arch, depth in cw.RESNET_ARCHS.items():
    tree = jax.eval_shape(ResNet(depth=depth).init, KEY, jnp.zeros((1, 32, 32, 3)))
    want = {"backbone/" + k: v.shape for k, v in flatten_weights(tree).items()}
    spec = cw.arch_spec(arch)
    assert {"backbone/" + e.dst for e in spec.values()} == set(want), arch
    for e in spec.values():  # OIHW -> HWIO for convs
      transformed = e.shape[2:] + e.shape[1::-1] if e.kind == "conv" else e.shape
      assert transformed == want["backbone/" + e.dst], (arch, e)


# ---------------------------------------------------------------- VGG-16
@pytest.fixture(scope="module")
def vgg16():
  rng = np.random.default_rng(3)
  sd, in_c, idx = {}, 3, 0
  for n_convs, c in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
    for _ in range(n_convs):
      sd[f"features.{idx}.weight"] = rng.standard_normal((c, in_c, 3, 3), np.float32) * np.float32(
          np.sqrt(2 / (9 * in_c)))
      sd[f"features.{idx}.bias"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
      idx, in_c = idx + 2, c
    idx += 1
  assert [k for k in sd if k.endswith("weight")][-1] == "features.28.weight"
  fc6 = np.zeros((4096, 25088), np.float32)   # lazily zeroed; only every 4th row filled
  fc6[::4] = rng.standard_normal((1024, 25088), np.float32) * np.float32(np.sqrt(2 / 4608))
  fc7 = np.zeros((4096, 4096), np.float32)
  fc7[::4] = rng.standard_normal((1024, 4096), np.float32) * np.float32(np.sqrt(2 / 1024))
  sd.update({"classifier.0.weight": fc6, "classifier.0.bias": rng.normal(size=4096).astype(np.float32),
             "classifier.3.weight": fc7, "classifier.3.bias": rng.normal(size=4096).astype(np.float32),
             "classifier.6.weight": np.zeros((1000, 4096), np.float32),
             "classifier.6.bias": np.zeros(1000, np.float32)})
  out, dropped = cw.convert_state_dict(sd, "vgg16")
  return types.SimpleNamespace(sd=sd, out=out, dropped=dropped)


def test_vgg16_sizes_keys_shapes_and_fc_subsampling(vgg16):
  for size, c4, c7 in ((300, 38, 19), (512, 64, 32)):  # SSD300 / SSD512 map sizes
    out, v = jax.eval_shape(VGG16().init_with_output, KEY, jnp.zeros((1, size, size, 3)))
    assert out["conv4_3"].shape == (1, c4, c4, 512) and out["conv7"].shape == (1, c7, c7, 1024)
  want = {"backbone/" + k: a.shape for k, a in flatten_weights(v["params"]).items()}
  assert {k: v.shape for k, v in vgg16.out.items()} == want
  assert vgg16.dropped == ["classifier.6.bias", "classifier.6.weight"]
  np.testing.assert_array_equal(vgg16.out["backbone/conv3_2/kernel"],
                                vgg16.sd["features.12.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(vgg16.out["backbone/conv5_3/bias"], vgg16.sd["features.28.bias"])
  # fc6 input index = c*49 + row*7 + col (torch flattens the 512x7x7 pool5 map); keep output
  # 4o and taps rows/cols 0, 3, 6.  Kernel HWIO [h, w, c, o].
  h, w, c, o = np.meshgrid(np.arange(3), np.arange(3), np.arange(512), np.arange(1024), indexing="ij")
  fc6 = vgg16.sd["classifier.0.weight"]
  np.testing.assert_array_equal(vgg16.out["backbone/conv6/kernel"], fc6[4 * o, c * 49 + 21 * h + 3 * w])
  i, o = np.meshgrid(np.arange(1024), np.arange(1024), indexing="ij")
  np.testing.assert_array_equal(vgg16.out["backbone/conv7/kernel"][0, 0],
                                vgg16.sd["classifier.3.weight"][4 * o, 4 * i])
  np.testing.assert_array_equal(vgg16.out["backbone/conv6/bias"], vgg16.sd["classifier.0.bias"][0::4])
  np.testing.assert_array_equal(vgg16.out["backbone/conv7/bias"], vgg16.sd["classifier.3.bias"][0::4])


def np_vgg16(x, sd, conv6_w, conv7_w):
  """SSD's VGG-16 in numpy from torchvision arrays (x [3, H, W]); returns conv4_3, conv7."""
  relu, idx = (lambda a: np.maximum(a, 0)), 0
  for block, n_convs in enumerate((2, 2, 3, 3, 3), start=1):
    for _ in range(n_convs):
      x = relu(np_conv(x, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"], pad=1))
      idx += 2
    idx += 1
    if block == 4:
      conv4_3 = x
    x = np_max_pool(x, 2, 2, ceil=block == 3) if block < 5 else np_max_pool(x, 3, 1, pad=1)
  x = relu(np_conv(x, conv6_w, sd["classifier.0.bias"][::4], pad=6, dil=6))
  return conv4_3, relu(np_conv(x, conv7_w, sd["classifier.3.bias"][::4]))


def load_vgg16_params(npz):
  shapes = {"backbone": jax.eval_shape(VGG16().init, KEY, jnp.zeros((1, 32, 32, 3)))["params"]}
  return load_backbone_weights(shapes, npz)["backbone"]


def test_vgg16_forward_matches_numpy(vgg16, tmp_path):
  np.savez(tmp_path / "vgg.npz", **vgg16.out)
  params = load_vgg16_params(str(tmp_path / "vgg.npz"))
  x = np.random.default_rng(4).uniform(-1, 1, (3, 108, 108)).astype(np.float32)  # 108 -> 27 at pool3
  got = VGG16().apply({"params": params}, jnp.asarray(x.transpose(1, 2, 0)[None]))
  sd = vgg16.sd
  conv6_w = sd["classifier.0.weight"].reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
  conv7_w = sd["classifier.3.weight"][::4, ::4, None, None]
  ref4, ref7 = np_vgg16(x, sd, conv6_w, conv7_w)
  assert got["conv4_3"].shape == (1, 14, 14, 512) and got["conv7"].shape == (1, 7, 7, 1024)
  for k, ref in (("conv4_3", ref4), ("conv7", ref7)):
    ref = ref.transpose(1, 2, 0)
    np.testing.assert_allclose(np.asarray(got[k][0]), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_l2norm_values_init_and_zero_gradient():
  x = np.random.default_rng(5).normal(size=(2, 3, 4, 8)).astype(np.float32)
  x[0, 1, 2] = 0.0
  v = L2Norm().init(KEY, x)
  np.testing.assert_array_equal(v["params"]["scale"], np.full(8, 20.0, np.float32))
  scale = np.linspace(0.5, 4, 8).astype(np.float32)
  got = L2Norm().apply({"params": {"scale": scale}}, x)
  ref = scale * x / (np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True)) + 1e-10)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got[1, 0, 0] / scale), 1.0, rtol=1e-5)
  assert np.all(np.asarray(got[0, 1, 2]) == 0)
  g = jax.grad(lambda a: L2Norm().apply({"params": {"scale": scale}}, a).sum())(jnp.asarray(x))
  assert np.all(np.isfinite(g))


# ---------------------------------------------------------------- against torchvision itself
def _rel_err(got, ref_nchw):
  """Max |jaxdet - torchvision| relative to max |torchvision feature| (inf on a shape mismatch)."""
  ref = ref_nchw.detach().numpy()[0].transpose(1, 2, 0)
  got = np.asarray(got)[0]
  if got.shape != ref.shape:
    return float("inf")
  return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_matches_torchvision_layer_by_layer(tmp_path):
  torch = pytest.importorskip("torch")
  tv = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  m = tv.models.resnet18(weights=None).eval()
  with torch.no_grad():
    for mod in m.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.uniform_(0.5, 1.5), mod.bias.normal_(0, 0.1)
        mod.running_mean.normal_(0, 0.1), mod.running_var.uniform_(0.5, 2.0)
  torch.save(m.state_dict(), tmp_path / "r18.pth")
  cw.convert_file(str(tmp_path / "r18.pth"), "resnet18", str(tmp_path / "r18.npz"))
  x = np.random.default_rng(6).normal(size=(1, 3, 64, 64)).astype(np.float32)
  v = load_backbone_weights(resnet18_variables(64), str(tmp_path / "r18.npz"))
  feats, state = ResNet(depth=18).apply(backbone_of(v), jnp.asarray(x.transpose(0, 2, 3, 1)),
                                        capture_intermediates=lambda mdl, _: mdl.name == "stem",
                                        mutable=["intermediates"])
  with torch.no_grad():
    y = m.maxpool(m.relu(m.bn1(m.conv1(torch.from_numpy(x)))))
    assert _rel_err(state["intermediates"]["stem"]["__call__"][0], y) < 1e-4
    for s in range(1, 5):
      y = getattr(m, f"layer{s}")(y)
      assert _rel_err(feats[f"C{s + 1}"], y) < 1e-4, f"layer{s}"
  vgg = tv.models.vgg16(weights=None).eval()
  torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
  cw.convert_file(str(tmp_path / "vgg16.pth"), "vgg16", str(tmp_path / "vgg16.npz"))
  params = load_vgg16_params(str(tmp_path / "vgg16.npz"))
  x = np.random.default_rng(7).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
  got = VGG16().apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
  f = torch.nn.functional
  with torch.no_grad():  # even sizes up to pool3, so torchvision's floor pool3 equals SSD's ceil
    y = vgg.features[:23](torch.from_numpy(x))
    assert _rel_err(got["conv4_3"], y) < 1e-4
    y = f.max_pool2d(vgg.features[23:30](y), 3, 1, 1)
    w6 = vgg.classifier[0].weight.view(4096, 512, 7, 7)[::4, :, ::3, ::3]
    y = f.relu(f.conv2d(y, w6, vgg.classifier[0].bias[::4], padding=6, dilation=6))
    w7 = vgg.classifier[3].weight[::4, ::4, None, None]
    assert _rel_err(got["conv7"], f.relu(f.conv2d(y, w7, vgg.classifier[3].bias[::4]))) < 1e-4
