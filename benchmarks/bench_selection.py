"""Inference candidate selection: ``lax.top_k`` over every (anchor, class) pair vs the exact
bounded ``jaxdet.ops.postprocess.top_k_pairs`` (a script, not a test).

For each size: RetinaNet anchors P3-P7 x 9, 80 classes, per-level k = 1000, logits drawn like a
trained head's (mostly background, N(-6, 1.5), a few hundred confident pairs). Prints the median
ms of (a) the five levels' selection alone and (b) the whole ``generate_detections`` (selection,
decode, clip, class-aware NMS) with each selection, checks the two give identical detections,
and prints the speed-up. On the GPU this is the 70 of 85 ms per batch of issue 13.

  python benchmarks/bench_selection.py --sizes 512x512,800x1344 --batch 8
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

from jaxdet.ops import anchors as anchor_ops
from jaxdet.ops import postprocess as P


def full_top_k(logits, k):
  return jax.lax.top_k(logits.reshape(logits.shape[0], -1), k)


def median_ms(fn, args, runs):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def run_size(height, width, batch, num_classes, runs, dtype):
  anchors = anchor_ops.generate_anchors((height, width), 3, 7)
  slices = anchor_ops.level_slices((height, width), 3, 7, 9)
  rng = np.random.default_rng(0)
  logits = rng.normal(-6.0, 1.5, (batch, len(anchors), num_classes)).astype(np.float32)
  hot = rng.integers(0, logits.size, 300 * batch)
  logits.reshape(-1)[hot] = rng.uniform(0, 4, hot.size)
  logits = jnp.asarray(logits, dtype)
  deltas = jnp.asarray(rng.normal(0, 0.2, (batch, len(anchors), 4)), jnp.float32)
  image_hw = jnp.tile(jnp.array([[height, width]], jnp.float32), (batch, 1))
  print(f"{height}x{width}: {len(anchors)} anchors x {num_classes} classes, batch {batch}, {dtype}")

  def select_all(select, x):
    return [select(x[:, a:b], min(1000, (b - a) * num_classes)) for a, b in slices]

  detect = functools.partial(P.generate_detections, anchors=anchors, level_slices=slices,
                             box_weights=(1.0, 1.0, 1.0, 1.0))
  results = {}
  for name, select in (("full top-k", full_top_k), ("top_k_pairs", P.top_k_pairs)):
    sel_ms = median_ms(jax.jit(functools.partial(select_all, select)), (logits,), runs)
    saved, P.top_k_pairs = P.top_k_pairs, select   # generate_detections looks it up at trace time
    try:
      det_fn = jax.jit(lambda x, d, hw: detect(x, d, image_hw=hw))
      det_ms = median_ms(det_fn, (logits, deltas, image_hw), runs)
      results[name] = det_fn(logits, deltas, image_hw)
    finally:
      P.top_k_pairs = saved
    print(f"  {name:12s} selection {sel_ms:9.2f} ms   generate_detections {det_ms:9.2f} ms "
          f"({1e3 * batch / det_ms:7.1f} img/s)", flush=True)
    results[name + " ms"] = (sel_ms, det_ms)
  same = all(np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(results["full top-k"], results["top_k_pairs"]))
  (s0, d0), (s1, d1) = results["full top-k ms"], results["top_k_pairs ms"]
  print(f"  identical detections: {same};  speed-up selection {s0 / s1:.2f}x, "
        f"generate_detections {d0 / d1:.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="512x512,800x1344", help="comma-separated HxW list")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--classes", type=int, default=80)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} x{jax.device_count()}")
  for size in args.sizes.split(","):
    h, w = (int(v) for v in size.lower().split("x"))
    run_size(h, w, args.batch, args.classes, args.runs, jnp.dtype(args.dtype))


if __name__ == "__main__":
  main()
