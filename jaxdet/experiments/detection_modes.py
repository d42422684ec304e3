"""The detector modes besides train and eval: ``predict`` and ``robustness``.

* ``--mode=predict``: a folder of images (``config.predict.input_dir``) -> COCO-style
  detections JSON (original pixels, the training dataset's category ids, plus ``file_name``)
  and one ``*_det.png`` per image with the boxes above ``config.predict.draw_threshold`` drawn.
* ``--mode=robustness``: a trained detector under the perturbations of AP-loss (Chen et al.,
  Sec. 4.3, Table 3), next to the clean score, in ``config.eval.robustness`` order:
  - image corruptions (``jaxdet.data.corruptions``): black / random / flipped patch at each
    object's centre and Gaussian noise (sigma^2 = 0.01), applied to the original image with its
    ground-truth boxes before resizing, with a per-image RNG so the numbers are reproducible.
    ``config.eval.noise_space='network_input'`` instead adds the noise to the normalised network
    input (a batch transform after resizing: ``corruptions.network_input_noise``);
  - gradient attacks (``jaxdet.evaluation.adversarial``, opt-in): ``adv_patch`` (per-image
    adversarial patches with the patches' geometry) and ``deepfool`` (minimal perturbation that
    changes the top detection; also reports ``rho_adv``).
  The metric (``config.eval.robustness_metric``, ``robustness_metric``): Table 3's mAP50 on VOC07
  test, i.e. the VOC07 11-point mAP@0.5 with difficult objects ignored
  (``jaxdet.evaluation.voc`` through the eval protocol's ``voc_metrics``), when the data is VOC
  (``config.eval.voc_metrics`` -- how every VOC config selects the VOC evaluator -- or a TFDS
  ``voc/*`` dataset), else COCO AP50. Results: ``<workdir>/robustness.json`` (``metric``,
  ``scores`` per column in that metric, ``AP50``: COCO AP50 per column, ``deepfool``: the
  DeepFool statistics) and one line per run in ``<workdir>/robustness_metrics.jsonl``.

Both restore the latest checkpoint of the workdir read-only.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

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


# ---- robustness -----------------------------------------------------------------------------------
METRICS = {   # name -> (key of DetectionExperiment.evaluate's metrics, needs VOC metrics, words)
    "voc07_map50": ("mAP50_voc07", True, "VOC07 11-point mAP@0.5"),
    "voc_area_map50": ("mAP50_area", True, "VOC area mAP@0.5"),
    "coco_ap50": ("AP50", False, "COCO AP50"),
}
_NOISE_TAG = 7004   # np.random.default_rng((seed, tag, image_id)) of the network-input noise


def is_voc_data(config) -> bool:
  """Whether the val data is PASCAL VOC: the config asks for the VOC evaluator
  (``config.eval.voc_metrics``, set by every VOC config) or reads a TFDS ``voc/*`` dataset."""
  d = config.data
  return bool(config.eval.voc_metrics) or (
      d.source == "tfds" and str(d.tfds_name).lower().startswith("voc"))


def robustness_metric(config) -> str:
  """The metric name (a ``METRICS`` key) of ``config.eval.robustness_metric`` ('auto':
  ``voc07_map50`` on VOC data, Table 3's metric, else ``coco_ap50``)."""
  choice = config.eval.get("robustness_metric", "auto")
  if choice == "auto":
    return "voc07_map50" if is_voc_data(config) else "coco_ap50"
  if choice not in METRICS:
    raise ValueError(f"config.eval.robustness_metric={choice!r}: use 'auto' or one of "
                     f"{', '.join(METRICS)}.")
  return choice


def check_robustness(experiment) -> None:
  """Fails early (ValueError naming the config key) on a bad robustness setting."""
  e = experiment.config.eval
  corruptions.check_robustness_names(e.robustness)
  robustness_metric(experiment.config)
  space = e.get("noise_space", "pixels01")
  if space not in corruptions.NOISE_SPACES:
    raise ValueError(f"config.eval.noise_space={space!r}: use one of {corruptions.NOISE_SPACES} "
                     "('pixels01': the [0, 1] image; 'network_input': after normalisation).")
  names = set(e.robustness)
  if "adv_patch" in names:
    _patch_attack(experiment)
  if "deepfool" in names:
    _deepfool_attack(experiment)


def _transfer(experiment) -> dict:
  from jaxdet.train import sharding as shard_lib
  return {"to_global": lambda local: shard_lib.to_global(local, experiment.mesh),
          "to_host": shard_lib.to_host}


def _patch_attack(experiment):
  from jaxdet.evaluation import adversarial
  e = experiment.config.eval
  return adversarial.PatchAttack(experiment, steps=e.adv_patch_steps,
                                 step_size=e.adv_patch_step_size,
                                 objective=e.adv_patch_objective, seed=experiment.config.seed,
                                 **_transfer(experiment))


def _deepfool_attack(experiment):
  from jaxdet.evaluation import adversarial
  e = experiment.config.eval
  return adversarial.DeepFoolAttack(experiment, max_iter=e.deepfool_max_iter,
                                    overshoot=e.deepfool_overshoot,
                                    num_classes=e.deepfool_num_classes, **_transfer(experiment))


def noise_batch_transform(experiment, variance: float = 0.01):
  """``fn(local_batch) -> images``: the 'network_input' Gaussian noise (float pixels), one RNG
  per image id (``(config.seed, _NOISE_TAG, image_id)``), padding examples left clean."""
  seed = int(experiment.config.seed)
  std = experiment.config.data.pixel_std

  def transform(local):
    rngs = [np.random.default_rng((seed, _NOISE_TAG, int(i))) if ok else None
            for i, ok in zip(local["image_id"], local["example_valid"])]
    return corruptions.network_input_noise(local["images"], local["image_hw"], std, rngs,
                                           variance)
  return transform


def _mapped(loader, images_of):
  """The batches of ``loader`` with ``images`` replaced by ``images_of(batch)``."""
  for local in loader:
    yield dict(local, images=images_of(local))


def column_inputs(experiment, state, name: str, stats: list) -> dict:
  """``evaluate`` keyword arguments of the robustness column ``name``; DeepFool appends its
  per-batch statistics to ``stats``."""
  net = state["net"]
  if name == "clean":
    return {}
  if name == "gaussian_noise" and experiment.config.eval.noise_space == "network_input":
    return {"batches": _mapped(experiment.eval_batches(), noise_batch_transform(experiment))}
  if name == "adv_patch":
    attack = _patch_attack(experiment)
    return {"batches": _mapped(experiment.eval_batches(), lambda b: attack(net, b))}
  if name == "deepfool":
    attack = _deepfool_attack(experiment)

    def images_of(local):
      pixels, batch_stats = attack(net, local)
      stats.append(batch_stats)
      return pixels
    return {"batches": _mapped(experiment.eval_batches(), images_of)}
  return {"transform": corruptions.get_corruption(name)}


def evaluate_robustness(experiment, workdir: str) -> dict:
  """Runs every ``config.eval.robustness`` column; returns ``{column: score}`` in the metric of
  ``robustness_metric`` (module docstring)."""
  from jaxdet.evaluation import adversarial
  check_robustness(experiment)
  cfg = experiment.config
  names = list(cfg.eval.robustness)
  metric = robustness_metric(cfg)
  key, needs_voc, words = METRICS[metric]
  state = loop.restore_latest(experiment, workdir, "robustness")
  step = int(jax.device_get(state.step))
  reporter = Reporter(workdir, total_steps=0, start_step=0, progress=False)
  scores, ap50, deepfool = {}, {}, None
  try:
    for name in names:
      stats: list = []
      start = time.time()
      metrics = experiment.evaluate(state.experiment, workdir=workdir, step=step, tag=f"_{name}",
                                    voc_metrics=True if needs_voc else None,
                                    **column_inputs(experiment, state.experiment, name, stats))
      if jax.process_index() != 0:
        continue
      scores[name], ap50[name] = float(metrics[key]), float(metrics["AP50"])
      line = f"robustness {name:>15s}: {metric} = {scores[name]:.4f}"
      if name == "deepfool":
        deepfool = adversarial.summarize_deepfool(stats, experiment.num_classes + 1)
        line += (f"  rho_adv = {deepfool['rho_adv']:.4g} ({deepfool['num_fooled']}/"
                 f"{deepfool['num_images']} images changed)")
      reporter.message(line + f"  [{time.time() - start:.1f} s]")
    if jax.process_index() == 0:
      e = cfg.eval
      result = {"step": step, "metric": metric, "metric_description": words, "scores": scores,
                "AP50": ap50, "noise_space": e.noise_space}
      if "adv_patch" in names:
        result["adv_patch"] = {"steps": int(e.adv_patch_steps),
                               "step_size": float(e.adv_patch_step_size),
                               "objective": e.adv_patch_objective}
      if deepfool is not None:
        result["deepfool"] = dict(deepfool, max_iter=int(e.deepfool_max_iter),
                                  overshoot=float(e.deepfool_overshoot),
                                  num_classes=int(e.deepfool_num_classes))
      with open(os.path.join(workdir, "robustness.json"), "w") as f:
        json.dump(result, f, indent=2)
      line = {f"{metric}_{k}": v for k, v in scores.items()}
      if deepfool is not None:
        line["deepfool_rho_adv"] = deepfool["rho_adv"]
      reporter.eval_line(step, line, filename="robustness_metrics.jsonl")
  finally:
    reporter.close()
  return scores
