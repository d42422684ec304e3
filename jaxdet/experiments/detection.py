"""What every box detector shares: classes, data, detection, evaluation, predict, robustness.

``DetectionExperiment`` is the base of RetinaNet, SSD, Faster R-CNN and Mask R-CNN. A
subclass builds its network and implements ``init``, ``train_step`` and
``predict_fn(net, images, image_hw) -> Detections`` (padded boxes in resized-image pixels,
scores, contiguous classes, ``num_valid``, as ``jaxdet.ops.postprocess``); this class turns
those into COCO results in original image coordinates and the dataset's category ids, runs
the evaluation protocol (``jaxdet.experiments.detection_eval``: COCO, VOC, WIDER FACE), and
provides the ``predict`` and ``robustness`` modes.

The experiment state is a dict whose ``"net"`` entry is the detector's ``NetworkState``
(other entries: e.g. ALWA's state). The classes come from the training data, or from the
``metadata`` of a checkpoint (``{"categories": {"ids": [...], "names": [...]}}``), so a
finished run is rebuilt for evaluation or as another method's baseline without opening its
training data; the val data is opened on first use.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.data import factory
from jaxdet.data.detection_loader import DetectionLoader
from jaxdet.evaluation import coco as coco_eval
from jaxdet.experiments import detection_eval
from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import detector_defaults
from jaxdet.train import sharding as shard_lib
from jaxdet.train.state import NetworkState

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Categories:
  """Contiguous class ``c`` <-> the dataset's ``ids[c]`` and ``names[c]``."""

  def __init__(self, ids, names):
    self.ids, self.names = [int(i) for i in ids], [str(n) for n in names]
    if len(self.ids) != len(self.names) or not self.ids:
      raise ValueError(f"Categories need one name per id, at least one; got {len(self.ids)} "
                       f"ids and {len(self.names)} names.")

  def __len__(self):
    return len(self.ids)

  def to_json(self) -> dict:
    return {"ids": self.ids, "names": self.names}


class DetectionExperiment(Experiment):
  progress_metrics = ("loss", "cls_loss", "reg_loss", "lr")

  def __init__(self, config, mesh, *, metadata: Mapping[str, Any] | None = None,
               train_source=None):
    """``train_source`` overrides config.data's train split (benchmarks, notebooks)."""
    super().__init__(config, mesh)
    c = config
    if c.model.dtype not in DTYPES:
      raise ValueError(f"config.model.dtype={c.model.dtype!r}: use one of {sorted(DTYPES)}.")
    self._train_source = train_source
    self._val_source = None
    self._predict_source = None
    self._max_boxes: dict[int, int] = {}
    if metadata and "categories" in metadata:
      self.categories = Categories(**metadata["categories"])
    else:
      self.categories = Categories(self.train_source.category_ids, self.train_source.class_names)
    self.num_classes = len(self.categories)
    d = c.data
    self.image_size = tuple(int(s) for s in d.image_size)
    # Evaluation may use another resize/pad than training (AP-loss: 512x512 train, short
    # side 600 test).
    self.eval_image_size = tuple(int(s) for s in d.eval_image_size) or self.image_size
    self.eval_resize = (d.eval_short_side or d.short_side, d.eval_max_side or d.max_side)
    if d.get("aspect_ratio_grouping", False):   # configs saved before the key existed: off
      from jaxdet.train.config_check import ConfigError
      for key, size in (("image_size", self.image_size), ("eval_image_size", self.eval_image_size)):
        if size[0] > size[1]:
          raise ConfigError(
              f"config.data.aspect_ratio_grouping=True takes config.data.{key}={size} as the "
              f"landscape bucket (H, W) with H <= W; use ({size[1]}, {size[0]}) (the portrait "
              "bucket is its transpose).")
    self.local_batch = shard_lib.check_global_batch_size(c.train.batch_size, mesh)
    self._anchor_cache: dict[tuple[int, int], tuple] = {}
    self._mean = np.asarray(d.pixel_mean, np.float32) * 255.0
    self._std = np.asarray(d.pixel_std, np.float32) * 255.0
    self._predict = jax.jit(self.predict_fn)

  @classmethod
  def config_schema(cls):
    return detector_defaults()

  @classmethod
  def modes(cls) -> tuple[str, ...]:
    return ("train", "eval", "predict", "robustness")

  def run_mode(self, mode: str, workdir: str) -> dict:
    if mode == "predict":
      from jaxdet.experiments import detection_modes
      return detection_modes.predict_folder(self, workdir)
    if mode == "robustness":
      from jaxdet.experiments import detection_modes
      return detection_modes.evaluate_robustness(self, workdir)
    return super().run_mode(mode, workdir)

  def metadata(self) -> dict:
    return {"categories": self.categories.to_json()}

  def check_inputs(self, mode: str, workdir: str) -> None:
    """Opens every source ``mode`` reads, checks the eval batch and ``max_boxes`` against the
    mesh and the data, prints the data report and (train) writes ``<workdir>/data_report.json``."""
    from jaxdet.data import report as report_lib
    from jaxdet.train.config_check import ConfigError
    c = self.config
    shard_lib.check_global_batch_size(c.eval.batch_size, self.mesh, key="config.eval.batch_size")
    detection_eval.check_protocol(c.eval.get("protocol", "coco"))
    backend = c.eval.get("coco_backend", "pycocotools")
    if backend not in coco_eval.COCO_BACKENDS:
      raise ConfigError(f"config.eval.coco_backend={backend!r}: use one of "
                        f"{coco_eval.COCO_BACKENDS}.")
    if mode == "predict":
      self.predict_source()  # the folder exists, holds images, each readable (or skipped)
      return
    splits = {"train": self.train_source} if mode == "train" else {}
    splits["val"] = self.val_source
    if mode == "robustness":
      from jaxdet.experiments import detection_modes
      detection_modes.check_robustness(self)   # names, metric, noise space, attack keys
    if c.data.max_boxes > 0:
      for split, source in splits.items():
        need = report_lib.required_max_boxes(source)
        if need > c.data.max_boxes:
          r = report_lib.source_report(source)
          raise ConfigError(
              f"config.data.max_boxes={c.data.max_boxes} is smaller than the {need} objects of "
              f"image id={r['max_objects_image_id']} ('{r['max_objects_file_name']}') in the "
              f"{split} split; boxes are never dropped. Set --config.data.max_boxes={need} (or 0 "
              f"to size it from the data).")
    report = {split: report_lib.source_report(source) for split, source in splits.items()}
    if jax.process_index() == 0:
      print("Data:\n  " + report_lib.format_report(report).replace("\n", "\n  "), flush=True)
      if mode == "train":
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "data_report.json"), "w") as f:
          json.dump(report, f, indent=2)

  # ---- data --------------------------------------------------------------------------------
  @property
  def train_source(self):
    if self._train_source is None:
      self._train_source = factory.make_source(self.config.data, "train")
    return self._train_source

  @property
  def val_source(self):
    if self._val_source is None:
      self._val_source = factory.make_source(self.config.data, "val")
      if self.config.eval.max_images > 0:
        self._val_source = factory.Subset(self._val_source, self.config.eval.max_images)
    return self._val_source

  def max_boxes(self, source) -> int:
    """Ground-truth slots of a batch from ``source``: config.data.max_boxes, or (0) the most
    objects of any image of ``source``."""
    if self.config.data.max_boxes > 0:
      return int(self.config.data.max_boxes)
    key = id(source)
    if key not in self._max_boxes:
      from jaxdet.data.report import required_max_boxes
      self._max_boxes[key] = required_max_boxes(source)
    return self._max_boxes[key]

  def predict_source(self):
    """The images of config.predict.input_dir (``--mode=predict``)."""
    if self._predict_source is None:
      from jaxdet.data.folder import FolderSource
      cats = self.categories
      self._predict_source = FolderSource(self.config.predict.input_dir, cats.ids, cats.names,
                                          skip_bad_images=self.config.data.skip_bad_images)
    return self._predict_source

  def anchors_for(self, size):
    """(anchors [A, 4] float32 xyxy, level_slices) of an input of padded ``size`` (H, W); the
    anchor-based detectors define it."""
    raise NotImplementedError(f"{type(self).__name__} has no anchors")

  def anchors_of_size(self, size):
    """``anchors_for(size)``, computed once per size (one per aspect-ratio bucket)."""
    size = (int(size[0]), int(size[1]))
    if size not in self._anchor_cache:
      self._anchor_cache[size] = self.anchors_for(size)
    return self._anchor_cache[size]

  def anchors_of(self, images):
    """(anchors, level_slices) of a batch of ``images [B, H, W, 3]``: its static padded size,
    so a jitted step traced per bucket shape gets that bucket's anchors."""
    return self.anchors_of_size(images.shape[1:3])

  def normalize(self, images_uint8):
    return (images_uint8.astype(jnp.float32) - self._mean) / self._std

  def loader_options(self, train: bool) -> dict:
    """Extra ``DetectionLoader`` arguments of this detector's input recipe (SSD: its
    augmentation and fixed-size warp); {} for the standard resize + pad."""
    del train
    return {}

  def train_batches(self, start_step: int):
    d = self.config.data
    return iter(DetectionLoader(
        self.train_source, batch_size=self.local_batch, image_size=self.image_size,
        short_side=d.short_side, max_side=d.max_side,
        max_boxes=self.max_boxes(self.train_source), train=True,
        seed=self.config.seed, hflip=d.hflip, scale_jitter=tuple(d.scale_jitter),
        num_workers=d.num_workers, process_index=jax.process_index(),
        process_count=jax.process_count(), start_step=start_step,
        mask_size=int(d.get("mask_size", 0)),
        aspect_ratio_grouping=d.get("aspect_ratio_grouping", False),
        **self.loader_options(train=True)))

  def eval_batches(self, source=None, batch_size=None, transform=None):
    d = self.config.data
    bs = batch_size or self.config.eval.batch_size
    source = source or self.val_source
    return DetectionLoader(
        source, batch_size=max(bs // jax.process_count(), 1),
        image_size=self.eval_image_size, short_side=self.eval_resize[0],
        max_side=self.eval_resize[1], max_boxes=self.max_boxes(source), train=False,
        seed=self.config.seed, hflip=False, scale_jitter=(1.0, 1.0),
        num_workers=d.num_workers, process_index=jax.process_index(),
        process_count=jax.process_count(), image_transform=transform,
        aspect_ratio_grouping=d.get("aspect_ratio_grouping", False),
        **self.loader_options(train=False))

  # ---- weights -------------------------------------------------------------------------------
  def load_pretrained(self, state):
    """Loads config.model.pretrained (an .npz of backbone weights) into fresh params."""
    path = self.config.model.pretrained
    if not path:
      return state
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"config.model.pretrained={path!r} does not exist. Convert ImageNet weights to .npz "
          f"(see jaxdet.models.weights) or set --config.model.pretrained='' to train from scratch.")
    from jaxdet.models import weights
    net: NetworkState = state["net"]
    variables = {"params": net.params, **net.model_state}
    variables = weights.load_backbone_weights(jax.device_get(variables), path)
    variables = jax.device_put(variables, shard_lib.replicated(self.mesh))
    params = variables.pop("params")
    return {**state, "net": NetworkState.create(params=params, model_state=variables,
                                                optimizer=self.optimizer)}

  # ---- inference -----------------------------------------------------------------------------
  def predict_fn(self, net: NetworkState, images, image_hw):
    """Pure: uint8 images [B, H, W, 3] -> padded ``Detections`` in resized-image pixels."""
    raise NotImplementedError

  def detect(self, state, loader) -> list[dict]:
    """Runs the detector over ``loader``; returns COCO-style results (original coords). When
    the predictions carry ``masks`` (``[B, D, S, S]`` probabilities, Mask R-CNN) each result also
    gets its ``segmentation``: the mask pasted into the original image, binarised at 0.5, as
    COCO RLE (``jaxdet.evaluation.segm``)."""
    results = []
    category_ids = self.categories.ids
    for local in loader:
      batch = shard_lib.to_global({"images": local["images"], "image_hw": local["image_hw"]},
                                  self.mesh)
      dets = shard_lib.to_host(self._predict(state["net"], batch["images"], batch["image_hw"]))
      host = shard_lib.to_host({k: local[k] for k in ("image_id", "scale", "example_valid",
                                                      "orig_hw", "scale_xy") if k in local})
      keep = host["example_valid"]
      if "scale_xy" in host:  # warped (fixed-size) input: x and y scaled separately
        boxes = dets.boxes / np.tile(host["scale_xy"], 2)[:, None, :]
      else:
        boxes = dets.boxes / host["scale"][:, None, None]
      found = coco_eval.detections_to_coco(
          host["image_id"][keep], boxes[keep], dets.scores[keep], dets.classes[keep],
          dets.num_valid[keep], category_ids)
      if getattr(dets, "masks", None) is not None:
        from jaxdet.evaluation import segm
        rles = []
        for i in np.flatnonzero(keep):
          k = int(np.clip(dets.num_valid[i], 0, dets.boxes.shape[1]))
          h, w = (int(v) for v in host["orig_hw"][i])
          rles += segm.encode_masks(segm.paste_masks(dets.masks[i, :k], boxes[i, :k], h, w))
        for r, rle in zip(found, rles, strict=True):
          r["segmentation"] = rle
      results += found
    return results

  def evaluate(self, state, *, workdir: str, step: int, transform=None, tag: str = "",
               batches=None, voc_metrics: bool | None = None) -> dict:
    """Metrics of the val split with ``config.eval.protocol`` (COCO AP; ``wider_face`` adds
    easy / medium / hard AP), VOC mAP50 with ``config.eval.voc_metrics``
    (``jaxdet.experiments.detection_eval``); the result file is kept as
    ``<workdir>/detections<tag>_step<step>.json``. Robustness mode: ``batches`` replaces
    ``eval_batches(transform=transform)`` (e.g. attacked val batches), ``voc_metrics`` overrides
    the config's."""
    e = self.config.eval
    protocol = e.get("protocol", "coco")
    detection_eval.check_protocol(protocol)  # before the detector runs over the split
    results = self.detect(state, self.eval_batches(transform=transform) if batches is None
                          else batches)
    if jax.process_index() != 0:
      return {}
    voc = bool(e.voc_metrics) if voc_metrics is None else bool(voc_metrics)
    return detection_eval.evaluate_detections(
        self.val_source, results, workdir=workdir, step=step, tag=tag, protocol=protocol,
        voc_metrics=voc, wider_face_gt_dir=e.get("wider_face_gt_dir", ""),
        coco_backend=e.get("coco_backend", "pycocotools"))

  def eval_images(self, state, *, step: int) -> dict[str, np.ndarray]:
    """The first ``config.eval.log_images`` val images with their detections drawn, as one
    grid (TensorBoard ``images/detections`` and ``<workdir>/images/``)."""
    n = min(int(self.config.eval.log_images), len(self.val_source))
    if n <= 0:
      return {}
    from jaxdet import visualize
    from jaxdet.data.factory import Subset
    source = Subset(self.val_source, n)
    results = self.detect(state, self.eval_batches(source=source))
    if jax.process_index() != 0:
      return {}
    names = dict(zip(self.categories.ids, self.categories.names))
    tiles = []
    for i in range(n):
      image_id = source.image_ids[i]
      dets = [r for r in results if r["image_id"] == image_id]
      tiles.append(np.asarray(visualize.draw_detections(
          source[i].image, dets, names, self.config.predict.draw_threshold)))
    size = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, size[0] - t.shape[0]), (0, size[1] - t.shape[1]), (0, 0)))
             for t in tiles]
    return {"detections": visualize.image_grid(tiles, columns=min(n, 4))}

