"""Image corruptions for the robustness study of AP-loss (Chen et al., AP-loss, Sec. 5 /
Table 3): the VOC07 test set is re-evaluated (mAP50) on perturbed copies of each image.

  * black_patch:   a patch at the centre of every GT object, all pixels zero;
  * random_patch:  the patch content is copied from a random location outside the box;
  * flipped_patch: the centre patch itself, flipped;
  * gaussian_noise: zero-mean Gaussian noise of variance 0.01 on the image normalised to
    [0, 1], clipped to [0, 1], back to uint8.

Patch geometry (paper: "half width or half height of the ground-truth bounding box", at
the centre of each object): width = box width / 2, height = box height / 2, each rounded
half up and at least 1 pixel, centred on the box centre; boxes are xyxy in continuous
pixel coordinates (pixel i covers [i, i + 1)). The part of a patch outside the image is
dropped. Boxes with no area are skipped. Patches are applied for every GT box in order;
the content of random and flipped patches is always taken from the *original* image.

Flip direction: the paper flips "using left/right, top/bottom, or both randomly", so
``flipped_patch`` draws one of the three per box by default (``mode='random'``);
``mode='horizontal'`` (left/right only), 'vertical' or 'both' fix it.

Random patch source: a same-size window of the original image drawn uniformly among all
positions that do not overlap the object's box; if no such position exists (the box
covers too much of the image) among the positions of least overlap.

All functions are pure numpy, take an ``np.random.Generator`` and return a new uint8
image of the same shape; the input is never modified. ``CORRUPTIONS`` maps each Table 3
column name to a function with the common signature ``fn(image, boxes, rng) -> image``.

Gaussian noise, two readings of "zero mean and 0.01 variance ... on each pixel of normalized
image" (``config.eval.noise_space``, ``NOISE_SPACES``):

  * ``'pixels01'`` (default): ``gaussian_noise`` above, on the image scaled to [0, 1], an
    image corruption like the patches. The authors' public code feeds the network BGR pixels
    in [0, 255] minus the channel means (``lib/dataloader/dataloader.py``, ``Normalizer``: no
    std division), where sigma = 0.1 would be 0.1 grey level and could not cost the 13.5 mAP
    points of Table 3; on [0, 1] it is 25.5 grey levels, which can.
  * ``'network_input'``: N(0, 0.01) added to what the network sees, after jaxdet's mean / std
    normalisation, not clipped or quantised (``network_input_noise``: a batch transform on the
    resized, padded images, noise only inside each image's ``image_hw``). Since the
    normalisation is affine per channel, the noisy network input is produced as float pixels
    ``x + std * 255 * n``, so ``normalize`` of them is ``normalize(x) + n``. With ImageNet's std
    (about 0.225) this is sigma = 0.0225 on [0, 1], about 4.5x weaker than 'pixels01'.

The adversarial columns (``ADVERSARIAL``: ``adv_patch``, ``deepfool``) need the detector's
gradients and live in ``jaxdet.evaluation.adversarial``; ``patch_mask`` gives the adversarial
patch the geometry of the patches here. ``ROBUSTNESS_COLUMNS`` lists every name
``config.eval.robustness`` accepts (``check_robustness_names``).
"""

import numpy as np

FLIP_MODES = ('random', 'horizontal', 'vertical', 'both')


def _check_image(image, fn):
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise ValueError(f'{fn}: image must be a uint8 array [H, W] or [H, W, C]; got dtype '
                     f'{image.dtype} and shape {image.shape}.')
  return image


def _check_boxes(boxes, fn):
  boxes = np.asarray(boxes, np.float64)
  if boxes.size == 0:
    return boxes.reshape(0, 4)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f'{fn}: boxes must be [N, 4] xyxy; got shape {boxes.shape}.')
  if not np.all(np.isfinite(boxes)):
    raise ValueError(f'{fn}: boxes must be finite.')
  return boxes


def _check_rng(rng, fn):
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f'{fn}: rng must be an np.random.Generator '
                     f'(np.random.default_rng(seed)); got {type(rng).__name__}.')


def patch_region(box, height: int, width: int):
  """Centre patch of a box, clipped to the image: (y0, y1, x0, x1) or None if empty."""
  x1, y1, x2, y2 = (float(v) for v in box)
  bw, bh = x2 - x1, y2 - y1
  if bw <= 0 or bh <= 0:
    return None
  pw = max(1, int(np.floor(bw / 2 + 0.5)))  # round half up
  ph = max(1, int(np.floor(bh / 2 + 0.5)))
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  px0, py0 = int(np.floor(cx - pw / 2)), int(np.floor(cy - ph / 2))
  x0, x1_ = max(px0, 0), min(px0 + pw, width)
  y0, y1_ = max(py0, 0), min(py0 + ph, height)
  if x0 >= x1_ or y0 >= y1_:
    return None
  return y0, y1_, x0, x1_


def black_patch(image, boxes, rng=None):
  """Zeroes the centre patch (half width, half height) of every GT box."""
  image = _check_image(image, 'black_patch')
  boxes = _check_boxes(boxes, 'black_patch')
  out = image.copy()
  h, w = image.shape[:2]
  for box in boxes:
    region = patch_region(box, h, w)
    if region is not None:
      y0, y1, x0, x1 = region
      out[y0:y1, x0:x1] = 0
  return out


def _overlap_1d(start, size, lo, hi):
  """Overlap length of [start, start + size) with [lo, hi) for an array of starts."""
  return np.maximum(np.minimum(start + size, hi) - np.maximum(start, lo), 0.0)


def random_source(box, ph: int, pw: int, height: int, width: int, rng):
  """Top-left (y, x) of a ph x pw window not overlapping ``box`` (least overlap if none)."""
  ys = np.arange(height - ph + 1)
  xs = np.arange(width - pw + 1)
  x1, y1, x2, y2 = (float(v) for v in box)
  overlap = _overlap_1d(ys, ph, y1, y2)[:, None] * _overlap_1d(xs, pw, x1, x2)[None, :]
  candidates = np.flatnonzero(overlap.ravel() == overlap.min())
  k = candidates[rng.integers(candidates.size)]
  return int(ys[k // xs.size]), int(xs[k % xs.size])


def _replace_patches(image, boxes, patch_for):
  """Copy of ``image`` whose centre patch of every box is ``patch_for(box, y0, y1, x0, x1)``
  (content always taken from the original image)."""
  out = image.copy()
  h, w = image.shape[:2]
  for box in boxes:
    region = patch_region(box, h, w)
    if region is not None:
      y0, y1, x0, x1 = region
      out[y0:y1, x0:x1] = patch_for(box, y0, y1, x0, x1)
  return out


def random_patch(image, boxes, rng):
  """Replaces the centre patch of every GT box by a same-size window of the original
  image taken from a random position outside that box."""
  image = _check_image(image, 'random_patch')
  boxes = _check_boxes(boxes, 'random_patch')
  _check_rng(rng, 'random_patch')

  def source(box, y0, y1, x0, x1):
    sy, sx = random_source(box, y1 - y0, x1 - x0, image.shape[0], image.shape[1], rng)
    return image[sy:sy + (y1 - y0), sx:sx + (x1 - x0)]

  return _replace_patches(image, boxes, source)


def flipped_patch(image, boxes, rng, mode: str = 'random'):
  """Replaces the centre patch of every GT box by the same patch flipped.

  mode: 'random' (paper: left/right, top/bottom or both, drawn uniformly per box),
  'horizontal' (left/right), 'vertical' (top/bottom) or 'both'.
  """
  if mode not in FLIP_MODES:
    raise ValueError(f'flipped_patch: unknown mode {mode!r}; valid ones are {FLIP_MODES}.')
  image = _check_image(image, 'flipped_patch')
  boxes = _check_boxes(boxes, 'flipped_patch')
  if mode == 'random':
    _check_rng(rng, 'flipped_patch')

  def flipped(box, y0, y1, x0, x1):
    m = FLIP_MODES[1 + int(rng.integers(3))] if mode == 'random' else mode
    patch = image[y0:y1, x0:x1]
    if m in ('horizontal', 'both'):
      patch = patch[:, ::-1]
    if m in ('vertical', 'both'):
      patch = patch[::-1]
    return patch

  return _replace_patches(image, boxes, flipped)


def gaussian_noise(image, rng, variance: float = 0.01):
  """Adds N(0, variance) noise to the image scaled to [0, 1], clips, rounds to uint8."""
  image = _check_image(image, 'gaussian_noise')
  _check_rng(rng, 'gaussian_noise')
  if not float(variance) >= 0.0:
    raise ValueError(f'gaussian_noise: variance must be >= 0; got {variance!r}.')
  x = image.astype(np.float64) / 255.0
  x = x + rng.normal(0.0, np.sqrt(float(variance)), size=x.shape)
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def clean(image, boxes=None, rng=None):
  """The unperturbed image (a copy), the 'Original' column of Table 3."""
  return _check_image(image, 'clean').copy()


def _gaussian_noise_entry(image, boxes, rng):
  del boxes  # the noise covers the whole image
  return gaussian_noise(image, rng)


CORRUPTIONS = {
    'clean': clean,
    'black_patch': black_patch,
    'random_patch': random_patch,
    'flipped_patch': flipped_patch,
    'gaussian_noise': _gaussian_noise_entry,
}


def patch_mask(boxes, height: int, width: int, shape=None) -> np.ndarray:
  """Boolean mask of the union of the centre patches of ``boxes`` (the ``patch_region`` of
  each box in an image of ``height x width``), as an array of ``shape`` (default
  ``(height, width)``; a larger shape, e.g. a padded batch frame, stays False outside)."""
  boxes = _check_boxes(boxes, 'patch_mask')
  shape = (int(height), int(width)) if shape is None else tuple(int(s) for s in shape)
  if shape[0] < height or shape[1] < width:
    raise ValueError(f'patch_mask: shape {shape} is smaller than the image ({height}, {width}).')
  mask = np.zeros(shape, bool)
  for box in boxes:
    region = patch_region(box, int(height), int(width))
    if region is not None:
      y0, y1, x0, x1 = region
      mask[y0:y1, x0:x1] = True
  return mask


NOISE_SPACES = ('pixels01', 'network_input')


def network_input_noise(images, image_hw, pixel_std, rngs, variance: float = 0.01):
  """The 'network_input' reading of the Gaussian-noise column on a batch.

  Args:
    images: uint8 ``[B, H, W, C]`` resized, zero-padded images (the loader's batch).
    image_hw: int ``[B, 2]``, the valid (unpadded) size of each image.
    pixel_std: the per-channel std of the network's normalisation on [0, 1]
      (``config.data.pixel_std``); ``normalize(x) = (x - 255 mean) / (255 std)``.
    rngs: one ``np.random.Generator`` per image (None: the image is left clean, e.g. padding).
    variance: of the noise in network-input units (AP-loss: 0.01).
  Returns:
    float32 ``[B, H, W, C]`` pixels ``x + 255 std n`` with ``n ~ N(0, variance)`` drawn as
    ``rng.normal(0, sqrt(variance), (h, w, C))`` on the valid ``h x w`` region (0 on padding),
    so that ``normalize(out) = normalize(x) + n``. Not clipped to [0, 255]: the noise is on
    what the network sees, not on a stored image.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f'network_input_noise: images must be uint8 [B, H, W, C]; got dtype '
                     f'{images.dtype} and shape {images.shape}.')
  if not float(variance) >= 0.0:
    raise ValueError(f'network_input_noise: variance must be >= 0; got {variance!r}.')
  image_hw = np.asarray(image_hw).reshape(-1, 2)
  if len(rngs) != images.shape[0] or image_hw.shape[0] != images.shape[0]:
    raise ValueError(f'network_input_noise: need one rng and one image_hw per image; got '
                     f'{len(rngs)} rngs and {image_hw.shape[0]} sizes for {images.shape[0]} images.')
  scale = 255.0 * np.asarray(pixel_std, np.float64).reshape(-1)
  out = images.astype(np.float32)
  for i, rng in enumerate(rngs):
    if rng is None:
      continue
    _check_rng(rng, 'network_input_noise')
    h, w = (int(v) for v in image_hw[i])
    noise = rng.normal(0.0, np.sqrt(float(variance)), size=(h, w, images.shape[3]))
    out[i, :h, :w] = (out[i, :h, :w] + noise * scale).astype(np.float32)
  return out


ADVERSARIAL = ('adv_patch', 'deepfool')   # jaxdet.evaluation.adversarial (need gradients)


def robustness_columns() -> tuple:
  """Every name ``config.eval.robustness`` accepts: the image corruptions and ``ADVERSARIAL``."""
  return tuple(CORRUPTIONS) + ADVERSARIAL


def check_robustness_names(names) -> None:
  """ValueError naming ``config.eval.robustness`` if a name is unknown or repeated."""
  names = list(names)
  valid = robustness_columns()
  unknown = [n for n in names if n not in valid]
  if unknown or not names or len(set(names)) != len(names):
    what = (f'unknown name(s) {unknown}' if unknown else 'an empty list' if not names
            else 'repeated names')
    raise ValueError(f'config.eval.robustness={tuple(names)!r} has {what}; valid names: '
                     f'{", ".join(valid)}.')


def get_corruption(name: str):
  """The corruption function ``fn(image, boxes, rng) -> image`` called ``name``."""
  if name not in CORRUPTIONS:
    raise ValueError(f'unknown corruption {name!r}; valid ones are {sorted(CORRUPTIONS)}.')
  return CORRUPTIONS[name]
