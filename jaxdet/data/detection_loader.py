"""Detection batches on the step-indexed loader: resize / augment, pad boxes, collate.

Order, resume, sharding, eval padding and prefetching are ``loader.StepLoader``'s (see its module
docstring for the step = data position contract); this module adds what makes an example a
detection example. Ground truth is padded to ``max_boxes`` with a validity mask (DESIGN.md: static
shapes in the jitted step), never truncated: an example with more objects is an error.
"""
from __future__ import annotations

import math

import numpy as np

from jaxdet.data import aspect_groups, instance_masks, transforms
from jaxdet.data.loader import StepLoader
from jaxdet.data.records import DetectionExample

_AUG_TAG, _TRANSFORM_TAG, _SSD_TAG = 7002, 7003, 7005  # ``example_rng`` tags: flip + jitter;
                                                       # image_transform; SSD augmentation
                                                       # (7004: detection_modes' noise)
AUGMENTATIONS = ("standard", "ssd")


class DetectionLoader(StepLoader):
  """Iterable over padded numpy detection batches.

  Args:
    source: a ``DetectionSource`` (``len`` + ``source[i] -> DetectionExample``).
    batch_size: examples per batch *of this process*.
    image_size: ``(H, W)`` of every output image; images are resized (aspect ratio kept) to
      fit and zero-padded at the bottom / right.
    short_side, max_side: optional ``resize_to_fit`` targets (shorter side -> ``short_side``,
      longer side at most ``max_side``); the scale is further capped so the image fits
      ``image_size``. None: just fit ``image_size``.
    max_boxes: ground-truth slots per image. Nothing is ever cut: an example with more objects
      (``source[i]``, before augmentation) raises a ValueError naming ``config.data.max_boxes``,
      the count and the image id. ``jaxdet.data.report.required_max_boxes(*sources)`` gives the
      value the data needs.
    train: endless shuffled stream with augmentation, or a single ordered pass without it.
    seed: non-negative int; fixes the epoch permutations and the augmentation.
    hflip: random horizontal flip with probability 0.5 (train only).
    scale_jitter: ``(low, high)`` for ``transforms.random_scale_jitter`` (train only); None or
      ``(1, 1)``: off. The jitter multiplies the resize scale, then crops / pads to ``image_size``.
    num_workers: decoding / augmentation threads (0: decode in the iterating thread).
    process_index, process_count: this process's slice of each global batch.
    start_step: first global step yielded by ``iter(loader)`` (resume from a checkpoint).
    prefetch: batches in flight ahead of the consumer.
    min_visible: scale jitter drops boxes with less than this fraction of their area left.
    image_transform: optional ``fn(image, boxes, rng) -> image`` applied to the original image
      (with its boxes, before any resize), e.g. the robustness corruptions; ``rng`` comes from
      ``(seed, position)`` so the result is reproducible. Must keep the image size.
    mask_size: ``M > 0``: also ship Mask R-CNN mask targets (He et al. 2017, §3) as *box-frame
      masks* (``jaxdet.data.instance_masks``, the static-shape recipe of the Cloud TPU Mask R-CNN):
      every object's segmentation (``DetectionExample.masks``; a source without masks is an error)
      rasterised to ``M x M`` inside its ground-truth box, the *frame*, on the original image
      (after ``image_transform``). The frames then follow the boxes' geometry: a flip mirrors
      frame box and frame mask (``instance_masks.flip_box_frame_masks``), the resize scales the
      frame boxes, the scale jitter shifts them by its crop offset and drops the objects it drops.
      Frame boxes are never clipped (the frame of the mask stays the whole original box, also
      where the object leaves the image), unlike the train ``boxes``. 0: no masks.
    augment: train-time augmentation. ``'standard'``: the flip and scale jitter above;
      ``'ssd'``: SSD's pipeline (``jaxdet.data.ssd_augment.ssd_augment``: photometric
      distortion, zoom-out on a ``fill_mean`` canvas, min-IoU crop, flip, then a resize to
      exactly ``image_size``, not aspect-preserving); ``hflip`` / ``scale_jitter`` / the resize
      targets are then unused and ``mask_size`` must be 0.
    fill_mean: RGB 0..255 of the zoom-out canvas (``config.data.pixel_mean * 255``).
    augment_options: extra keyword arguments of ``ssd_augment`` (e.g. ``max_ratio``, ``zoom_out``).
    warp: resize every image to exactly ``image_size`` (SSD's fixed-size input), not
      aspect-preserving; eval batches then carry ``scale_xy`` (below).
    aspect_ratio_grouping: every batch holds landscape (``w >= h``) or portrait images only and
      is padded to its bucket: ``image_size = (S, L)`` with ``S <= L`` for landscape, ``(L, S)``
      for portrait (``jaxdet.data.aspect_groups``: the order stays a pure function of the step;
      every image is seen once per epoch, a bucket's last batch completed with its first
      images). Not with ``warp`` / ``augment='ssd'`` (fixed size).

  Each batch has: ``images`` uint8 [b,H,W,3]; ``boxes`` float32 [b,G,4] xyxy in output pixels;
  ``classes`` int32 [b,G] (-1 where padded); ``box_valid`` bool [b,G]; ``image_id`` int64 [b]
  (-1 for padding); ``scale`` float32 [b] (output = original * scale, so original boxes are
  ``boxes / scale`` in eval mode; with ``warp`` the x scale, and ``scale_xy`` float32 [b, 2]
  holds (x scale, y scale): original boxes are ``boxes / (sx, sy, sx, sy)``); ``image_hw``
  int32 [b,2] (resized, unpadded size);
  ``orig_hw`` int32 [b,2] (the original image's size, e.g. to paste masks back);
  ``example_valid`` bool [b] (False for eval padding). With ``mask_size = M > 0`` also:
  ``masks`` uint8 [b,G,M,M] (0 / 1 frame masks) and ``mask_boxes`` float32 [b,G,4] (their
  frames, ``xyxy`` in output pixels, unclipped); zeros where padded. Frame cell ``(i, j)`` covers
  ``[x1 + j (x2 - x1) / M, x1 + (j + 1) (x2 - x1) / M)`` horizontally, the same vertically.
  """

  def __init__(self, source, *, batch_size: int, image_size, max_boxes: int, train: bool,
               seed: int = 0, hflip: bool = True, scale_jitter=None, num_workers: int = 2,
               process_index: int = 0, process_count: int = 1, start_step: int = 0,
               prefetch: int = 2, min_visible: float = 0.5, short_side: int | None = None,
               max_side: int | None = None, image_transform=None, mask_size: int = 0,
               augment: str = "standard", fill_mean=(123.675, 116.28, 103.53),
               augment_options: dict | None = None, warp: bool = False,
               aspect_ratio_grouping: bool = False):
    groups = None
    if aspect_ratio_grouping:
      if warp or augment == "ssd":
        raise ValueError("aspect_ratio_grouping pads to per-orientation shapes; it does not apply "
                         "to a fixed-size warp (warp=True / augment='ssd')")
      self.bucket_sizes = aspect_groups.bucket_shapes(image_size)
      groups = aspect_groups.orientations(source)
    super().__init__(source, batch_size=batch_size, train=train, seed=seed, num_workers=num_workers,
                     process_index=process_index, process_count=process_count,
                     start_step=start_step, prefetch=prefetch, groups=groups)
    self._groups = groups
    if len(image_size) != 2 or min(image_size) < 1:
      raise ValueError(f"image_size must be (height, width) of positive ints, got {image_size}")
    if max_boxes < 1:
      raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
    if scale_jitter is not None and (len(scale_jitter) != 2 or not 0 < scale_jitter[0] <= scale_jitter[1]):
      raise ValueError(f"scale_jitter must be None or (low, high) with 0 < low <= high, got {scale_jitter}")
    for name, v in (("short_side", short_side), ("max_side", max_side)):
      if v is not None and v < 1:
        raise ValueError(f"{name} must be None or >= 1, got {v}")
    if not isinstance(mask_size, (int, np.integer)) or isinstance(mask_size, bool) or mask_size < 0:
      raise ValueError(f"mask_size must be an int >= 0 (0: no instance masks), got {mask_size!r}")
    if image_transform is not None and not callable(image_transform):
      raise ValueError("image_transform must be None or a callable fn(image, boxes, rng) -> image")
    if augment not in AUGMENTATIONS:
      raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if (augment == "ssd" or warp) and mask_size:
      raise ValueError("augment='ssd' and warp do not transform instance masks: use mask_size=0")
    self.augment, self.fill_mean, self.warp = augment, tuple(fill_mean), bool(warp)
    self.augment_options = dict(augment_options or {})
    self.image_size = (int(image_size[0]), int(image_size[1]))
    self.max_boxes = int(max_boxes)
    self.hflip = bool(hflip)
    if scale_jitter is not None and tuple(map(float, scale_jitter)) == (1.0, 1.0):
      scale_jitter = None
    self.scale_jitter = None if scale_jitter is None else (float(scale_jitter[0]), float(scale_jitter[1]))
    self.short_side, self.max_side = short_side, max_side
    self.image_transform = image_transform
    self.min_visible = float(min_visible)
    self.mask_size = int(mask_size)

  def output_size(self, index: int) -> tuple[int, int]:
    """Padded ``(H, W)`` of ``source[index]``'s batch: ``image_size``, or its orientation's
    bucket with aspect-ratio grouping."""
    return self.image_size if self._groups is None else self.bucket_sizes[self._groups[index]]

  def resize_scale(self, height: int, width: int, size=None) -> float:
    """Resize factor of an ``height x width`` image (before any jitter) into ``size`` (default
    ``image_size``)."""
    scale = transforms.fit_scale(height, width, size or self.image_size)
    if self.short_side is not None or self.max_side is not None:
      short = self.short_side if self.short_side is not None else math.inf
      longest = self.max_side if self.max_side is not None else math.inf
      scale = min(scale, short / min(height, width), longest / max(height, width))
    return scale

  def prepare(self, position: int, index: int) -> dict:
    """``source[index]`` transformed, augmented (train), resized and padded."""
    ex: DetectionExample = self.source[index]
    if ex.num_objects > self.max_boxes:
      where = f"image id={ex.image_id}" + (f" ('{ex.file_name}')" if ex.file_name else "")
      raise ValueError(
          f"{where} has {ex.num_objects} objects, more than config.data.max_boxes="
          f"{self.max_boxes}; boxes are never dropped silently. Set "
          f"--config.data.max_boxes={ex.num_objects} or more, or --config.data.max_boxes=0 to size "
          "it from the data (jaxdet.data.report.required_max_boxes).")
    if self.mask_size and ex.masks is None:
      where = f"image id={ex.image_id}" + (f" ('{ex.file_name}')" if ex.file_name else "")
      raise ValueError(
          f"{where}: mask_size={self.mask_size} (config.data.mask_size) asks for instance-mask "
          f"targets but the source has no instance masks ({type(self.source).__name__}: "
          "DetectionExample.masks is None). Use a COCO JSON whose annotations all have a "
          "'segmentation' (config.data.source='coco_json', or the embedded benchmark), or set "
          "mask_size=0.")
    image, boxes, classes = ex.image, ex.boxes, ex.classes
    out_h, out_w = size = self.output_size(index)
    if self.image_transform is not None:
      rng = self.example_rng(_TRANSFORM_TAG, position)
      image = np.asarray(self.image_transform(image, boxes.copy(), rng), np.uint8)
      if image.shape != ex.image.shape:
        raise ValueError(f"image_transform changed the image shape {ex.image.shape} -> {image.shape}")
    masks = None
    if self.mask_size:  # frames = the ground-truth boxes of the original image
      masks = instance_masks.box_frame_masks(ex.masks, boxes, image.shape[0], image.shape[1],
                                             self.mask_size)
    mask_boxes = boxes  # the frames; follow ``boxes`` until those get clipped
    if self.train and self.augment == "ssd":
      from jaxdet.data import ssd_augment
      aug = ssd_augment.ssd_augment(
          DetectionExample(image=image, boxes=boxes, classes=classes, image_id=ex.image_id,
                           is_crowd=ex.is_crowd),
          self.example_rng(_SSD_TAG, position), size=self.image_size, mean=self.fill_mean,
          **self.augment_options)
      return dict(image=aug.image, boxes=aug.boxes, classes=aug.classes, image_id=ex.image_id,
                  scale=1.0, image_hw=self.image_size, orig_hw=(ex.height, ex.width))
    if self.warp:  # fixed-size input: x and y scaled separately, nothing padded or clipped
      from jaxdet.data import ssd_augment
      h, w = image.shape[:2]
      if self.train and self.hflip and self.example_rng(_AUG_TAG, position).random() < 0.5:
        image, boxes = transforms.horizontal_flip(image, boxes)
      image, boxes, classes = ssd_augment.resize(image, boxes, classes, self.image_size)
      sx, sy = self.image_size[1] / w, self.image_size[0] / h
      return dict(image=image, boxes=boxes, classes=classes, image_id=ex.image_id, scale=sx,
                  scale_xy=(sx, sy), image_hw=self.image_size, orig_hw=(ex.height, ex.width))
    if self.train:
      rng = self.example_rng(_AUG_TAG, position)
      if self.hflip and rng.random() < 0.5:
        image, boxes = transforms.horizontal_flip(image, boxes)
        mask_boxes = boxes  # the same flip as the boxes
        if masks is not None:
          masks = instance_masks.flip_box_frame_masks(masks)
      if self.scale_jitter is not None:
        res = transforms.random_scale_jitter(
            image, boxes, rng, size, self.scale_jitter, self.min_visible,
            base_scale=self.resize_scale(image.shape[0], image.shape[1], size))
        image, scale, hw = res.image, res.scale, res.image_hw
        if masks is not None:   # the frames: resized and shifted like the boxes, not clipped
          ox, oy = res.offset
          shift = np.array([ox, oy, ox, oy], np.float32)
          mask_boxes = (mask_boxes * np.float32(scale) - shift)[res.keep]
          masks = masks[res.keep]
        boxes, classes = res.boxes[res.keep], classes[res.keep]
      else:
        scale = self.resize_scale(image.shape[0], image.shape[1], size)
        image, boxes = transforms.resize_by_scale(image, boxes, scale)
        mask_boxes = boxes
        hw = image.shape[:2]
        boxes = np.clip(boxes, 0, np.array([hw[1], hw[0], hw[1], hw[0]], np.float32))
        image = transforms.pad_to(image, out_h, out_w)
    else:
      # No clipping in eval: boxes / scale must give back the original boxes exactly.
      scale = self.resize_scale(image.shape[0], image.shape[1], size)
      image, boxes = transforms.resize_by_scale(image, boxes, scale)
      mask_boxes = boxes
      hw = image.shape[:2]
      image = transforms.pad_to(image, out_h, out_w)
    out = dict(image=image, boxes=boxes, classes=classes, image_id=ex.image_id,
               scale=scale, image_hw=hw, orig_hw=(ex.height, ex.width))
    if masks is not None:
      out.update(masks=masks, mask_boxes=np.asarray(mask_boxes, np.float32))
    return out

  def collate_step(self, step: int, examples: list[dict | None]) -> dict[str, np.ndarray]:
    if self._groups is None:
      return self.collate(examples)
    return self.collate(examples, size=self.bucket_sizes[self.group(step)])

  def collate(self, examples: list[dict | None], size=None) -> dict[str, np.ndarray]:
    """Stacks prepared examples into the batch dict of the class docstring (None: padding), the
    images padded to ``size`` (default ``image_size``)."""
    b, g = len(examples), self.max_boxes
    h, w = size or self.image_size
    batch = {
        "images": np.zeros((b, h, w, 3), np.uint8),
        "boxes": np.zeros((b, g, 4), np.float32),
        "classes": np.full((b, g), -1, np.int32),
        "box_valid": np.zeros((b, g), bool),
        "image_id": np.full((b,), -1, np.int64),
        "scale": np.ones((b,), np.float32),
        "image_hw": np.zeros((b, 2), np.int32),
        "orig_hw": np.zeros((b, 2), np.int32),
        "example_valid": np.zeros((b,), bool),
    }
    if self.warp:
      batch["scale_xy"] = np.ones((b, 2), np.float32)
    if self.mask_size:
      m = self.mask_size
      batch["masks"] = np.zeros((b, g, m, m), np.uint8)
      batch["mask_boxes"] = np.zeros((b, g, 4), np.float32)
    for i, ex in enumerate(examples):
      if ex is None:
        continue
      n = len(ex["boxes"])
      batch["images"][i] = ex["image"]
      batch["boxes"][i, :n] = ex["boxes"]
      batch["classes"][i, :n] = ex["classes"]
      batch["box_valid"][i, :n] = True
      batch["image_id"][i] = ex["image_id"]
      batch["scale"][i] = ex["scale"]
      batch["image_hw"][i] = ex["image_hw"]
      batch["orig_hw"][i] = ex["orig_hw"]
      batch["example_valid"][i] = True
      if self.warp:
        batch["scale_xy"][i] = ex.get("scale_xy", (ex["scale"], ex["scale"]))
      if self.mask_size:
        batch["masks"][i, :n] = ex["masks"]
        batch["mask_boxes"][i, :n] = ex["mask_boxes"]
    return batch

