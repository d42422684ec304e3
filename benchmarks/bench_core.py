"""Benchmark of the detection-core ops (a script, not a test).

For each image size: anchors P3-P7 x 9, batch 8, 80 classes, 100 padded GT boxes per image
(15-25 valid). Each stage is one jitted function; prints its compile time (lower + compile) and
the median wall time per call over several runs (block_until_ready), and checks that repeated
calls did not recompile.

  matching   vmapped match_anchors + class_targets + box_targets
  focal      value_and_grad of sum(sigmoid_focal_loss) / num_pos w.r.t. logits [B, A, C]
  smooth_l1  value_and_grad of the positive-masked smooth-L1 (beta=1) / num_pos w.r.t. deltas
  detect     generate_detections (per-level top-1000, decode, clip, class-aware NMS, 100 dets)

Usage: python benchmarks/bench_core.py [--sizes 512x512,800x1333] [--runs 5] [--batch 8]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jaxdet.losses.focal import sigmoid_focal_loss
from jaxdet.losses.regression import smooth_l1_loss
from jaxdet.ops import anchors as anchor_ops
from jaxdet.ops import matching
from jaxdet.ops.postprocess import generate_detections

NUM_CLASSES = 80
MAX_GT = 100
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def random_gt(rng, batch, height, width):
  boxes = np.zeros((batch, MAX_GT, 4), np.float32)
  classes = np.zeros((batch, MAX_GT), np.int32)
  valid = np.zeros((batch, MAX_GT), bool)
  for b in range(batch):
    n = int(rng.integers(15, 26))
    wh = rng.uniform(8, 0.5 * min(height, width), (n, 2))
    xy = rng.uniform(0, 1, (n, 2)) * (np.array([width, height]) - wh)
    boxes[b, :n] = np.concatenate([xy, xy + wh], -1)
    classes[b, :n] = rng.integers(0, NUM_CLASSES, n)
    valid[b, :n] = True
  return boxes, classes, valid


def bench(name, fn, args, runs):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))  # warm-up
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  # The same function through jax.jit twice must compile once (static shapes, no retracing).
  jitted = jax.jit(fn)
  jax.block_until_ready(jitted(*args))
  jax.block_until_ready(jitted(*args))
  cache = jitted._cache_size() if hasattr(jitted, "_cache_size") else -1
  print(f"  {name:<10} compile {compile_s:7.2f} s   {1e3 * statistics.median(times):9.1f} ms/call "
        f"(median of {runs}, min {1e3 * min(times):.1f})   compilations after 2 calls: {cache}", flush=True)


def run_size(height, width, batch, runs, rng):
  anchors = anchor_ops.generate_anchors((height, width), 3, 7)
  slices = anchor_ops.level_slices((height, width), 3, 7, anchor_ops.num_anchors_per_location())
  num_anchors = anchors.shape[0]
  print(f"{height}x{width}: A={num_anchors} anchors, batch {batch}, {NUM_CLASSES} classes, "
        f"{MAX_GT} padded GT", flush=True)
  gt_boxes, gt_classes, gt_valid = (jnp.asarray(x) for x in random_gt(rng, batch, height, width))
  anchors_j = jnp.asarray(anchors)

  def match_fn(gb, gc, gv):
    m = jax.vmap(matching.match_anchors, in_axes=(None, 0, 0, 0))(anchors_j, gb, gc, gv)
    return (matching.class_targets(m, NUM_CLASSES), matching.box_targets(m, anchors_j, BOX_WEIGHTS),
            m.state)

  bench("matching", match_fn, (gt_boxes, gt_classes, gt_valid), runs)
  cls_t, box_t, state = jax.jit(match_fn)(gt_boxes, gt_classes, gt_valid)
  num_pos = jnp.maximum(jnp.sum(state == 1), 1).astype(jnp.float32)
  print(f"  (positives per image: {np.asarray(jnp.sum(state == 1, axis=1)).tolist()})")

  key = jax.random.PRNGKey(0)
  logits = jax.random.normal(key, (batch, num_anchors, NUM_CLASSES), jnp.float32) - 2.0
  deltas = 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (batch, num_anchors, 4), jnp.float32)

  def focal_fn(x, t, n):
    return jax.value_and_grad(lambda z: jnp.sum(sigmoid_focal_loss(z, t)) / n)(x)

  def smooth_l1_fn(d, t, s, n):
    def loss(z):
      per = jnp.sum(smooth_l1_loss(z, t, 1.0), axis=-1)
      return jnp.sum(jnp.where(s == 1, per, 0.0)) / n
    return jax.value_and_grad(loss)(d)

  bench("focal", focal_fn, (logits, cls_t, num_pos), runs)
  bench("smooth_l1", smooth_l1_fn, (deltas, box_t, state, num_pos), runs)

  image_hw = jnp.tile(jnp.array([[height, width]], jnp.float32), (batch, 1))
  detect_fn = functools.partial(generate_detections, anchors=anchors, level_slices=slices,
                                box_weights=BOX_WEIGHTS, score_threshold=0.05, pre_nms_topk=1000,
                                nms_iou=0.5, max_detections=100)
  bench("detect", lambda x, d, hw: detect_fn(x, d, image_hw=hw), (logits, deltas, image_hw), runs)
  det = jax.jit(lambda x, d, hw: detect_fn(x, d, image_hw=hw))(logits, deltas, image_hw)
  print(f"  (detections per image: {np.asarray(det.num_valid).tolist()})", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="512x512,800x1333", help="comma-separated HxW list")
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--batch", type=int, default=8)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
  rng = np.random.default_rng(0)
  for size in args.sizes.split(","):
    try:
      height, width = (int(v) for v in size.lower().split("x"))
    except ValueError:
      raise SystemExit(f"--sizes entries must look like 512x512; got {size!r}")
    run_size(height, width, args.batch, args.runs, rng)


if __name__ == "__main__":
  main()
