"""COCO box evaluation time: pycocotools against faster-coco-eval on the same detections.

A synthetic COCO-sized split (``--images`` images of 640x480, 7 objects each over 80 classes,
``--dets`` detections per image: the objects jittered plus random boxes) evaluated with both
``config.eval.coco_backend`` values; prints seconds and checks the six metrics agree.

    python benchmarks/bench_coco_eval.py --images 5000 --dets 100
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np


def synthetic(num_images: int, dets_per_image: int, seed: int = 0):
  from pycocotools.coco import COCO
  rng = np.random.default_rng(seed)
  images, anns, results = [], [], []
  for i in range(1, num_images + 1):
    images.append({"id": i, "width": 640, "height": 480})
    wh = np.exp(rng.uniform(np.log(8), np.log(300), (7, 2)))
    xy = rng.uniform(0, 1, (7, 2)) * (np.array([640, 480]) - wh)
    cls = rng.integers(1, 81, 7)
    for b, c in zip(np.concatenate([xy, wh], 1), cls):
      anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": b.tolist(),
                   "area": float(b[2] * b[3]), "iscrowd": 0})
    for k in range(dets_per_image):
      if k < 7:   # a jittered object
        b = np.concatenate([xy[k] + wh[k] * rng.normal(0.0, 0.08, 2),
                            wh[k] * rng.normal(1.0, 0.08, 2)])
        c = int(cls[k])
      else:       # background
        b = np.concatenate([rng.uniform(0, 500, 2), rng.uniform(5, 140, 2)])
        c = int(rng.integers(1, 81))
      results.append({"image_id": i, "category_id": c, "bbox": b.tolist(),
                      "score": float(rng.uniform(0.5, 1.0) if k < 7 else rng.uniform(0.0, 0.8))})
  gt = COCO()
  gt.dataset = {"images": images, "annotations": anns,
                "categories": [{"id": c, "name": str(c)} for c in range(1, 81)]}
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
  return gt, results


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--images", type=int, default=5000)
  p.add_argument("--dets", type=int, default=100)
  args = p.parse_args()
  from jaxdet.evaluation.coco import COCO_BACKENDS, evaluate_coco
  gt, results = synthetic(args.images, args.dets)
  print(f"{args.images} images, {len(gt.anns)} objects, {len(results)} detections")
  metrics = {}
  for backend in COCO_BACKENDS:
    t0 = time.perf_counter()
    metrics[backend] = evaluate_coco(gt, results, backend=backend)
    print(f"  {backend:16s} {time.perf_counter() - t0:7.2f} s   AP {metrics[backend]['AP']:.4f}",
          flush=True)
  a, b = (metrics[k] for k in COCO_BACKENDS)
  same = all((np.isnan(a[k]) and np.isnan(b[k])) or abs(a[k] - b[k]) < 1e-9 for k in a)
  print(f"  same six metrics: {same}")


if __name__ == "__main__":
  main()
