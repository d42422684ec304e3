"""``--mode=predict``: a folder of images -> COCO-style detections JSON + drawn PNGs.

Uses the latest checkpoint in the workdir. Boxes are in original image pixels
(COCO xywh) with the dataset's original category ids and names.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class FolderSource:
  """Images of a folder as a detection source without annotations."""

  def __init__(self, folder: str, category_ids, class_names):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"config.predict.input_dir={folder!r} is not a folder of images.")
    self.files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not self.files:
      raise FileNotFoundError(f"config.predict.input_dir={folder!r} holds no "
                              f"{'/'.join(IMAGE_EXTENSIONS)} images.")
    self.folder = folder
    self.category_ids = list(category_ids)
    self.class_names = list(class_names)
    self.num_classes = len(self.category_ids)
    self.image_ids = list(range(len(self.files)))

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    from jaxdet.data.records import DetectionExample
    path = os.path.join(self.folder, self.files[i])
    try:
      image = np.asarray(Image.open(path).convert("RGB"))
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
      raise ValueError(f"Cannot read image {path}: {e}") from e
    return DetectionExample(image=image, boxes=np.zeros((0, 4), np.float32),
                            classes=np.zeros((0,), np.int32), image_id=i,
                            file_name=self.files[i])


def draw_detections(image: np.ndarray, dets: list[dict], names: dict, threshold: float):
  """Returns a PIL image with COCO-style detections above ``threshold`` drawn."""
  im = Image.fromarray(image)
  draw = ImageDraw.Draw(im)
  for d in dets:
    if d["score"] < threshold:
      continue
    x, y, w, h = d["bbox"]
    draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=2)
    draw.text((x + 2, y + 1), f"{names.get(d['category_id'], d['category_id'])} {d['score']:.2f}",
              fill=(255, 255, 0))
  return im


def predict_folder(experiment, workdir: str) -> dict:
  import jax
  from jaxdet.train import checkpoint as ckpt_lib
  from jaxdet.train import loop

  cfg = experiment.config.predict
  source = FolderSource(cfg.input_dir, experiment.train_source.category_ids,
                        experiment.train_source.class_names)
  checkpointer = ckpt_lib.Checkpointer(workdir)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f"--mode=predict found no checkpoint under {checkpointer.directory}.")
  state, _ = loop.init_or_restore(experiment, workdir, checkpointer)
  checkpointer.close()
  results = experiment.detect(state, experiment.eval_batches(source=source))
  out_dir = cfg.output_dir or os.path.join(workdir, "predictions")
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    for r in results:
      r["file_name"] = source.files[r["image_id"]]
    with open(os.path.join(out_dir, "detections.json"), "w") as f:
      json.dump(results, f)
    names = dict(zip(source.category_ids, source.class_names))
    by_image: dict[int, list] = {}
    for r in results:
      by_image.setdefault(r["image_id"], []).append(r)
    for i, name in enumerate(source.files):
      im = draw_detections(source[i].image, by_image.get(i, []), names, cfg.draw_threshold)
      im.save(os.path.join(out_dir, os.path.splitext(name)[0] + "_det.png"))
    print(f"Wrote {len(results)} detections for {len(source)} images to {out_dir}/")
  return {"num_images": len(source), "num_detections": len(results)}
