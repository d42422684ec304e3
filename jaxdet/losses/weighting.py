"""ALWA: Adaptive Loss Weight Adjustment (Yu et al., "Revisiting the Loss Weight
Adjustment in Object Detection", Eq. 9 and Algorithm 1).

The detection loss is weighted as (Eq. 9)

    L = lambda_cls * L_cls + lambda_reg * L_reg

and the weights are adapted during training from statistics of the recorded losses:
every C iterations, over the C losses recorded since the last update,

    ALWA_1:  cls = mean(S_cls) + std(S_cls),   reg = mean(S_reg) + std(S_reg)
    ALWA_2:  cls = std(S_cls),                 reg = std(S_reg)
    if cls > reg:  lambda_cls = 1 - (cls - reg) / cls      (lambda_reg is left as it is)

and the record is cleared.

Usage inside a jitted train step (the state is a pytree; keep it in the train state so it
is checkpointed with everything else)::

    lam_cls, lam_reg = alwa_weights(alwa_state)          # weights for *this* step
    loss = lam_cls * cls_loss + lam_reg * reg_loss       # Eq. 9 (inside the grad fn)
    alwa_state = alwa_update(alwa_state, cls_loss, reg_loss, statistic='alwa2')

Order of operations (checked against Algorithm 1 and the authors' public code):
  * The loss of step i is weighted with the lambdas held *before* step i's update
    (Algorithm 1 line 6 multiplies by the current lambdas before line 14 updates them; in
    the authors' mmdetection anchor head the returned losses are multiplied by
    ``self.cls_weight`` before the update assigns a new ``self.cls_weight``). A new
    lambda_cls therefore takes effect from the step *after* the window closes.
  * What is recorded is, by default, the already-weighted loss lambda * L (Algorithm 1
    line 6-7, and the authors' code appends the weighted values). ``record='raw'`` records
    the unweighted losses instead.
  * The update fires when C losses have been recorded since the last clear (the authors'
    code tests ``len(history) % C == 0``). Algorithm 1's ``i % C == 0`` with i starting at 0
    would fire at i = 0 with a single sample, whose sample std is undefined; we follow the
    code: the first update happens after C steps, then every C steps.
  * std is the sample standard deviation (ddof = 1), as ``np.std(..., ddof=1)`` in the code.
  * The new weight is computed from the statistics alone (it is not multiplied into the old
    weight): lambda_cls = 1 - (cls - reg)/cls = reg/cls.

Differences from the authors' code, on purpose:
  * The caller passes losses already reduced over all devices (under ``jax.jit`` on global
    arrays they are global automatically), so every device holds identical weights; the
    authors' code keeps one set of weights per GPU, from that GPU's losses only.
  * The state (weights *and* the partially filled window) lives in the train state and the
    checkpoint, so a resumed run continues the same weight trajectory; the authors' weights
    are not checkpointed.
  * Non-finite statistics (a NaN loss in the window) compare False, so the weight is then
    left unchanged.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

STATISTICS = ('alwa1', 'alwa2')
RECORD_MODES = ('weighted', 'raw')


class AlwaState(NamedTuple):
  """ALWA weights and the loss record of the current window (a pytree).

  Attributes:
    lambda_cls: f32 scalar, classification loss weight.
    lambda_reg: f32 scalar, regression loss weight (never changed by ALWA).
    cls_window: f32 [C], recorded classification losses; entries >= count are unused.
    reg_window: f32 [C], recorded regression losses; entries >= count are unused.
    count: int32 scalar, number of losses recorded since the last update (0 <= count < C).
  """
  lambda_cls: jax.Array
  lambda_reg: jax.Array
  cls_window: jax.Array
  reg_window: jax.Array
  count: jax.Array


def alwa_init(window: int = 100, lambda_cls: float = 1.0,
              lambda_reg: float = 1.0) -> AlwaState:
  """Initial ALWA state: weights (paper: 1:1, default 1.0) and an empty window of size C."""
  if isinstance(window, bool) or not isinstance(window, int) or window < 2:
    raise ValueError(
        f'alwa_init: window (the update iteration count C) must be an int >= 2 '
        f'(the sample std needs two losses); got {window!r}. The paper uses C=100.')
  for name, value in (('lambda_cls', lambda_cls), ('lambda_reg', lambda_reg)):
    if not float(value) > 0.0:
      raise ValueError(f'alwa_init: {name} must be a positive float; got {value!r}.')
  return AlwaState(
      lambda_cls=jnp.asarray(lambda_cls, jnp.float32),
      lambda_reg=jnp.asarray(lambda_reg, jnp.float32),
      cls_window=jnp.zeros((window,), jnp.float32),
      reg_window=jnp.zeros((window,), jnp.float32),
      count=jnp.zeros((), jnp.int32),
  )


def alwa_weights(state: AlwaState) -> tuple[jax.Array, jax.Array]:
  """(lambda_cls, lambda_reg) to weight the current step's losses (Eq. 9)."""
  return state.lambda_cls, state.lambda_reg


def _check_names(statistic: str, record: str) -> None:
  if statistic not in STATISTICS:
    raise ValueError(
        f'alwa_update: unknown statistic {statistic!r}; valid ones are {STATISTICS} '
        "('alwa1': mean + std, for two-stage detectors; 'alwa2': std, for one-stage).")
  if record not in RECORD_MODES:
    raise ValueError(
        f'alwa_update: unknown record {record!r}; valid ones are {RECORD_MODES} '
        "('weighted' records lambda * loss as the authors' code does; 'raw' records loss).")


def _statistic(window: jax.Array, statistic: str) -> jax.Array:
  """ALWA_1 (mean + sample std) or ALWA_2 (sample std) of a full window."""
  mean = jnp.mean(window)
  std = jnp.std(window, ddof=1)
  return mean + std if statistic == 'alwa1' else std


def alwa_update(state: AlwaState, cls_loss, reg_loss, *, statistic: str = 'alwa2',
                record: str = 'weighted') -> AlwaState:
  """Records this step's losses and, when C are recorded, updates lambda_cls (Alg. 1).

  Args:
    state: the AlwaState whose weights were used for this step's loss.
    cls_loss: scalar classification loss of this step, *unweighted* and already reduced
      over all devices / the global batch. Gradients are stopped.
    reg_loss: scalar regression loss, same conventions.
    statistic: 'alwa2' (std; the paper's choice for one-stage detectors) or 'alwa1'
      (mean + std; two-stage). Static (a Python string).
    record: 'weighted' (default, the authors' code: record lambda * loss with this step's
      lambdas) or 'raw' (record the unweighted loss). Static.

  Returns:
    The new state. Jit-compatible, no host sync, no Python control flow on traced values.
  """
  _check_names(statistic, record)
  cls_loss = jax.lax.stop_gradient(jnp.asarray(cls_loss, jnp.float32))
  reg_loss = jax.lax.stop_gradient(jnp.asarray(reg_loss, jnp.float32))
  if cls_loss.shape != () or reg_loss.shape != ():
    raise ValueError(
        f'alwa_update: cls_loss and reg_loss must be scalars (reduce them over the batch and '
        f'devices first); got shapes {cls_loss.shape} and {reg_loss.shape}.')
  if record == 'weighted':
    cls_loss = state.lambda_cls * cls_loss
    reg_loss = state.lambda_reg * reg_loss

  window = state.cls_window.shape[0]
  cls_window = state.cls_window.at[state.count].set(cls_loss)
  reg_window = state.reg_window.at[state.count].set(reg_loss)
  count = state.count + 1
  full = count >= window

  cls_stat = _statistic(cls_window, statistic)
  reg_stat = _statistic(reg_window, statistic)
  # Written as in the paper, 1 - (cls - reg)/cls; the denominator is guarded so that the
  # untaken branch never produces inf/NaN (cls > reg >= 0 whenever the branch is taken).
  safe_cls = jnp.where(cls_stat > reg_stat, cls_stat, 1.0)
  new_lambda = 1.0 - (cls_stat - reg_stat) / safe_cls
  lambda_cls = jnp.where(full & (cls_stat > reg_stat), new_lambda, state.lambda_cls)

  return AlwaState(
      lambda_cls=lambda_cls.astype(jnp.float32),
      lambda_reg=state.lambda_reg,
      cls_window=jnp.where(full, jnp.zeros_like(cls_window), cls_window),
      reg_window=jnp.where(full, jnp.zeros_like(reg_window), reg_window),
      count=jnp.where(full, jnp.zeros_like(count), count).astype(jnp.int32),
  )
