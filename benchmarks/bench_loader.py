"""Throughput of the host input pipeline: ``DetectionLoader`` threads vs grain processes.

Builds (once, cached under ``--cache``) N synthetic COCO-sized JPEGs (long side 640, short side
360-640, a quarter portrait; gradients, blobs, shapes and noise, quality 90) with a COCO instances
JSON, then with COCO's train settings (short side 800, max side 1333, hflip, padded to 1344x1344
and to 800x1344) measures:

  split    single-thread ms per image of JPEG decode (PIL), hflip (timed on every image; prepare
           flips half), resize, pad, collate, and of the whole ``DetectionLoader.prepare``;
  threads  ``DetectionLoader`` img/s for each ``--workers`` (a thread pool in one process);
  grain    the same ``prepare`` / ``collate`` as a grain ``MapDataset`` over global steps
           (``range -> map(prepare) -> batch(collate)``, ``mp_prefetch`` worker processes;
           0 workers: in-process), plus a checkpoint / restore of its iterator state.

CPU seconds (this process and its children, psutil) are taken over the timed batches, so
"img/core-s" (images per CPU-second) is the per-core cost even when other processes compete for
the cores; "cores" is CPU-seconds per wall-second. Every measurement is the best of ``--repeats``.
The verdict divides device rates (RetinaNet R50-FPN train 800x1344 on an H100: 218 img/s;
inference goal: 400 img/s) by img/core-s.

    .venv/bin/pip install grain psutil   # benchmark-only dependencies (not in jaxdet's extras)
    .venv/bin/python benchmarks/bench_loader.py [--images 256] [--batch 8] [--workers 0 1 2 4]
        [--steps 20] [--grain-workers 0 1 2] [--no-grain] [--cache /tmp/jaxdet_bench_loader]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jaxdet.data import transforms
from jaxdet.data.coco_json import CocoJsonSource, read_rgb
from jaxdet.data.detection_loader import DetectionLoader

SIZES = {"1344x1344": (1344, 1344), "800x1344": (800, 1344)}
TRAIN = dict(short_side=800, max_side=1333, hflip=True, max_boxes=100, train=True, seed=0)
DEVICE_RATES = (("RetinaNet R50-FPN train 800x1344, H100", 218), ("inference goal", 400))


# ------------------------------------------------------------------ synthetic COCO-like data
def render(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """An ``h x w`` RGB image: colour gradient + smooth blobs + filled shapes + sensor noise."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  img = (rng.uniform(0, 255, 3) * (x / w)[..., None] + rng.uniform(0, 255, 3) * (y / h)[..., None])
  img /= 2
  for cell, amplitude in ((32, 60), (4, 25)):  # smooth blobs, then finer texture
    grid = rng.uniform(0, 255, (h // cell + 2, w // cell + 2, 3)).astype(np.uint8)
    layer = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
    img += (layer / 255 - 0.5) * 2 * amplitude
  for _ in range(rng.integers(4, 12)):
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, min(h, w) / 3)
    mask = (np.abs(y - cy) < r) & (np.abs(x - cx) < r * rng.uniform(0.5, 2)) if rng.random() < 0.5 \
        else (y - cy) ** 2 + (x - cx) ** 2 < r * r
    img[mask] = img[mask] * 0.3 + rng.uniform(0, 255, 3) * 0.7
  img += rng.normal(0, 10, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(cache: str, n: int, seed: int = 0) -> tuple[str, str]:
  """Writes (once) ``n`` JPEGs and their instances JSON; returns ``(json path, image dir)``."""
  root = os.path.join(cache, f"coco_like_{n}")
  ann_file, image_dir = os.path.join(root, "instances.json"), os.path.join(root, "images")
  if os.path.exists(ann_file):
    return ann_file, image_dir
  os.makedirs(image_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  images, anns = [], []
  for i in range(1, n + 1):
    short = int(rng.choice([360, 400, 427, 480, 480, 480, 512, 640]) if rng.random() < 0.9
                else rng.integers(360, 641))
    h, w = (640, short) if rng.random() < 0.25 else (short, 640)
    name = f"{i:012d}.jpg"
    Image.fromarray(render(rng, h, w)).save(os.path.join(image_dir, name), quality=90)
    images.append(dict(id=i, file_name=name, height=h, width=w))
    for _ in range(rng.integers(1, 8)):
      bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
      bx, by = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      anns.append(dict(id=len(anns) + 1, image_id=i, category_id=int(rng.integers(1, 81)),
                       bbox=[bx, by, bw, bh], area=bw * bh, iscrowd=0))
  cats = [dict(id=c, name=f"class{c}") for c in range(1, 81)]
  with open(ann_file + ".tmp", "w") as f:
    json.dump(dict(images=images, annotations=anns, categories=cats), f)
  os.replace(ann_file + ".tmp", ann_file)
  return ann_file, image_dir


def build_loader(ann_file: str, image_dir: str, image_size, batch: int, workers: int):
  return DetectionLoader(CocoJsonSource(ann_file, image_dir), batch_size=batch,
                         image_size=image_size, num_workers=workers, **TRAIN)


# ------------------------------------------------------------------ timing
def cpu_times() -> dict[int, float]:
  """User + system CPU seconds of this process and of each live child process, by pid."""
  me, out = psutil.Process(), {}
  for p in [me] + me.children(recursive=True):
    with contextlib.suppress(psutil.Error):
      out[p.pid] = sum(p.cpu_times()[:2])
  return out


def time_batches(batches, warmup: int, steps: int) -> tuple[float, float, float]:
  """``(seconds to the first batch, wall s, CPU s)`` of ``steps`` batches after ``warmup``."""
  t0 = time.perf_counter()
  next(batches)
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):
    next(batches)
  cpu0, t1 = cpu_times(), time.perf_counter()
  for _ in range(steps):
    next(batches)
  wall, cpu1 = time.perf_counter() - t1, cpu_times()
  return first, wall, sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())


def best_of(repeats: int, run) -> dict:
  """The run with the highest img/s of ``repeats`` calls of ``run() -> (first, wall, cpu)``."""
  results = [run() for _ in range(repeats)]
  return min((dict(first=f, wall=w, cpu=c) for f, w, c in results), key=lambda r: r["wall"])


def cost_split(loader: DetectionLoader, count: int, repeats: int) -> dict[str, float]:
  """Single-thread ms per image of each stage of ``prepare`` (best pass of ``repeats``)."""
  src, out_h, out_w = loader.source, *loader.image_size
  count = min(count, len(src))
  best: dict[str, float] = {}
  for _ in range(repeats):
    t = dict.fromkeys(("decode", "hflip", "resize", "pad", "collate", "prepare"), 0.0)
    prepared = []
    for i in range(count):
      ann = src.annotation(i)
      t0 = time.perf_counter()
      image = read_rgb(src.image_path(i))
      t1 = time.perf_counter()
      image, boxes = transforms.horizontal_flip(image, ann.boxes)
      t2 = time.perf_counter()
      image, boxes = transforms.resize_by_scale(image, boxes, loader.resize_scale(*image.shape[:2]))
      t3 = time.perf_counter()
      transforms.pad_to(image, out_h, out_w)
      t4 = time.perf_counter()
      prepared.append(loader.prepare(i, i))
      t5 = time.perf_counter()
      for key, dt in zip(("decode", "hflip", "resize", "pad", "prepare"),
                         (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
        t[key] += dt
    t0 = time.perf_counter()
    for k in range(0, count, loader.batch_size):
      loader.collate(prepared[k:k + loader.batch_size])
    t["collate"] = time.perf_counter() - t0
    ms = {key: 1e3 * v / count for key, v in t.items()}
    best = {key: min(v, best.get(key, np.inf)) for key, v in ms.items()}
  return best


# ------------------------------------------------------------------ DetectionLoader threads
def bench_threads(make, workers: int, warmup: int, steps: int, repeats: int) -> dict:
  def run():
    batches = make(workers).iterate(0)
    try:
      return time_batches(batches, warmup, steps)
    finally:
      batches.close()
  return best_of(repeats, run)


# ------------------------------------------------------------------ grain
class StepWork:
  """Picklable handle on a ``DetectionLoader``: grain workers rebuild it lazily in their process.

  ``example(position)`` is ``prepare`` of global ``position`` at the loader's own source index,
  so a grain ``MapDataset`` over positions yields exactly the ``DetectionLoader`` batches.
  """

  def __init__(self, make):
    self.make, self._loader = make, None

  def __getstate__(self):
    return {"make": self.make, "_loader": None}

  @property
  def loader(self) -> DetectionLoader:
    if self._loader is None:
      self._loader = self.make()
    return self._loader

  def example(self, position: int) -> dict:
    ld = self.loader
    position = int(position)
    return ld.prepare(position, ld.indices(position // ld.batch_size)[position % ld.batch_size])

  def collate(self, examples) -> dict:
    return self.loader.collate(list(examples))


def grain_dataset(work: StepWork, batch: int, steps: int, workers: int):
  """Batches ``0 .. steps-1`` (the MapDataset index is the step), ``workers`` processes."""
  import grain
  ds = grain.MapDataset.range(steps * batch).map(work.example).batch(batch, batch_fn=work.collate)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)) if workers else ds


def bench_grain(work: StepWork, batch: int, workers: int, warmup: int, steps: int,
                repeats: int) -> dict:
  def run():
    it = iter(grain_dataset(work, batch, warmup + steps + 2 * workers, workers))
    try:
      return time_batches(it, warmup + workers, steps)
    finally:
      it.close()
  return best_of(repeats, run)


def check_grain_resume(work: StepWork, make, batch: int, workers: int) -> str:
  """Checkpoints a grain iterator after 3 batches, restores it in a fresh iterator and compares
  batches 3, 4 with the uninterrupted run and with ``DetectionLoader.iterate(3)``."""
  ds = grain_dataset(work, batch, 8, workers)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  ref = [next(it) for _ in range(2)]
  it.close()
  it = iter(ds)
  it.set_state(state)
  got = [next(it) for _ in range(2)]
  it.close()
  loader = make(0).iterate(3)
  ours = [next(loader) for _ in range(2)]
  same = lambda a, b: all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)  # noqa: E731
  return (f"state {str(state)[:90]}...; restored == uninterrupted: {same(got, ref)}; "
          f"== DetectionLoader.iterate(3): {same(got, ours)}")


# ------------------------------------------------------------------ report
def row(name: str, images: int, r: dict) -> float:
  """Prints one table row; returns images per CPU-second."""
  per_core = images / r["cpu"]
  print(f"  {name:<22} {images / r['wall']:8.1f} {per_core:12.1f} {r['cpu'] / r['wall']:7.2f} "
        f"{r['first']:11.2f}")
  return per_core


def bench_size(a, ann_file: str, image_dir: str, size_name: str) -> dict[tuple[str, int], float]:
  """Split, thread and grain runs at one padded size; returns img/core-s by (kind, workers)."""
  make = functools.partial(build_loader, ann_file, image_dir, SIZES[size_name], a.batch)
  print(f"\n== padded to {size_name} (short side 800, max side 1333, hflip) ==")
  split = cost_split(make(0), 64, a.repeats)
  print("  single thread, ms/image: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
  print(f"  {'pipeline':<22} {'img/s':>8} {'img/core-s':>12} {'cores':>7} {'1st batch s':>11}")
  images, out = a.batch * a.steps, {}
  for w in a.workers:
    r = bench_threads(make, w, a.warmup, a.steps, a.repeats)
    out["threads", w] = row(f"threads  workers={w}", images, r)
  if a.no_grain:
    return out
  work = StepWork(functools.partial(make, 0))
  for w in a.grain_workers:
    r = bench_grain(work, a.batch, w, a.warmup, a.steps, a.repeats)
    out["grain", w] = row(f"grain    workers={w}", images, r)
  w = max(a.grain_workers)
  print(f"  grain resume ({w} workers): {check_grain_resume(work, make, a.batch, w)}")
  return out


def print_verdict(per_core: dict[tuple[str, str, int], float]) -> None:
  print("\n== cores needed = device rate / img per core-second (best run with >= 2 workers) ==")
  for size_name, kind in dict.fromkeys((s, k) for s, k, _ in per_core):
    runs = {w: v for (s, k, w), v in per_core.items() if (s, k) == (size_name, kind)}
    w, v = max(({w: v for w, v in runs.items() if w >= 2} or runs).items(), key=lambda kv: kv[1])
    need = ", ".join(f"{rate} img/s: {rate / v:.1f}" for _, rate in DEVICE_RATES)
    print(f"  {size_name:<9} {kind:<7} workers={w:<2} {v:6.1f} img/core-s -> cores for {need}")
  print("  (" + "; ".join(f"{rate} img/s = {what}" for what, rate in DEVICE_RATES) + ")")


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--images", type=int, default=256)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
  p.add_argument("--grain-workers", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
  p.add_argument("--no-grain", action="store_true")
  p.add_argument("--cache", default="/tmp/jaxdet_bench_loader")
  a = p.parse_args()

  t0 = time.perf_counter()
  ann_file, image_dir = make_dataset(a.cache, a.images)
  kib = np.mean([os.path.getsize(e.path) for e in os.scandir(image_dir)]) / 1024
  print(f"data: {a.images} JPEGs in {image_dir} (mean {kib:.0f} KiB, ready in "
        f"{time.perf_counter() - t0:.1f}s); cpus: {len(os.sched_getaffinity(0))}; batch {a.batch}, "
        f"{a.steps} timed batches after {a.warmup} warm-up, best of {a.repeats}")
  if not a.no_grain:
    import grain
    from absl import flags
    flags.FLAGS.mark_as_parsed()  # grain reads its absl flags; mp_prefetch fails if unparsed
    print(f"grain {grain.__version__}")
  per_core = {}
  for size_name in a.sizes:
    for (kind, w), v in bench_size(a, ann_file, image_dir, size_name).items():
      per_core[size_name, kind, w] = v
  print_verdict(per_core)

if __name__ == "__main__":
  main()
