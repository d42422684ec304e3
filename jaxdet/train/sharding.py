"""Device mesh and data sharding: one program for 1 CPU, 8 GPUs or a TPU pod.

Every array in a train step is a global ``jax.Array``. The batch is split over
the ``'data'`` axis of a mesh that spans every device of every process; the
train state is replicated (pure data parallelism, as in the papers' multi-GPU
training). Each process feeds only its own rows of the global batch
(``jax.make_array_from_process_local_data``), so the input pipeline never
reads data another host owns.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  """A 1-D mesh named 'data' over all devices of all processes."""
  devices = np.asarray(jax.devices())
  return Mesh(devices, (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch_size(global_batch: int, mesh: Mesh,
                            key: str = "config.train.batch_size") -> int:
  """Returns the per-process batch size, or raises a ConfigError naming ``key``."""
  from jaxdet.train.config_check import ConfigError
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  multiple = math.lcm(n_dev, n_proc)
  if global_batch < 1 or global_batch % multiple:
    nearest = max(multiple, global_batch // multiple * multiple)
    raise ConfigError(
        f"{key}={global_batch} is not a positive multiple of the {n_dev} devices of the mesh "
        f"({n_proc} process(es)); set --{key}={nearest} or another multiple of {multiple}.")
  return global_batch // n_proc


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the per-process numpy batch into global arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def to_host(tree: Any) -> Any:
  """Fetches a pytree of (possibly multi-host sharded) arrays to numpy on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)
