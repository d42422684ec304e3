"""Full one-stage train step (forward + loss + backward + SGD) with each classification loss.

Prints compile time, ms per step (median, after compilation) and images/s for focal, AP, AUC
and CE+OHEM losses, and the ratio to the focal step (AP-loss issue: AP step <= 1.25x focal).
Synthetic images and ground truth (~10 objects per image); RetinaNet ResNet-50-FPN by default,
``--detector ssd`` for SSD512 (VGG-16, 7 maps, 24,564 default boxes; ``--size`` must be 512).

    python benchmarks/bench_train_step.py --size 512 --batch 8 --classes 20 80
    python benchmarks/bench_train_step.py --depth 18 --width 16 --size 256   # quick CPU check
    python benchmarks/bench_train_step.py --detector ssd --batch 8 --classes 20
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax

from jaxdet.tools.benchmark import SyntheticSource, synthetic_batch


def time_step(cls_loss, args, num_classes):
  from jaxdet.experiments.defaults import detector_defaults
  from jaxdet.experiments.retinanet import RetinaNetExperiment
  from jaxdet.experiments.ssd import SSDExperiment, ssd_defaults
  from jaxdet.train import loop
  from jaxdet.train import sharding as shard_lib

  ssd = args.detector == "ssd"
  c = ssd_defaults() if ssd else detector_defaults()
  c.data.image_size = (args.size, args.size)
  c.model.depth, c.model.width, c.model.dtype = args.depth, args.width, args.dtype
  if ssd:   # SSD's matching, coder and losses are ssd_defaults()'
    c.ssd.vgg_width = args.vgg_width
  c.loss.cls = cls_loss
  c.train.batch_size = args.batch
  mesh = shard_lib.make_mesh()
  exp = (SSDExperiment if ssd else RetinaNetExperiment)(
      c, mesh, train_source=SyntheticSource(num_classes))
  # Replicated over the mesh like the step's output state, else the second step recompiles.
  state = jax.jit(lambda key: loop.LoopState.create(exp.init(key), key),
                  out_shardings=shard_lib.replicated(mesh))(jax.random.PRNGKey(0))
  data = synthetic_batch(args.batch, (args.size, args.size), num_classes, max_boxes=32)
  batch = shard_lib.to_global(data, mesh)
  step = jax.jit(loop.make_step(exp), donate_argnums=0)
  t0 = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.runs):
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return compile_s, 1e3 * statistics.median(times), int(exp.anchors.shape[0])


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--size", type=int, default=512)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--classes", type=int, nargs="+", default=[20, 80])
  p.add_argument("--depth", type=int, default=50)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--losses", nargs="+", default=["focal", "ap", "auc", "ce_ohem"])
  p.add_argument("--detector", choices=("retinanet", "ssd"), default="retinanet")
  p.add_argument("--vgg_width", type=float, default=1.0, help="SSD: VGG-16 channel multiplier")
  args = p.parse_args()
  print(f"devices: {jax.devices()}")
  if args.detector == "ssd":
    print(f"SSD VGG-16 (width x{args.vgg_width}) {args.size}x{args.size}, batch {args.batch}, "
          f"{args.dtype}")
  else:
    print(f"RetinaNet R{args.depth} (width {args.width}) {args.size}x{args.size}, batch "
          f"{args.batch}, {args.dtype}")
  for k in args.classes:
    base = None
    for loss in args.losses:
      try:
        compile_s, ms, anchors = time_step(loss, args, k)
      except Exception as e:  # noqa: BLE001 - report and go on with the other losses
        print(f"  classes={k:3d} {loss:8s} failed: {type(e).__name__}: {str(e)[:200]}")
        continue
      if loss == "focal":
        base = ms
      ratio = f"{ms / base:5.2f}x focal" if base else ""
      print(f"  classes={k:3d} {loss:8s} anchors={anchors:6d} compile {compile_s:6.1f} s   "
            f"step {ms:9.1f} ms  {1e3 * args.batch / ms:7.2f} img/s  {ratio}", flush=True)


if __name__ == "__main__":
  main()
