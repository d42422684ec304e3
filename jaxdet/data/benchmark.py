"""Embedded detection benchmark: real image data from pip packages, built on first use, no download.

Objects are real image crops pasted on random crops of real photos:

* ``face``: the 100 LFW face crops of ``skimage.data.lfw_subset()`` (skin-tone tinted);
* ``coin``: the 24 coins of ``skimage.data.coins()`` (found by top-hat + Otsu, elliptic mask,
  metallic tint);
* ``digit_0``, ``digit_4``, ``digit_7``: ``sklearn.datasets.load_digits`` glyphs, upscaled, drawn in
  a contrasting colour on a solid tile (light on dark or dark on light).

Backgrounds are crops of skimage / sklearn photos (coffee, chelsea, rocket, immunohistochemistry,
hubble_deep_field, stereo_motorcycle, colorwheel, retina, brick, grass, gravel, china, flower, and
the lower part of astronaut). Left out on purpose: ``camera`` and the upper part of ``astronaut``
(real, unannotated human faces), ``cat`` (same photo as chelsea), ``coins`` (the coin objects),
``page`` / ``text`` (glyphs that look like digits).

Each image is ``image_size`` square (default 128) with 1-6 objects whose side is log-uniform in
``[10, 56] * image_size / 128`` px (about two thirds are COCO-"small", < 32x32, as in the small
object experiments of MTGAN §4.1), aspect 0.8-1.25, at most 20% of the smaller box of
any pair occluded. Train and val use disjoint object instances (80%/20% of each pool), the same
photos. Every face annotation carries ``lfw_index``; ``{split}_faces.json`` holds the faces only
(a WIDER-FACE-like face split).

Instance masks (version 2, for Mask R-CNN): every annotation has a ``segmentation``, a COCO RLE
(``{"size": [h, w], "counts": str}``) of the object's *visible* pixels: a coin's ellipse (alpha
>= 0.5), a face's whole tile, a digit's glyph strokes (not its solid tile, so the mask is smaller
than the box); an object pasted later hides the parts of earlier ones under its opaque pixels, so
the masks of an image are disjoint (COCO masks are visible parts; at the default size every mask
is non-empty, but near the minimum ``image_size=32`` a 4-px digit's glyph can have no pixel
>= 0.5 and then an empty mask). ``area`` stays the box area ``w * h`` (as in version 1: COCO
eval's small / medium / large ranges, and the box AP numbers, stay comparable;
``pycocotools.mask.area`` gives the mask area). Version 2 images are byte-identical to version 1
for the same seed (same rng draws, same rendering).

The build is deterministic for a seed and atomic (temporary directory + rename), and cached at
``$JAXDET_DATA/benchmark_v2`` (else ``~/.cache/jaxdet/benchmark_v2``; the version is part of the
name, so a version-1 cache is left alone).

CLI: ``python -m jaxdet.data.benchmark --root DIR`` builds (if needed) and prints the statistics.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jaxdet.data.instance_masks import mask_to_rle

VERSION = 2  # 2: instance masks ("segmentation"); images identical to version 1 for a seed
CLASS_NAMES = ("face", "coin", "digit_0", "digit_4", "digit_7")
CATEGORY_IDS = (1, 2, 3, 4, 5)
_DIGITS = (0, 4, 7)
_SKIN = ((1.0, 0.80, 0.66), (0.95, 0.74, 0.58), (0.82, 0.60, 0.45), (0.62, 0.45, 0.33), (1.0, 0.88, 0.78))
_METAL = ((1.0, 0.84, 0.45), (0.90, 0.92, 0.96), (0.86, 0.60, 0.40))
_DEFAULTS = dict(num_train=1000, num_val=200, image_size=128, seed=0)


# ---------------------------------------------------------------------- source assets
def _load_assets(seed: int) -> dict:
  """Backgrounds and object templates, split into train / val object pools."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import skimage.data as skd
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from sklearn.datasets import load_digits, load_sample_images

  rgb = lambda a: np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]  # noqa: E731
  photos = [skd.coffee(), skd.chelsea(), skd.rocket(), skd.immunohistochemistry(),
            skd.hubble_deep_field(), skd.stereo_motorcycle()[0], skd.colorwheel(), skd.retina(),
            rgb(skd.brick()), rgb(skd.grass()), rgb(skd.gravel()), skd.astronaut()[230:]]
  photos += list(load_sample_images().images)
  backgrounds = [np.ascontiguousarray(p, dtype=np.uint8) for p in photos]

  faces = [f.astype(np.float32) for f in skd.lfw_subset()[:100]]

  coins_img = skd.coins().astype(np.float32)
  smooth = ndi.gaussian_filter(coins_img, 2)
  tophat = smooth - ndi.gaussian_filter(ndi.grey_opening(smooth, size=(81, 81)), 10)
  mask = ndi.binary_fill_holes(ndi.binary_opening(tophat > threshold_otsu(tophat), iterations=2))
  labels, _ = ndi.label(mask)
  coins = []
  for sl in ndi.find_objects(labels):
    crop = coins_img[max(sl[0].start - 1, 0):sl[0].stop + 1, max(sl[1].start - 1, 0):sl[1].stop + 1]
    if min(crop.shape) >= 20:
      coins.append(crop / 255.0)

  digits = load_digits()
  glyphs = {d: [g.astype(np.float32) / 16.0 for g in digits.images[digits.target == d]] for d in _DIGITS}

  rng = np.random.default_rng([seed, 99])
  pools = {"train": {}, "val": {}}
  def split(name, items):  # noqa: E306
    order = rng.permutation(len(items))
    cut = int(round(0.8 * len(items)))
    pools["train"][name] = [(int(k), items[k]) for k in order[:cut]]
    pools["val"][name] = [(int(k), items[k]) for k in order[cut:]]
  split("face", faces)
  split("coin", coins)
  for d in _DIGITS:
    split(f"digit_{d}", glyphs[d])
  return {"backgrounds": backgrounds, "pools": pools}


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
  """Bilinear (antialiased) resize of a float32 2-D map."""
  return np.asarray(Image.fromarray(a.astype(np.float32)).resize((w, h), Image.BILINEAR))


def _ellipse(w: int, h: int) -> np.ndarray:
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  r = np.sqrt(((xx + 0.5) / w * 2 - 1) ** 2 + ((yy + 0.5) / h * 2 - 1) ** 2)
  return np.clip((1.0 - r) * min(w, h) / 2 + 0.5, 0.0, 1.0)  # ~1 px soft edge


def _render(name: str, template: np.ndarray, w: int, h: int,
            rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Object pixels (float32 [h, w, 3] in 0..255), alpha ([h, w]) and the object's mask (bool
  [h, w]: the whole tile for a face, ``alpha >= 0.5`` for a coin, the glyph strokes
  ``glyph >= 0.5`` for a digit, not its solid tile); the box is the full tile."""
  if name == "face":
    t = template[:, ::-1] if rng.random() < 0.5 else template
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    tone = np.array(_SKIN[rng.integers(len(_SKIN))], np.float32) * rng.uniform(0.8, 1.1)
    return (_resize(t, w, h)[..., None] * 255.0 * tone, np.ones((h, w), np.float32),
            np.ones((h, w), bool))
  if name == "coin":
    t = (template - template.min()) / max(float(np.ptp(template)), 1e-6)
    tone = np.array(_METAL[rng.integers(len(_METAL))], np.float32) * rng.uniform(0.85, 1.1)
    alpha = _ellipse(w, h)
    return (0.15 + 0.85 * _resize(t, w, h))[..., None] * 255.0 * tone, alpha, alpha >= 0.5
  glyph = np.clip((_resize(template, w, h) - 0.25) / 0.5, 0.0, 1.0)[..., None]
  dark = rng.uniform(0, 70, size=3).astype(np.float32)
  light = rng.uniform(190, 255, size=3).astype(np.float32)
  fg, bg = (light, dark) if rng.random() < 0.5 else (dark, light)
  return glyph * fg + (1.0 - glyph) * bg, np.ones((h, w), np.float32), glyph[..., 0] >= 0.5


def _make_image(rng, assets: dict, split: str, size: int):
  """One composite image (uint8 [size, size, 3]), its objects and their visible masks.

  ``masks`` (bool [n, size, size]) are the objects' masks (``_render``) minus the opaque parts
  (``alpha >= 0.5``) of the objects pasted after them: COCO masks are the visible parts. The rng
  draws and the rendering are those of version 1 (same images for a seed).
  """
  bgs = assets["backgrounds"]
  photo = bgs[rng.integers(len(bgs))]
  ph, pw = photo.shape[:2]
  side = int(max(64, rng.uniform(0.25, 1.0) * min(ph, pw)))
  side = min(side, ph, pw)
  y0, x0 = rng.integers(0, ph - side + 1), rng.integers(0, pw - side + 1)
  bg = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
  canvas = np.asarray(bg, np.float32)
  if rng.random() < 0.5:
    canvas = canvas[:, ::-1]
  canvas = np.array(canvas)

  objects, placed, masks = [], [], []
  smin, smax = 10.0 * size / 128, 56.0 * size / 128
  for _ in range(int(rng.integers(1, 7))):
    cls = int(rng.integers(len(CLASS_NAMES)))
    name = CLASS_NAMES[cls]
    s = float(np.exp(rng.uniform(np.log(smin), np.log(smax))))
    a = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    w, h = max(4, int(round(s * np.sqrt(a)))), max(4, int(round(s / np.sqrt(a))))
    for _try in range(20):
      x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
      ok = True
      for (px, py, pw_, ph_) in placed:
        iw = min(x + w, px + pw_) - max(x, px)
        ih = min(y + h, py + ph_) - max(y, py)
        if iw > 0 and ih > 0 and iw * ih > 0.2 * min(w * h, pw_ * ph_):
          ok = False
          break
      if ok:
        break
    else:
      continue
    pool = assets["pools"][split][name]
    src_index, template = pool[rng.integers(len(pool))]
    pix, alpha, obj_mask = _render(name, template, w, h, rng)
    region = canvas[y:y + h, x:x + w]
    canvas[y:y + h, x:x + w] = pix * alpha[..., None] + region * (1.0 - alpha[..., None])
    for earlier in masks:  # the new object hides what it covers (opaquely) of earlier objects
      earlier[y:y + h, x:x + w] &= alpha < 0.5
    full = np.zeros((size, size), bool)
    full[y:y + h, x:x + w] = obj_mask
    masks.append(full)
    placed.append((x, y, w, h))
    objects.append((cls, (x, y, w, h), name, src_index))
  canvas += rng.normal(0.0, 2.0, size=canvas.shape).astype(np.float32)
  masks = np.stack(masks) if masks else np.zeros((0, size, size), bool)
  return np.clip(np.round(canvas), 0, 255).astype(np.uint8), objects, masks


_SOURCE = {"face": "lfw_subset", "coin": "coins", "digit_0": "load_digits", "digit_4": "load_digits",
           "digit_7": "load_digits"}


def build_benchmark(out_dir, *, num_train: int, num_val: int, image_size: int, seed: int,
                    verbose: bool = True) -> dict:
  """Writes the benchmark into ``out_dir`` (not atomic; ``ensure_benchmark`` is). Returns meta."""
  t0 = time.time()
  out_dir = Path(out_dir)
  assets = _load_assets(seed)
  categories = [{"id": i, "name": n, "supercategory": "object"} for i, n in zip(CATEGORY_IDS, CLASS_NAMES)]
  stats = {}
  for split, count, split_tag, id_base in (("train", num_train, 0, 0), ("val", num_val, 1, 1_000_000)):
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    images, anns, faces = [], [], []
    for i in range(count):
      rng = np.random.default_rng([seed, split_tag, i])
      img, objects, masks = _make_image(rng, assets, split, image_size)
      image_id, file_name = id_base + i + 1, f"{i:06d}.png"
      Image.fromarray(img).save(out_dir / split / file_name, compress_level=1)
      images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
      for (cls, (x, y, w, h), name, src), mask in zip(objects, masks):
        ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[cls],
               "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
               "segmentation": mask_to_rle(mask), "source": f"{_SOURCE[name]}[{src}]"}
        if name == "face":
          ann["lfw_index"] = src
          faces.append(dict(ann, id=len(faces) + 1, category_id=1))
        anns.append(ann)
      if verbose and ((i + 1) % 250 == 0 or i + 1 == count):
        print(f"  benchmark {split}: {i + 1}/{count} images ({time.time() - t0:.1f}s)", flush=True)
    info = {"description": f"jaxdet embedded benchmark v{VERSION} ({split})", "version": str(VERSION)}
    for fname, a, cats in ((f"{split}.json", anns, categories), (f"{split}_faces.json", faces, categories[:1])):
      with open(out_dir / fname, "w") as f:
        json.dump({"info": info, "images": images, "annotations": a, "categories": cats}, f)
    areas = np.array([a["area"] for a in anns], np.float64)
    stats[split] = {
        "images": count, "objects": len(anns),
        "per_class": {n: sum(a["category_id"] == c for a in anns) for c, n in zip(CATEGORY_IDS, CLASS_NAMES)},
        "small": int((areas < 32 ** 2).sum()), "medium": int(((areas >= 32 ** 2) & (areas < 96 ** 2)).sum()),
        "large": int((areas >= 96 ** 2).sum()), "images_without_objects": count - len({a["image_id"] for a in anns}),
    }
  meta = {"version": VERSION, "num_train": num_train, "num_val": num_val, "image_size": image_size,
          "seed": seed, "class_names": list(CLASS_NAMES), "category_ids": list(CATEGORY_IDS),
          "stats": stats, "build_seconds": round(time.time() - t0, 2)}
  with open(out_dir / "meta.json", "w") as f:  # written last: marks a complete build
    json.dump(meta, f, indent=1)
  return meta


def _paths(root: Path, meta: dict) -> dict:
  return {"root": str(root), "train_json": str(root / "train.json"), "train_images": str(root / "train"),
          "val_json": str(root / "val.json"), "val_images": str(root / "val"),
          "train_faces_json": str(root / "train_faces.json"), "val_faces_json": str(root / "val_faces.json"),
          "class_names": list(meta["class_names"]), "category_ids": list(meta["category_ids"]),
          "num_classes": len(meta["class_names"]), "image_size": meta["image_size"], "stats": meta["stats"]}


def default_root(num_train=1000, num_val=200, image_size=128, seed=0) -> Path:
  base = Path(os.environ["JAXDET_DATA"]) if os.environ.get("JAXDET_DATA") else Path.home() / ".cache" / "jaxdet"
  name = f"benchmark_v{VERSION}"
  if dict(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed) != _DEFAULTS:
    name += f"-n{num_train}-{num_val}-s{image_size}-seed{seed}"
  return base / name


def ensure_benchmark(root=None, *, num_train: int = 1000, num_val: int = 200, image_size: int = 128,
                     seed: int = 0, verbose: bool = True) -> dict:
  """Returns paths of the benchmark, building it first if ``root`` holds no complete build.

  Keys: root, train_json, train_images, val_json, val_images, train_faces_json, val_faces_json,
  class_names, category_ids, num_classes, image_size, stats. Raises ValueError if ``root`` holds
  a build with other parameters.
  """
  if num_train < 1 or num_val < 1 or image_size < 32:
    raise ValueError(f"need num_train >= 1, num_val >= 1, image_size >= 32; got {num_train}, {num_val}, {image_size}")
  root = Path(root) if root is not None else default_root(num_train, num_val, image_size, seed)
  want = {"version": VERSION, "num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}

  def existing():
    try:
      with open(root / "meta.json") as f:
        meta = json.load(f)
    except FileNotFoundError:
      return None
    got = {k: meta.get(k) for k in want}
    if got != want:
      raise ValueError(f"'{root}' holds a benchmark built with {got}, not {want}; pass another root "
                       "or delete that directory.")
    return meta

  meta = existing()
  if meta is not None:
    return _paths(root, meta)
  if root.exists() and any(root.iterdir()):
    raise ValueError(f"'{root}' exists, is not empty and has no meta.json (not a complete benchmark "
                     "build); pass another root or delete that directory.")
  root.parent.mkdir(parents=True, exist_ok=True)
  for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by killed builds
    if time.time() - stale.stat().st_mtime > 3600:
      shutil.rmtree(stale, ignore_errors=True)
  tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  if verbose:
    print(f"Building the jaxdet benchmark in {root} (once; {num_train}+{num_val} images) ...", flush=True)
  try:
    meta = build_benchmark(tmp, num_train=num_train, num_val=num_val, image_size=image_size,
                           seed=seed, verbose=verbose)
    if root.exists():
      root.rmdir()  # empty directory (checked above)
    os.rename(tmp, root)
  except OSError:
    if existing() is None:  # not a concurrent build that finished first
      raise
    meta = existing()
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  if verbose:
    print(f"Benchmark ready in {meta['build_seconds']}s: {json.dumps(meta['stats'])}", flush=True)
  return _paths(root, meta)


def draw_boxes(image: np.ndarray, boxes_xywh, labels) -> Image.Image:
  """A PIL image with the boxes and labels drawn (for looking at the data)."""
  img = Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 3), Image.NEAREST)
  draw = ImageDraw.Draw(img)
  for (x, y, w, h), label in zip(boxes_xywh, labels):
    draw.rectangle([3 * x, 3 * y, 3 * (x + w) - 1, 3 * (y + h) - 1], outline=(255, 0, 0), width=2)
    draw.text((3 * x + 2, 3 * y + 1), str(label), fill=(255, 255, 0))
  return img


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description="Build the jaxdet embedded benchmark and print its statistics.")
  p.add_argument("--root", default=None,
                 help=f"output directory (default: $JAXDET_DATA/benchmark_v{VERSION} "
                      f"or ~/.cache/jaxdet/benchmark_v{VERSION})")
  p.add_argument("--num-train", type=int, default=1000)
  p.add_argument("--num-val", type=int, default=200)
  p.add_argument("--image-size", type=int, default=128)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--preview", type=int, default=0, help="save this many val images with boxes drawn")
  a = p.parse_args(argv)
  info = ensure_benchmark(a.root, num_train=a.num_train, num_val=a.num_val, image_size=a.image_size, seed=a.seed)
  print(json.dumps({k: info[k] for k in ("root", "class_names", "stats")}, indent=1))
  if a.preview:
    with open(info["val_json"]) as f:
      val = json.load(f)
    names = dict(zip(info["category_ids"], info["class_names"]))
    for im in val["images"][: a.preview]:
      objs = [o for o in val["annotations"] if o["image_id"] == im["id"]]
      image = np.asarray(Image.open(Path(info["val_images"]) / im["file_name"]).convert("RGB"))
      out = Path(info["root"]) / f"preview_{im['id']}.png"
      draw_boxes(image, [o["bbox"] for o in objs], [names[o["category_id"]] for o in objs]).save(out)
      print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
