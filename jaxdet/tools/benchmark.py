"""Throughput of a detector config: train step and inference (with NMS), per input size.

Per ``--sizes`` entry H x W (``config.data.image_size`` and ``eval_image_size``; one experiment
per distinct size, a repeated size reuses it) on synthetic data (random uint8 images, 5-15 boxes
each; no dataset read, no pretrained weights):

* train / inference: compile time, median ms over ``--steps`` after one warm-up and img/s of the
  loop step (``jaxdet.train.loop.make_step``: forward, loss, backward, update) and of the
  experiment's ``predict_fn`` (network, decode, class-aware NMS);
* XLA compilations (the backend-compile event of jax.monitoring, jax/_src/dispatch.py) per
  function, and any during the timed steps (should be 0);
* peak memory: ``memory_stats()['peak_bytes_in_use']`` (GPU/TPU), else the peak host RSS;
* FLOPs of the compiled programs (XLA's cost analysis of the per-device program), achieved
  TFLOP/s and MFU against the chip's bf16 dense peak (``PEAK_TFLOPS`` or ``--peak_tflops``);
* torchvision's RetinaNet R50-FPN at the same batch and size where torch has CUDA
  (``jaxdet.tools.benchmark_torchvision``);
* ``--profile``: inference split into network (``detection_inputs``) / selection
  (``postprocess.select_candidates``: per-level top-k + decode) / NMS (``nms_detections``) and
  training into forward+loss / backward / update, each its own jitted function.

    python -m jaxdet.tools.benchmark --config=configs/retinanet_coco.py --sizes 512x512,800x1344
    python -m jaxdet.tools.benchmark --config=demo --sizes 128x128 --batch 4 --profile
    python -m jaxdet.tools.benchmark --config=retinanet_coco --override model.depth=18 \\
        --override model.dtype=float32 --sizes 256x256 --batch 2 --json bench.json

Covers the box detectors (RetinaNet, consistent optimization, SSD; Faster R-CNN without
--profile). The class count comes from the config's data source (``--classes`` overrides).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRAIN_FN, PREDICT_FN = "bench_train_step", "bench_predict"
# bf16 dense TFLOP/s per chip; the first entry whose key is in device_kind (lower case) wins.
PEAK_TFLOPS = (("h100 pcie", 756.0), ("h100", 989.0), ("h200", 989.0), ("a100", 312.0),
               ("tpu v4", 275.0), ("tpu v5 lite", 197.0), ("tpu v5e", 197.0),
               ("tpu v5p", 459.0), ("tpu v5", 459.0))


class CompileLog:
  """Records every XLA backend compilation, ``(function name, seconds)``, while entered."""

  def __init__(self):
    self.events: list[tuple[str, float]] = []

  def _listener(self, event: str, duration: float, **kwargs) -> None:
    if event == COMPILE_EVENT:
      self.events.append((str(kwargs.get("fun_name", "?")), float(duration)))

  def __enter__(self) -> "CompileLog":
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listener)

  def count(self, fn_name: str | None = None, since: int = 0) -> int:
    """Compilations after event ``since``; only of ``jax.jit(fn_name)`` if given."""
    return sum(1 for name, _ in self.events[since:] if fn_name is None or name == f"jit({fn_name})")


class SyntheticSource:
  """Stands in for the train split: the experiment reads only its classes."""

  def __init__(self, num_classes: int):
    self.category_ids = list(range(1, num_classes + 1))
    self.class_names = [str(i) for i in self.category_ids]


def compiled_flops(compiled) -> float | None:
  """FLOPs of a compiled program from XLA's cost analysis (a dict, or in older jax a list of
  dicts, one per program); None where the backend reports none."""
  cost = compiled.cost_analysis()
  parts = cost if isinstance(cost, (list, tuple)) else [cost]
  flops = sum(float(p.get("flops", 0.0)) for p in parts if p)
  return flops if flops > 0 else None


def compile_timed(jitted, *args) -> tuple[Any, float]:
  """(``jitted.lower(*args).compile()``, seconds); later calls of ``jitted`` reuse it."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def median_ms(fn: Callable[[], Any], steps: int) -> float:
  """Median ms of ``fn()`` (until its outputs are ready) over ``steps`` calls after a warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def peak_tflops_for(device_kind: str) -> float | None:
  kind = device_kind.lower()
  return next((peak for key, peak in PEAK_TFLOPS if key in kind), None)


def peak_memory() -> dict:
  """Peak device bytes in use, or (CPU: ``memory_stats()`` is None) the peak host RSS."""
  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    return {"bytes": int(stats["peak_bytes_in_use"]), "kind": "device"}
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux, bytes on macOS
  return {"bytes": int(rss if sys.platform == "darwin" else rss * 1024), "kind": "host_rss"}


def parse_sizes(text: str) -> list[tuple[int, int]]:
  """'512x512,800x1344' -> [(512, 512), (800, 1344)] (H x W)."""
  sizes = []
  for item in text.split(","):
    h, sep, w = item.strip().lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
      raise ValueError(f"--sizes: {item!r} is not HxW (e.g. --sizes 512x512,800x1344).")
    sizes.append((int(h), int(w)))
  return sizes


def apply_overrides(config, overrides: list[str]) -> None:
  """``['model.depth=18', 'model.dtype=bfloat16']`` into ``config``; values are Python literals
  (strings may be bare), as ml_collections' ``--config.key=value`` parses them."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--override {item!r}: expected key=value, e.g. model.depth=18.")
    text = text.capitalize() if text in ("true", "false") else text
    try:
      value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
      value = text
    node, path = config, key.split(".")
    for i, part in enumerate(path):
      if not hasattr(node, "keys") or part not in node:
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a section)"
        raise ValueError(f"--override {item!r}: config has no key "
                         f"'{'.'.join(path[:i + 1])}'; keys there: {valid}.")
      if i < len(path) - 1:
        node = node[part]
    if isinstance(node[path[-1]], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[path[-1]] = value
    except TypeError as e:
      raise ValueError(f"--override {item!r}: {e}") from None


def config_classes(config) -> tuple[int, str]:
  """(class count, where it came from) of the config's training data, without reading it."""
  d = config.data
  if d.source == "benchmark":
    from jaxdet.data.benchmark import CLASS_NAMES
    faces = d.get("benchmark_subset", "all") == "faces"
    return (1 if faces else len(CLASS_NAMES)), f"benchmark ({d.get('benchmark_subset', 'all')})"
  name = str(d.get("tfds_name", "") if d.source == "tfds" else d.get("train_json", "")).lower()
  if d.source == "wider_face" or "wider" in name or "face" in name:
    return 1, f"{d.source} (faces)"
  if "voc" in name:
    return 20, f"{d.source} {name} (VOC)"
  return 80, f"{d.source} {name} ({'COCO' if 'coco' in name else 'assumed COCO'})"


def synthetic_batch(batch: int, hw: tuple[int, int], num_classes: int, max_boxes: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Random uint8 images and 5-15 xyxy boxes per image inside (H, W)."""
  rng = np.random.default_rng(seed)
  scale = np.array([hw[1], hw[0]], np.float32)           # x, y
  xy = rng.uniform(0.0, 0.8, (batch, max_boxes, 2)) * scale
  wh = rng.uniform(0.05, 0.4, (batch, max_boxes, 2)) * scale
  boxes = np.concatenate([xy, np.minimum(xy + wh, scale)], -1).astype(np.float32)
  count = rng.integers(min(5, max_boxes), min(15, max_boxes) + 1, (batch, 1))
  return {"images": rng.integers(0, 256, (batch, *hw, 3), dtype=np.uint8), "boxes": boxes,
          "classes": rng.integers(0, num_classes, (batch, max_boxes)).astype(np.int32),
          "box_valid": np.arange(max_boxes)[None] < count,
          "image_hw": np.tile(np.array(hw, np.int32), (batch, 1))}


def experiment_class(config):
  """The config's experiment class (validated config); ValueError unless it is a box detector."""
  from jaxdet.experiments.detection import DetectionExperiment
  from jaxdet.run import check
  cls = check(config, "train")
  if not issubclass(cls, DetectionExperiment) or cls.name == "mask_rcnn":
    raise ValueError(f"config.experiment={config.experiment!r}: the benchmark covers the box "
                     "detection experiments (retinanet, ssd, consistent optimization, "
                     "faster_rcnn); it has no synthetic inputs for this one.")
  return cls


@dataclasses.dataclass
class Setup:
  """One size: its experiment, batch and jitted functions (reused for a repeated size)."""
  exp: Any
  batch: dict
  train_step: Any
  predict: Any
  init: Callable[[], Any]   # the train state (LoopState), replicated over the mesh
  state_shape: Any          # its tree of (shape, dtype): sizes with equal ones share a state


def build(config, experiment_cls, hw, batch: int, num_classes: int, mesh) -> Setup:
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib
  c = config.copy_and_resolve_references()
  c.data.image_size = c.data.eval_image_size = hw
  c.data.aspect_ratio_grouping = False   # one fixed size per entry (--sizes 800x1344,1344x800)
  c.train.batch_size = c.eval.batch_size = batch
  c.model.pretrained = ""
  exp = experiment_cls(c, mesh, train_source=SyntheticSource(num_classes))
  create = lambda key: loop.LoopState.create(exp.init(key), key)
  key = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(create, key)
  # Replicated over the mesh as the loop's init_or_restore makes it: a state left on one device
  # has another sharding than the step's output, so the second step would compile again.
  init = lambda: jax.jit(create, out_shardings=shard_lib.replicated(mesh))(key)
  state_shape = (jax.tree.structure(abstract),
                 tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(abstract)))
  data = synthetic_batch(batch, hw, num_classes, int(c.data.max_boxes) or 32)
  loop_step = loop.make_step(exp)

  def bench_train_step(state, batch):
    return loop_step(state, batch)

  def bench_predict(net, images, image_hw):
    return exp.predict_fn(net, images, image_hw)

  return Setup(exp, shard_lib.to_global(data, mesh), jax.jit(bench_train_step, donate_argnums=0),
               jax.jit(bench_predict), init, state_shape)


def train_loss(exp, params, model_state, batch):
  """The weighted detection loss of the train step (no ALWA weights, no accumulation)."""
  from jaxdet.models.resnet import backbone_remat
  c = exp.config
  variables, images = {"params": params, **model_state}, exp.normalize(batch["images"])
  with backbone_remat(c.model.remat):
    if c.model.norm == "batch_norm":
      outputs, _ = exp.model.apply(variables, images, train=True, mutable=["batch_stats"])
    else:
      outputs = exp.model.apply(variables, images, train=True)
  t = exp.losses(outputs, batch)
  return (c.loss.cls_weight * (t["cls_loss"] + t.get("cls_loss_refined", 0.0))
          + c.loss.reg_weight * (t["reg_loss"] + t.get("reg_loss_refined", 0.0)))


def profile(s: Setup, state, steps: int, predict_ms: float, step_ms: float) -> dict:
  """ms of each part of inference and of the train step, each its own jitted function."""
  from jaxdet.ops import postprocess

  def timed(fn, args):   # compiled first: the compile is not part of the median
    compile_timed(fn, *args)
    return median_ms(lambda: fn(*args), steps)

  exp, net, batch, e = s.exp, state.experiment["net"], s.batch, s.exp.config.eval
  slices = exp.anchors_of(batch["images"])[1]
  network = jax.jit(lambda net, images: exp.detection_inputs(net, images)[:3])
  select = jax.jit(lambda logits, deltas, anchors, hw: postprocess.select_candidates(
      logits, deltas, anchors, slices, hw, box_weights=tuple(exp.config.loss.box_weights),
      score_threshold=e.score_threshold, pre_nms_topk=e.pre_nms_topk))
  nms = jax.jit(lambda cands: postprocess.nms_detections(
      cands, nms_iou=e.nms_iou, max_detections=int(e.max_detections)))
  heads = network(net, batch["images"])
  cands = select(*heads, batch["image_hw"])
  infer = {"network": timed(network, (net, batch["images"])),
           "selection": timed(select, (*heads, batch["image_hw"])),
           "nms": timed(nms, (cands,))}
  infer["other"] = predict_ms - sum(infer.values())
  forward = jax.jit(lambda p, ms, b: train_loss(exp, p, ms, b))
  grad = jax.jit(jax.value_and_grad(lambda p, ms, b: train_loss(exp, p, ms, b)))
  args = (net.params, net.model_state, batch)
  fwd_ms, grad_ms = timed(forward, args), timed(grad, args)
  train = {"forward+loss": fwd_ms, "backward": grad_ms - fwd_ms, "update+rest": step_ms - grad_ms}
  return {"inference": infer, "train": train}


def bench_size(s: Setup, state, steps: int, batch: int, log: CompileLog,
               peak: float | None) -> tuple[dict, Any]:
  """(figures of one size, the train state after its steps: the input state is donated)."""

  def measure(jitted, args, call, fn_name):
    n0 = len(log.events)
    compiled, compile_s = compile_timed(jitted, *args)
    n1 = len(log.events)
    ms = median_ms(call, steps)
    return {"compile_s": compile_s, "ms": ms, "img_s": batch * 1e3 / ms,
            "compiles": log.count(fn_name, n0), "timed_compiles": log.count(since=n1),
            "flops": compiled_flops(compiled)}

  def train_call():
    nonlocal state
    state, metrics = s.train_step(state, s.batch)
    return metrics

  train = measure(s.train_step, (state, s.batch), train_call, TRAIN_FN)
  flops, sec = train["flops"], train["ms"] * 1e-3
  train["tflops"] = flops / sec / 1e12 if flops else None
  train["mfu"] = train["tflops"] / peak if flops and peak else None
  args = (state.experiment["net"], s.batch["images"], s.batch["image_hw"])
  infer = measure(s.predict, args, lambda: s.predict(*args), PREDICT_FN)
  # NMS time depends on how many candidates pass eval.score_threshold (none at a fresh init,
  # whose scores are ~model.prior_prob): reported so that a too cheap NMS is visible.
  infer["dets_per_image"] = float(np.mean(jax.device_get(s.predict(*args).num_valid)))
  return {"train": train, "inference": infer}, state


def run_benchmark(config, sizes: list[tuple[int, int]], *, batch: int = 8, steps: int = 5,
                  profile_parts: bool = False, peak_tflops: float | None = None,
                  num_classes: int | None = None, torchvision: bool = True,
                  label: str = "") -> dict:
  """All figures of the benchmark as a dict (``format_report`` prints it)."""
  from jaxdet.experiments.retinanet import RetinaNetExperiment
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.config_check import ConfigError
  if steps < 1 or batch < 1:
    raise ValueError(f"--steps and --batch must be >= 1; got {steps} and {batch}.")
  experiment_cls = experiment_class(config)
  if profile_parts and not issubclass(experiment_cls, RetinaNetExperiment):
    raise ValueError(f"--profile splits the one-stage detectors' inference; config.experiment="
                     f"{config.experiment!r} is not one (run without --profile).")
  classes_from = "--classes"
  if num_classes is None:
    num_classes, classes_from = config_classes(config)
  device = jax.devices()[0]
  peak = peak_tflops or peak_tflops_for(device.device_kind)
  result = {"config": label, "experiment": config.experiment, "jax": jax.__version__,
            "backend": jax.default_backend(), "device_kind": device.device_kind,
            "device_count": jax.device_count(), "dtype": config.model.dtype,
            "classes": num_classes, "classes_from": classes_from, "batch": batch,
            "steps": steps, "peak_tflops": peak, "sizes": []}
  mesh, setups, states = shard_lib.make_mesh(), {}, {}
  with CompileLog() as log:
    for hw in sizes:
      if hw not in setups:
        try:
          setups[hw] = build(config, experiment_cls, hw, batch, num_classes, mesh)
        except ConfigError as e:   # the batch is config.train.batch_size: name the flag
          raise ConfigError(f"--batch={batch}: {e}" if "batch_size" in str(e) else e) from None
      s = setups[hw]
      if s.state_shape not in states:   # weights are size-agnostic: init once per shape tree
        states[s.state_shape] = s.init()
      figures, states[s.state_shape] = bench_size(s, states[s.state_shape], steps, batch, log,
                                                  peak)
      row = {"size": list(hw), "anchors": int(s.exp.anchors.shape[0]), **figures,
             "memory": peak_memory()}
      if profile_parts:
        row["profile"] = profile(s, states[s.state_shape], steps, row["inference"]["ms"],
                                 row["train"]["ms"])
      result["sizes"].append(row)
    by_fn: dict[str, int] = {}
    for name, _ in log.events:
      by_fn[name] = by_fn.get(name, 0) + 1
    result["compiles"] = {"total": len(log.events), "by_function": by_fn}
  setups.clear()   # free jaxdet's buffers for torchvision
  states.clear()
  result["torchvision"] = (torchvision_side_by_side(result, sizes) if torchvision
                           else {"status": "skipped", "reason": "not requested"})
  return result


def torchvision_side_by_side(result: dict, sizes) -> dict:
  """torchvision's RetinaNet at each size where torch with CUDA runs, with jaxdet/torch ratios.

  torch runs on one GPU with jaxdet's per-device batch, and the ratios compare per-device
  img/s. A failure (out of memory, an old torch) is reported in the row; jaxdet's figures stay.
  """
  from jaxdet.tools import benchmark_torchvision as tv
  reason = tv.unavailable_reason()
  if reason:
    return {"status": "skipped", "reason": reason}
  devices = result["device_count"]
  if result["batch"] % devices:
    return {"status": "skipped", "reason": f"batch {result['batch']} does not split over "
                                           f"{devices} devices"}
  rows = []
  for hw, row in zip(sizes, result["sizes"]):
    try:
      t = tv.run_torchvision(result["classes"], result["batch"] // devices, hw, result["steps"])
    except Exception as e:  # noqa: BLE001 - reported next to jaxdet's figures, not raised
      rows.append({"size": list(hw), "failed": f"{type(e).__name__}: {str(e)[:200]}"})
      continue
    t["train_ratio"] = row["train"]["img_s"] / devices / t["train_img_s"]
    t["inference_ratio"] = row["inference"]["img_s"] / devices / t["inference_img_s"]
    rows.append({"size": list(hw), **t})
  return {"status": "ran", "sizes": rows}


def format_report(r: dict) -> str:
  gflop = lambda f: "-" if f is None else f"{f / 1e9:.2f}"
  size = lambda row: "x".join(map(str, row["size"]))
  head = f"{'compile s':>10s}{'ms':>9s}{'img/s':>9s}{'GFLOP':>9s}{'compiles':>9s}{'in timed':>9s}"
  lines = [f"jaxdet benchmark: {r['config']} (experiment {r['experiment']}, dtype {r['dtype']}, "
           f"{r['classes']} classes from {r['classes_from']})",
           f"jax {r['jax']}, backend {r['backend']}, {r['device_count']} x {r['device_kind']}, "
           f"batch {r['batch']}, median of {r['steps']} steps after 1 warm-up"]
  for part in ("train", "inference"):
    extra = f"{'TFLOP/s':>9s}{'MFU':>7s}" if part == "train" else ""
    lines.append(f"{part:10s}{'anchors':>8s}{head}{extra}")
    for row in r["sizes"]:
      f = row[part]
      if part == "train":
        extra = ("-" if f["tflops"] is None else f"{f['tflops']:9.3f}") + (
            f"{'n/a':>7s}" if f["mfu"] is None else f"{100 * f['mfu']:6.1f}%")
      lines.append(f"  {size(row):8s}{row['anchors']:8d}{f['compile_s']:10.2f}{f['ms']:9.1f}"
                   f"{f['img_s']:9.2f}{gflop(f['flops']):>9s}{f['compiles']:9d}"
                   f"{f['timed_compiles']:9d}{extra}")
  if any(row["inference"]["dets_per_image"] == 0 for row in r["sizes"]):
    lines.append("no detections pass eval.score_threshold at this (random) init, so NMS does "
                 "~no work; --override eval.score_threshold=0.0 times its worst case")
  if r["peak_tflops"] is None:
    lines.append(f"MFU n/a (no peak for {r['device_kind']}; pass --peak_tflops)")
  else:
    lines.append(f"MFU against {r['peak_tflops']:g} TFLOP/s (bf16 dense peak per chip; FLOPs "
                 "from XLA's cost analysis of the per-device program)")
  if r["sizes"]:
    mem = r["sizes"][-1]["memory"]
    where = ("device peak_bytes_in_use" if mem["kind"] == "device" else
             "host RSS of this process: memory_stats() is None on this backend")
    lines.append(f"peak memory: {mem['bytes'] / 2 ** 30:.2f} GiB ({where}; the running peak "
                 "over all sizes measured)")
  fns = sorted(r["compiles"]["by_function"].items(), key=lambda kv: -kv[1])
  lines.append(f"XLA compilations: {r['compiles']['total']} "
               f"({', '.join(f'{k} {v}' for k, v in fns)})")
  for row in r["sizes"]:
    for part, items in row.get("profile", {}).items():
      total = sum(items.values())
      parts = " | ".join(f"{k} {ms:.1f} ms {100 * ms / total:.0f}%" for k, ms in items.items())
      lines.append(f"profile {size(row)} {part}: {parts}")
  tv = r["torchvision"]
  if tv["status"] == "skipped":
    lines.append(f"torchvision: skipped ({tv['reason']})")
  for row in tv.get("sizes", []):
    if "failed" in row:
      lines.append(f"torchvision {size(row)}: failed ({row['failed']})")
      continue
    lines.append(f"torchvision {size(row)} ({row['amp']} AMP, one device): train "
                 f"{row['train_img_s']:.2f} img/s (jaxdet per device {row['train_ratio']:.2f}x), "
                 f"inference {row['inference_img_s']:.2f} img/s (jaxdet per device "
                 f"{row['inference_ratio']:.2f}x)")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxdet.tools.benchmark",
      description="Train-step and inference throughput, compilations, memory and MFU of a "
                  "detector config on synthetic data.")
  parser.add_argument("--config", required=True,
                      help="config file or name, with :variants (as python -m jaxdet.main)")
  parser.add_argument("--sizes", default="512x512", help="HxW,... (default 512x512)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5, help="timed steps after 1 warm-up")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="config override, repeatable: --override model.depth=18")
  parser.add_argument("--classes", type=int, help="class count (default: from config.data)")
  parser.add_argument("--peak_tflops", type=float, help="peak TFLOP/s per chip for MFU")
  parser.add_argument("--profile", action="store_true", help="split inference and train time")
  parser.add_argument("--no_torchvision", action="store_true")
  parser.add_argument("--json", help="also write every figure to this JSON file")
  args = parser.parse_args(argv)
  if not args.no_torchvision:   # before jax's GPU backend starts: leave memory for torchvision
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  from jaxdet import configs_by_name
  try:
    config = configs_by_name.load(args.config)
    apply_overrides(config, args.override)
    result = run_benchmark(
        config, parse_sizes(args.sizes), batch=args.batch, steps=args.steps,
        profile_parts=args.profile, peak_tflops=args.peak_tflops, num_classes=args.classes,
        torchvision=not args.no_torchvision, label=args.config)
  except (ValueError, OSError, AttributeError) as e:  # config errors: ConfigError is a ValueError
    print(f"benchmark: error: {e}", file=sys.stderr)
    return 2
  print(format_report(result), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
