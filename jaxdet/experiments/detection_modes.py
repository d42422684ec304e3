"""The detector modes besides train and eval: ``predict`` and ``robustness``.

* ``--mode=predict``: a folder of images (``config.predict.input_dir``) -> COCO-style
  detections JSON (original pixels, the training dataset's category ids, plus ``file_name``)
  and one ``*_det.png`` per image with the boxes above ``config.predict.draw_threshold`` drawn.
* ``--mode=robustness``: AP50 of a trained detector under the corruptions of AP-loss
  (Chen et al., Sec. 5.3, Table 3: black / random / flipped patch at each object's centre,
  Gaussian noise with sigma^2 = 0.01), next to the clean score. Each corruption is applied to
  the original image with its ground-truth boxes before resizing (``jaxdet.data.corruptions``),
  with a per-image RNG so the numbers are reproducible. Results: ``<workdir>/robustness.json``
  and one line per run in ``<workdir>/robustness_metrics.jsonl``.

Both restore the latest checkpoint of the workdir read-only.
"""
from __future__ import annotations

import json
import os

import jax

from jaxdet.data import corruptions
from jaxdet.train import loop
from jaxdet.train.reporting import Reporter


def predict_folder(experiment, workdir: str) -> dict:
  from jaxdet import visualize
  cfg = experiment.config.predict
  cats = experiment.categories
  source = experiment.predict_source()
  state = loop.restore_latest(experiment, workdir, "predict")
  results = experiment.detect(state.experiment, experiment.eval_batches(source=source))
  out_dir = cfg.output_dir or os.path.join(workdir, "predictions")
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    for r in results:
      r["file_name"] = source.files[r["image_id"]]
    with open(os.path.join(out_dir, "detections.json"), "w") as f:
      json.dump(results, f)
    names = dict(zip(cats.ids, cats.names))
    by_image: dict[int, list] = {}
    for r in results:
      by_image.setdefault(r["image_id"], []).append(r)
    for i, name in enumerate(source.files):
      im = visualize.draw_detections(source[i].image, by_image.get(i, []), names,
                                     cfg.draw_threshold)
      im.save(os.path.join(out_dir, os.path.splitext(name)[0] + "_det.png"))
    print(f"Wrote {len(results)} detections for {len(source)} images to {out_dir}/")
  skipped = getattr(source, "skipped_files", [])
  return {"num_images": len(source), "num_detections": len(results),
          "skipped_images": len(skipped)}


def evaluate_robustness(experiment, workdir: str) -> dict:
  names = list(experiment.config.eval.robustness)
  for name in names:
    corruptions.get_corruption(name)  # fails early on an unknown name
  state = loop.restore_latest(experiment, workdir, "robustness")
  step = int(jax.device_get(state.step))
  reporter = Reporter(workdir, total_steps=0, start_step=0, progress=False)
  ap50 = {}
  try:
    for name in names:
      fn = corruptions.get_corruption(name)
      metrics = experiment.evaluate(state.experiment, workdir=workdir, step=step,
                                    tag=f"_{name}", transform=None if name == "clean" else fn)
      if jax.process_index() == 0:
        ap50[name] = metrics["AP50"]
        reporter.message(f"robustness {name:>15s}: AP50 = {metrics['AP50']:.4f}")
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "robustness.json"), "w") as f:
        json.dump({"step": step, "AP50": ap50}, f, indent=2)
      reporter.eval_line(step, {f"AP50_{k}": v for k, v in ap50.items()},
                         filename="robustness_metrics.jsonl")
  finally:
    reporter.close()
  return ap50
