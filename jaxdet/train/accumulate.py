"""Gradient accumulation inside one jitted train step (``config.train.accumulate_steps``).

A step on the global batch of B images normally differentiates the loss of all B at once, so
the backward pass holds the activations of B images. With ``accumulate_steps = k`` the batch is
split into k micro-batches of B/k images that ``jax.lax.scan`` differentiates one after the
other, summing their gradients in a buffer the size of the parameters; the optimizer then makes
ONE update. Peak activation memory is that of B/k images; the update is the big batch's.

**Combination.** With micro-batch losses L_1..L_k (each computed by ``loss_fn`` on its B/k
images) the step's loss and gradient are

    L = (L_1 + ... + L_k) / Z,        dL/dθ = (dL_1/dθ + ... + dL_k/dθ) / Z.

* Default Z = k. If the loss is a mean over images, L_big = (1/B) Σ_b l_b =
  (1/k) Σ_i (k/B) Σ_{b in i} l_b = (1/k) Σ_i L_i: the accumulated loss and gradient equal the
  big batch's exactly (up to float summation order).
* ``normalizer(aux) -> Z``: losses normalised by a count over the *whole* batch, e.g. the focal
  loss Σ_anchors FL / N_pos with N_pos the positive anchors of all B images. A micro-batch's
  own N_pos^(i) differs from the batch's, so averaging L_i = S_i / N_pos^(i) over micro-batches
  is not the big batch's S / N_pos (it up-weights micro-batches with few positives). Exact
  instead: ``loss_fn`` returns the un-normalised sum L_i = S_i (plus the count in ``aux``), and
  Z = N_pos = Σ_i count_i is formed from the stacked aux after the scan:
  Σ_i S_i / N_pos = S / N_pos. Counts do not depend on the parameters, so dividing the summed
  gradient by Z is the gradient of the big-batch loss.

Losses that couple images beyond a count do not decompose: AP/AUC-loss rank every (anchor,
class) score of the batch against every other, BatchNorm normalises with the batch's
statistics. Accumulating them means the same loss on micro-batches of B/k images (ranking /
statistics within each micro-batch), averaged — the approximation detectron2 and mmdetection
make; BatchNorm running averages are updated once per micro-batch (k EMA updates per step).
For AP-loss this is ranking groups of B/k images (as ``loss.ap_per_device`` ranks within each
device's shard), each normalised by its own |P|, not the paper's ranking over the whole batch.
(An exact version would need two passes: forward all micro-batches keeping only the logits,
form the AP-loss error-driven update on all of them, then backpropagate each micro-batch's
share through a recomputed forward.)

**Cost.** One more parameter-sized buffer (the gradient sum) and a sequential loop: on GPU/TPU
about the time of the k small steps. XLA:CPU runs convolution gradients inside the loop several
times slower than the same step unrolled (measured ~7x for the demo RetinaNet), and an unrolled
loop loses the memory saving (XLA schedules the micro-batches together), so on CPU accumulate
only to fit memory.

**Micro-batches and sharding.** The batch's leading axis is split over the mesh's ``'data'``
axis, device d holding rows [d B/D, (d+1) B/D). Micro-batch i takes rows i, i+k, i+2k, ...
(``batch[i::k]``, as ``x.reshape(B/k, k, ...).swapaxes(0, 1)[i]``): with B divisible by k D,
every device owns exactly B/(k D) rows of each micro-batch, so the split moves no data; a
sharding constraint ``P(None, 'data')`` on the stacked micro-batches tells XLA so (no
all-gather). ``check_accumulate_steps`` validates this divisibility.

**State and randomness.** ``carry`` (e.g. ``{'batch_stats': ...}``) is threaded through the
micro-batches in order, as k consecutive small steps would. Micro-batch i gets the key
``fold_in(rng, i)`` (with k = 1 the key itself, so k = 1 is the plain ``value_and_grad``).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdet.train.config_check import ConfigError
from jaxdet.train.sharding import DATA_AXIS

KEY = "config.train.accumulate_steps"


def data_shards(mesh) -> int:
  """Number of shards of the batch axis (the size of the mesh's 'data' axis; 1 without mesh)."""
  if mesh is None:
    return 1
  return int(dict(mesh.shape).get(DATA_AXIS, 1))


def check_accumulate_steps(batch_size: int, accumulate_steps, mesh=None, *,
                           key: str = KEY) -> int:
  """Returns ``accumulate_steps`` or raises a ConfigError naming ``key``: it must be an int
  >= 1 that splits ``batch_size`` into micro-batches still divisible by the data shards."""
  if isinstance(accumulate_steps, bool) or not isinstance(accumulate_steps, int) or \
      accumulate_steps < 1:
    raise ConfigError(f"{key}={accumulate_steps!r}: must be an integer >= 1 (1: no "
                      f"accumulation).")
  n = data_shards(mesh)
  multiple = accumulate_steps * n
  if batch_size % multiple:
    raise ConfigError(
        f"{key}={accumulate_steps} does not split config.train.batch_size={batch_size} into "
        f"micro-batches that stay evenly sharded over the {n} data shard(s) of the mesh: the batch "
        f"size must be a multiple of accumulate_steps x shards = {multiple}. Use an "
        f"accumulate_steps that divides {batch_size // n} (images per shard) or change the batch "
        f"size.")
  return accumulate_steps


def split_micro_batches(batch: Any, accumulate_steps: int, mesh=None) -> Any:
  """Every leaf [B, ...] -> [k, B/k, ...] with entry i = ``leaf[i::k]`` (module docstring).

  With a mesh, the result is constrained to ``P(None, 'data')`` so each device keeps its rows.
  """
  k = accumulate_steps
  sharding = None if mesh is None else NamedSharding(mesh, P(None, DATA_AXIS))

  def split(x):
    x = jnp.asarray(x)
    b = x.shape[0]
    # Row r = j k + i goes to micro-batch i, position j.
    y = jnp.swapaxes(x.reshape(b // k, k, *x.shape[1:]), 0, 1)
    return y if sharding is None else jax.lax.with_sharding_constraint(y, sharding)

  return jax.tree.map(split, batch)


def value_and_grad_accumulated(
    loss_fn: Callable, params: Any, batch: Any, accumulate_steps: int = 1, *,
    carry: Any = None, rng: jax.Array | None = None, mesh=None,
    normalizer: Callable[[Any], jax.Array] | None = None, aux_reduce: str = "mean",
) -> tuple[tuple[jax.Array, tuple[Any, Any]], Any]:
  """``jax.value_and_grad(..., has_aux=True)`` of a batch, k micro-batches at a time.

  Args:
    loss_fn: ``(params, micro_batch, carry, rng) -> (loss, (aux, new_carry))``; ``loss`` a
      scalar, ``aux`` a pytree of arrays (metrics, counts), ``new_carry`` the same structure as
      ``carry`` (e.g. the model state with updated BatchNorm statistics).
    params: differentiated argument.
    batch: pytree of arrays with the batch on the leading axis (B divisible by k x shards).
    accumulate_steps: k; 1 calls ``loss_fn`` once on the whole batch.
    carry: threaded through the micro-batches in order (None: nothing to thread).
    rng: key of the step; micro-batch i gets ``fold_in(rng, i)`` (k = 1: ``rng``).
    mesh: the mesh whose 'data' axis shards the batch (keeps micro-batches sharded).
    normalizer: ``(aux stacked over micro-batches, leaves [k, ...]) -> Z``; default k (the
      mean). The loss and gradient are Σ_i L_i / Z (module docstring).
    aux_reduce: 'mean' (over micro-batches) or 'stack' (leaves [k, ...], for the caller to
      combine; k = 1 gives [1, ...]).

  Returns:
    ``((loss, (aux, carry)), grads)`` as ``jax.value_and_grad(..., has_aux=True)``.
  """
  if aux_reduce not in ("mean", "stack"):
    raise ValueError(f"aux_reduce={aux_reduce!r}: use 'mean' or 'stack'.")
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError("value_and_grad_accumulated: the batch has no arrays to split.")
  k = check_accumulate_steps(leaves[0].shape[0], accumulate_steps, mesh)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  if k == 1:
    (loss, (aux, carry)), grads = grad_fn(params, batch, carry, rng)
    if normalizer is None and aux_reduce == "mean":
      return (loss, (aux, carry)), grads
    stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], aux)
    if normalizer is not None:
      z = jax.lax.stop_gradient(normalizer(stacked))
      loss, grads = loss / z, jax.tree.map(lambda g: (g / z).astype(g.dtype), grads)
    return (loss, (stacked if aux_reduce == "stack" else aux, carry)), grads

  micro = split_micro_batches(batch, k, mesh)
  row_sharding = None if mesh is None else NamedSharding(mesh, P(DATA_AXIS))
  # Gradients are summed in float32 (or wider) whatever the parameter dtype.
  acc_dtype = lambda p: jnp.promote_types(p.dtype, jnp.float32)  # noqa: E731
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, acc_dtype(p)), params)

  def body(state, xs):
    grad_sum, carry = state
    micro_batch, i = xs
    if row_sharding is not None:
      micro_batch = jax.tree.map(
          lambda x: jax.lax.with_sharding_constraint(x, row_sharding), micro_batch)
    key = None if rng is None else jax.random.fold_in(rng, i)
    (loss, (aux, carry)), grads = grad_fn(params, micro_batch, carry, key)
    grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype), grad_sum, grads)
    return (grad_sum, carry), (loss, aux)

  (grad_sum, carry), (losses, aux) = jax.lax.scan(
      body, (zeros, carry), (micro, jnp.arange(k, dtype=jnp.int32)))
  z = jnp.float32(k) if normalizer is None else jax.lax.stop_gradient(normalizer(aux))
  loss = jnp.sum(losses) / z
  grads = jax.tree.map(lambda s, p: (s / z).astype(p.dtype), grad_sum, params)
  if aux_reduce == "mean":
    aux = jax.tree.map(lambda a: jnp.mean(a, axis=0), aux)
  return (loss, (aux, carry)), grads
