"""Aspect-ratio grouping: batches of one orientation, in an order that is a pure function of the step.

COCO images are mostly landscape (about 3 : 1), and padding every batch to one square that holds
both orientations (1344 x 1344 for "short side 800, long side at most 1333") spends 68 % more pixels
than the images have. Detectron2 groups images by orientation (``AspectRatioGroupedDataset``) so
that a batch is padded to its own images' extent; here the groups are fixed *buckets* with one
static shape each -- ``(S, L)`` for landscape (``w >= h``) and ``(L, S)`` for portrait -- so the
jitted step compiles once per bucket, and the grouping is done on the *order*, not on a stream, so
that batch ``s`` stays a pure function of ``(seed, s)`` and resume stays exact.

Train order of epoch ``e`` (``G`` = global batch size):
  1. the loader's permutation ``perm_e`` of the source, split stably into the landscape list and
     the portrait list (each keeps ``perm_e``'s order);
  2. each list cut into blocks of ``G``; a last, short block is completed with the first images of
     the same list (cyclically, if the list is shorter than ``G``), so every image is seen every
     epoch and nothing is dropped;
  3. the blocks shuffled by a permutation drawn from ``(seed, tag, e)``.
The epoch has ``sum_g ceil(n_g / G)`` steps. Evaluation makes one pass: the landscape images in
source order, then the portrait ones, each list padded to whole blocks with ``None``.

Orientation comes from the image size without decoding the image: ``source.annotation(i)``
(``height`` / ``width``) where a source has it, else ``source[i]``.
"""
from __future__ import annotations

import math

import numpy as np

LANDSCAPE, PORTRAIT = 0, 1
_BLOCK_TAG = 7006  # RNG tag of the block order (loader tags: 7001 permutations, 7002-7005 examples)


def bucket_shapes(image_size) -> tuple[tuple[int, int], tuple[int, int]]:
  """``(landscape (S, L), portrait (L, S))`` from ``image_size = (S, L)``, ``S <= L``."""
  s, l = (int(v) for v in image_size)
  if s > l:
    raise ValueError(f"with aspect-ratio grouping image_size is the landscape bucket (H, W) with "
                     f"H <= W (e.g. (800, 1344)); got {tuple(image_size)}")
  return (s, l), (l, s)


def orientations(source) -> np.ndarray:
  """``int8 [N]``: PORTRAIT (1) where an image is taller than wide, else LANDSCAPE (0)."""
  annotation = getattr(source, "annotation", None)
  out = np.zeros(len(source), np.int8)
  for i in range(len(source)):
    ex = annotation(i) if annotation is not None else source[i]
    if ex.height < 1 or ex.width < 1:
      raise ValueError(f"aspect-ratio grouping needs image sizes: {type(source).__name__}[{i}] "
                       f"(image id {ex.image_id}) has height={ex.height}, width={ex.width}. Fix the "
                       "source's sizes or set --config.data.aspect_ratio_grouping=False.")
    out[i] = PORTRAIT if ex.height > ex.width else LANDSCAPE
  return out


def _blocks(indices: np.ndarray, block: int, fill_cyclic: bool) -> list[list[int | None]]:
  n = len(indices)
  out = []
  for start in range(0, n, block):
    part = [int(i) for i in indices[start:start + block]]
    if len(part) < block:
      part += ([int(indices[j % n]) for j in range(block - len(part))] if fill_cyclic
               else [None] * (block - len(part)))
    out.append(part)
  return out


class GroupedOrder:
  """The global batches of a grouped loader: ``batch(epoch_or_none, j) -> (group, indices)``.

  Args:
    groups: ``int [N]`` group of every source index (LANDSCAPE / PORTRAIT; any small ints work).
    global_batch: ``G``, images per global batch.
    seed: the loader's seed (block order tag 7006).
  """

  def __init__(self, groups, global_batch: int, seed: int):
    self.groups = np.asarray(groups)
    self.global_batch = int(global_batch)
    self.seed = int(seed)
    self.group_ids = sorted(int(g) for g in np.unique(self.groups))
    counts = [int(np.sum(self.groups == g)) for g in self.group_ids]
    self.steps_per_epoch = sum(math.ceil(c / self.global_batch) for c in counts)
    self._epochs: dict[int, list[tuple[int, list[int]]]] = {}

  def train_epoch(self, epoch: int, permutation: np.ndarray) -> list[tuple[int, list[int]]]:
    """``[(group, G source indices)]`` of epoch ``epoch``, whose loader permutation is given."""
    cached = self._epochs.get(epoch)
    if cached is not None:
      return cached
    perm = np.asarray(permutation)
    blocks = []
    for g in self.group_ids:
      members = perm[self.groups[perm] == g]
      blocks += [(g, b) for b in _blocks(members, self.global_batch, fill_cyclic=True)]
    order = np.random.default_rng([self.seed, _BLOCK_TAG, epoch]).permutation(len(blocks))
    out = [blocks[i] for i in order]
    self._epochs[epoch] = out
    for old in [e for e in self._epochs if e < epoch - 2]:
      del self._epochs[old]
    return out

  def eval_pass(self) -> list[tuple[int, list[int | None]]]:
    """``[(group, G source indices or None)]``: each group in source order, padded with None."""
    out = []
    for g in self.group_ids:
      members = np.flatnonzero(self.groups == g)
      out += [(g, b) for b in _blocks(members, self.global_batch, fill_cyclic=False)]
    return out
