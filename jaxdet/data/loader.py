"""Step-indexed host input pipeline: deterministic order, per-process shards, prefetched batches.

The data position is the global step. Training reads an endless stream of example *positions*
``0, 1, 2, ...``; position ``p`` is source index ``perm_e[p % N]`` of epoch ``e = p // N``, where
``perm_e`` is a permutation drawn from ``(seed, e)``. Global batch ``s`` is positions
``[s*G, (s+1)*G)`` with ``G = batch_size * process_count``; process ``i`` takes the slice
``[s*G + i*batch_size, s*G + (i+1)*batch_size)``. Per-example randomness (augmentation) for
position ``p`` comes from ``(seed, tag, p)`` alone (``StepLoader.example_rng``). Hence a run resumed
with ``start_step=k`` yields exactly batches ``k, k+1, ...`` of the uninterrupted run, for any
``num_workers``, and the union of all processes' batches does not depend on ``process_count`` for a
fixed global batch.

Evaluation makes one pass in source order with the same block layout; positions ``>= N`` are
padding (passed to ``collate`` as ``None``), so every process yields the same number of batches.

With ``groups`` (aspect-ratio grouping, ``jaxdet.data.aspect_groups``) every global batch holds
images of one group only: the epoch's permutation is split by group and cut into blocks, and the
blocks are shuffled, all from ``(seed, epoch)``; batch ``s`` is still a pure function of
``(seed, s)``. Positions then only name the slots (``s*G + slot``) for ``example_rng``.

``StepLoader`` holds only this order and the prefetching: examples are prepared in a thread pool
(PIL and numpy release the GIL), a few batches ahead of the consumer. What an example *is* comes
from a subclass, which implements ``prepare(position, index)`` (one example) and
``collate(examples)`` (a batch dict of numpy arrays); ``detection_loader.DetectionLoader`` is the
box-detection one. The trainer turns batches into global ``jax.Array``s
(``jax.make_array_from_process_local_data``).
"""
from __future__ import annotations

import abc
import collections
import concurrent.futures
import math
import sys
from typing import Any, Iterator

import numpy as np

_PERM_TAG = 7001  # RNG tag of the epoch permutations; reserved, ``example_rng`` refuses it


class StepLoader(abc.ABC):
  """Iterable over batches that are a pure function of the global step.

  Subclasses implement the two plug-in points, both called with this loader's order:

  * ``prepare(position, index) -> example``: the example at global ``position``, read from
    ``source[index]``. Must be a deterministic function of ``(position, index)`` and the loader's
    settings: its randomness must come from ``self.example_rng(tag, position)``. Runs in worker
    threads, concurrently with other calls (guard shared mutable state with a lock).
  * ``collate(examples) -> dict[str, np.ndarray]``: one batch from this process's
    ``batch_size`` examples, in position order; ``None`` entries are eval padding and should be
    marked invalid (e.g. an ``example_valid`` mask). Runs in the iterating thread.

  Args:
    source: the data; only ``len(source)`` is used here (``prepare`` reads the examples).
    batch_size: examples per batch *of this process*.
    train: endless stream, reshuffled every epoch; or a single ordered pass, padded to whole
      batches.
    seed: non-negative int; fixes the epoch permutations and ``example_rng``.
    num_workers: ``prepare`` threads (0: prepare in the iterating thread).
    process_index, process_count: this process's slice of each global batch.
    start_step: first global step yielded by ``iter(loader)`` (resume from a checkpoint).
    prefetch: batches in flight ahead of the consumer (with ``num_workers > 0``).
    groups: optional ``int [N]`` group of each source index: every batch then holds one group
      (``aspect_groups.GroupedOrder``; ``group(step)`` says which) -- aspect-ratio buckets.
  """

  def __init__(self, source, *, batch_size: int, train: bool, seed: int = 0, num_workers: int = 2,
               process_index: int = 0, process_count: int = 1, start_step: int = 0,
               prefetch: int = 2, groups=None):
    if len(source) == 0:
      raise ValueError("source is empty: the loader needs at least one example.")
    if batch_size < 1:
      raise ValueError(f"batch_size (per process) must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if start_step < 0 or num_workers < 0 or prefetch < 1:
      raise ValueError("start_step and num_workers must be >= 0 and prefetch >= 1, got "
                       f"{start_step}, {num_workers}, {prefetch}")
    self.source = source
    self.batch_size = int(batch_size)
    self.train = bool(train)
    self.seed = int(seed)
    self.num_workers = int(num_workers)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.start_step = int(start_step)
    self.prefetch = int(prefetch)
    self._perms: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._grouped = None
    if groups is not None:
      from jaxdet.data.aspect_groups import GroupedOrder
      groups = np.asarray(groups)
      if groups.shape != (len(source),):
        raise ValueError(f"groups must give one group per source index ({len(source)}), got shape "
                         f"{groups.shape}")
      self._grouped = GroupedOrder(groups, self.global_batch_size, self.seed)
      self._eval_blocks = None if self.train else self._grouped.eval_pass()

  # ------------------------------------------------------------------ plug-in points
  @abc.abstractmethod
  def prepare(self, position: int, index: int) -> Any:
    """The example at global ``position`` (``source[index]``); see the class docstring."""

  @abc.abstractmethod
  def collate(self, examples: list[Any | None]) -> dict[str, np.ndarray]:
    """This process's batch from its examples (``None``: eval padding); see the class docstring."""

  def example_rng(self, tag: int, position: int) -> np.random.Generator:
    """``np.random.default_rng([seed, tag, position])``: the randomness of one example.

    Use one fixed ``tag`` per independent stream (e.g. one for augmentation, one for a
    corruption), so that adding a stream leaves the others unchanged. Tag 7001 is reserved.
    """
    if tag == _PERM_TAG:
      raise ValueError(f"example_rng tag {_PERM_TAG} is reserved for the epoch permutations")
    return np.random.default_rng([self.seed, tag, position])

  # ------------------------------------------------------------------ order
  @property
  def global_batch_size(self) -> int:
    return self.batch_size * self.process_count

  @property
  def steps_per_epoch(self) -> int:
    """Train: full global batches per pass over the data (at least 1; epochs run into each
    other, nothing is dropped). Eval: batches of the single pass (last one padded)."""
    n, g = len(self.source), self.global_batch_size
    if self._grouped is not None:  # every group's last block is completed (train) or padded
      return self._grouped.steps_per_epoch
    return max(1, n // g) if self.train else math.ceil(n / g)

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      rng = np.random.default_rng([self.seed, _PERM_TAG, epoch])
      perm = rng.permutation(len(self.source))
      self._perms[epoch] = perm
      while len(self._perms) > 3:
        self._perms.popitem(last=False)
    return perm

  def positions(self, step: int) -> np.ndarray:
    """Global example positions of this process's share of global batch ``step``. In a grouped
    eval pass a real example's position is its source index, as in an ungrouped one, so its
    ``example_rng`` streams (e.g. a corruption's noise) do not depend on the batching."""
    start = step * self.global_batch_size + self.process_index * self.batch_size
    positions = np.arange(start, start + self.batch_size, dtype=np.int64)
    if self._grouped is not None and not self.train:
      positions = np.array([p if i is None else i for p, i in zip(positions, self.indices(step))],
                           np.int64)
    return positions

  def _group_block(self, step: int) -> tuple[int, list[int | None]]:
    """(group, global block of source indices) of batch ``step`` of a grouped loader."""
    if not self.train:
      return self._eval_blocks[step]
    epoch, j = divmod(step, self._grouped.steps_per_epoch)
    return self._grouped.train_epoch(epoch, self._permutation(epoch))[j]

  def group(self, step: int) -> int:
    """The group of batch ``step`` (0 without ``groups``)."""
    return 0 if self._grouped is None else self._group_block(step)[0]

  def indices(self, step: int) -> list[int | None]:
    """Source indices of this process's share of batch ``step`` (None: eval padding)."""
    if self._grouped is not None:
      start = self.process_index * self.batch_size
      return list(self._group_block(step)[1][start:start + self.batch_size])
    n = len(self.source)
    out = []
    for p in self.positions(step):
      if self.train:
        out.append(int(self._permutation(int(p // n))[p % n]))
      else:
        out.append(int(p) if p < n else None)
    return out

  def collate_step(self, step: int, examples: list[Any | None]) -> dict[str, np.ndarray]:
    """``collate(examples)``; a grouped subclass overrides it to use ``group(step)`` (e.g. the
    padded shape of a batch that is all eval padding on this process)."""
    del step
    return self.collate(examples)

  # ------------------------------------------------------------------ iteration
  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self.iterate(self.start_step)

  def iterate(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches ``start_step, start_step + 1, ...`` (train: forever; eval: to the end of the pass)."""
    stop = None if self.train else self.steps_per_epoch
    steps = iter(range(start_step, stop)) if stop is not None else _count(start_step)

    if self.num_workers == 0:
      for step in steps:
        yield self.collate_step(step, [None if i is None else self.prepare(int(p), i)
                                       for p, i in zip(self.positions(step), self.indices(step))])
      return

    pool = concurrent.futures.ThreadPoolExecutor(self.num_workers, thread_name_prefix="jaxdet-data")
    pending: collections.deque = collections.deque()

    def submit() -> bool:
      step = next(steps, None)
      if step is None:
        return False
      pending.append((step, [None if i is None else pool.submit(self.prepare, int(p), i)
                             for p, i in zip(self.positions(step), self.indices(step))]))
      return True

    try:
      for _ in range(self.prefetch):
        if not submit():
          break
      while pending:
        step, futures = pending.popleft()
        submit()
        yield self.collate_step(step, [None if f is None else f.result() for f in futures])
    finally:  # runs on exhaustion, close() or garbage collection of the generator
      if not sys.is_finalizing():  # at interpreter exit concurrent.futures is torn down
        pool.shutdown(wait=True, cancel_futures=True)


def _count(start: int):
  while True:
    yield start
    start += 1
