"""Gradient accumulation (jaxdet.train.accumulate) and backbone rematerialisation (ResNet.remat).

Every accumulated result is compared with an independent computation: closed-form gradients in
float64 numpy, the plain ``jax.grad`` of the whole batch, or a numpy replay of the state updates.
"""
import copy
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdet.experiments.base import Experiment
from jaxdet.experiments.defaults import loop_defaults
from jaxdet.train import accumulate
from jaxdet.train import loop
from jaxdet.train import sharding as shard_lib
from jaxdet.train.config_check import ConfigError
from jaxdet.train.optim import Optimizer
from jaxdet.train.state import NetworkState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ---- the generic function --------------------------------------------------------------------
def _linear_problem(b=12, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, d)).astype(np.float32)
  y = rng.normal(size=(b,)).astype(np.float32)
  w = rng.normal(size=(d,)).astype(np.float32)
  return x, y, w


def _mse_loss(params, batch, carry, rng):
  """Per-example mean loss; ``carry`` is a BatchNorm-like running mean of the inputs."""
  r = batch["x"] @ params["w"] + params["b"] - batch["y"]
  loss = jnp.mean(r ** 2)
  new_carry = {"mean": 0.9 * carry["mean"] + 0.1 * jnp.mean(batch["x"], axis=0),
               "count": carry["count"] + 1}
  aux = {"mse": loss, "noise": jax.random.uniform(rng)}
  return loss, (aux, new_carry)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_accumulated_mean_loss_equals_the_big_batch(k):
  x, y, w = _linear_problem()
  b = x.shape[0]
  params = {"w": jnp.asarray(w), "b": jnp.float32(0.3)}
  carry = {"mean": jnp.zeros(3), "count": jnp.int32(0)}
  rng = jax.random.PRNGKey(7)
  f = jax.jit(lambda p, bt, c, key: accumulate.value_and_grad_accumulated(
      _mse_loss, p, bt, k, carry=c, rng=key, aux_reduce="stack"))
  (loss, (aux, new_carry)), grads = f(params, {"x": x, "y": y}, carry, rng)

  # Independent: the closed-form least-squares gradient of the whole batch in float64.
  x64, r = x.astype(np.float64), x.astype(np.float64) @ w + 0.3 - y
  np.testing.assert_allclose(float(loss), np.mean(r ** 2), rtol=1e-6)
  np.testing.assert_allclose(grads["w"], 2.0 / b * x64.T @ r, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(grads["b"]), 2.0 / b * r.sum(), rtol=1e-5, atol=1e-7)
  # Micro-batch i is rows i, i+k, ...: its aux, and the carry replayed in that order.
  mean = np.zeros(3)
  for i in range(k):
    mean = 0.9 * mean + 0.1 * x64[i::k].mean(0)
    np.testing.assert_allclose(float(aux["mse"][i]), np.mean(r[i::k] ** 2), rtol=1e-5)
  np.testing.assert_allclose(new_carry["mean"], mean, rtol=1e-5, atol=1e-7)
  assert int(new_carry["count"]) == k
  keys = [rng] if k == 1 else [jax.random.fold_in(rng, i) for i in range(k)]
  np.testing.assert_array_equal(aux["noise"], [float(jax.random.uniform(key)) for key in keys])


def _count_normalised_loss(params, batch, carry, rng):
  """A detection-like loss: per-example sums divided by a batch count (e.g. positives)."""
  del rng
  s = jnp.sum((batch["x"] @ params["w"] - batch["y"]) ** 2 * batch["c"])
  count = jnp.sum(batch["c"])
  return s / jnp.maximum(count, 1.0), ({"count": count, "s": s}, carry)


def test_global_normaliser_is_exact_where_the_micro_batch_mean_is_not():
  x, y, w = _linear_problem(b=8)
  c = np.array([5, 0, 3, 0, 4, 0, 2, 0], np.float32)   # micro-batch 1 (odd rows): no positives
  batch, params = {"x": x, "y": y, "c": c}, {"w": jnp.asarray(w)}
  s_over_n = _count_normalised_loss

  def unnormalised(p, bt, cr, key):  # each micro-batch returns its sum S_i and its count
    _, (aux, cr) = _count_normalised_loss(p, bt, cr, key)
    return aux["s"], (aux, cr)

  def total_count(aux):
    return jnp.maximum(jnp.sum(aux["count"]), 1.0)

  (big, _), g_big = jax.value_and_grad(s_over_n, has_aux=True)(params, batch, None, None)
  (exact, _), g_exact = accumulate.value_and_grad_accumulated(
      unnormalised, params, batch, 2, normalizer=total_count)
  (naive, (aux, _)), g_naive = accumulate.value_and_grad_accumulated(s_over_n, params, batch, 2)
  np.testing.assert_allclose(float(aux["count"]), c.sum() / 2)   # aux_reduce='mean'
  # Independent float64 reference: sum over all rows / total count.
  r = x.astype(np.float64) @ w - y
  np.testing.assert_allclose(float(big), np.sum(r ** 2 * c) / c.sum(), rtol=1e-6)
  np.testing.assert_allclose(float(exact), float(big), rtol=1e-6)
  assert rel_err(g_exact["w"], g_big["w"]) < 1e-6
  # Averaging S_i / N_i of the micro-batches (odd rows: N = max(0, 1)) is another loss.
  assert rel_err(g_naive["w"], g_big["w"]) > 0.1
  assert abs(float(naive) - float(big)) > 0.1 * float(big)


def test_split_keeps_each_device_rows_on_8_devices():
  """Micro-batches stay sharded over 'data' (no all-gather) with 8 CPU devices."""
  script = textwrap.dedent("""
      import json, re
      import jax, jax.numpy as jnp, numpy as np
      from jaxdet.train import accumulate, sharding as shard_lib
      mesh = shard_lib.make_mesh()
      x = jax.device_put(np.arange(32 * 3, dtype=np.float32).reshape(32, 3),
                         shard_lib.batch_sharding(mesh))
      y = jax.jit(lambda a: accumulate.split_micro_batches(a, 2, mesh))(x)
      owner = {}   # original row -> device
      for s in x.addressable_shards:
        for r in range(*s.index[0].indices(32)):
          owner[r] = s.device.id
      moved = 0
      for s in y.addressable_shards:   # micro-batch i, position j <- row j * 2 + i
        for i in range(*s.index[0].indices(2)):
          for j in range(*s.index[1].indices(16)):
            moved += owner[j * 2 + i] != s.device.id
      def loss(p, b, c, k):
        return jnp.mean((b["x"] @ p - b["y"]) ** 2), ({}, c)
      f = jax.jit(lambda p, b: accumulate.value_and_grad_accumulated(loss, p, b, 2, mesh=mesh))
      batch = {"x": x, "y": jax.device_put(np.ones(32, np.float32), shard_lib.batch_sharding(mesh))}
      hlo = f.lower(jnp.ones(3), batch).compile().as_text()
      print("RESULT " + json.dumps({
          "devices": jax.device_count(), "spec": list(y.sharding.spec), "moved": moved,
          "values": bool(np.array_equal(np.asarray(y), np.asarray(x).reshape(16, 2, 3).swapaxes(0, 1))),
          "gather": len(re.findall(r"all-gather|all-to-all|collective-permute", hlo)),
          "all_reduce": len(re.findall(r"all-reduce", hlo))}))
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads([l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
  assert res["devices"] == 8
  assert res["spec"] == [None, "data"], res
  assert res["values"] and res["moved"] == 0, res
  assert res["gather"] == 0 and res["all_reduce"] >= 1, res   # only the gradient's all-reduce


# ---- configuration errors --------------------------------------------------------------------
class _Mesh:
  shape = {"data": 4}


@pytest.mark.parametrize("batch,k,mesh,match", [
    (6, 4, None, r"config\.train\.accumulate_steps=4 .*multiple of accumulate_steps x shards = 4"),
    (8, 4, _Mesh(), r"config\.train\.accumulate_steps=4 .*4 data shard.*= 16"),
    (8, 0, None, r"config\.train\.accumulate_steps=0: must be an integer >= 1"),
    (8, 2.0, None, r"config\.train\.accumulate_steps=2\.0: must be an integer"),
])
def test_bad_accumulate_steps_is_a_config_error(batch, k, mesh, match):
  with pytest.raises(ConfigError, match=match):
    accumulate.check_accumulate_steps(batch, k, mesh)
  assert accumulate.check_accumulate_steps(16, 2, _Mesh()) == 2


def test_detector_rejects_bad_accumulate_steps_and_remat_at_construction():
  from jaxdet.experiments.retinanet import RetinaNetExperiment
  meta = {"categories": {"ids": [1, 2], "names": ["a", "b"]}}
  mesh = shard_lib.make_mesh()
  with pytest.raises(ConfigError, match=r"config\.train\.accumulate_steps=4 "):
    RetinaNetExperiment(_tiny_retinanet_config(batch=6, k=4), mesh, metadata=meta)
  with pytest.raises(ConfigError, match=r"config\.model\.remat='stage'.*none.*stages.*blocks"):
    RetinaNetExperiment(_tiny_retinanet_config(remat="stage"), mesh, metadata=meta)


# ---- the loop --------------------------------------------------------------------------------
class AccumulatingToy(Experiment):
  """Least squares w.x ~ y with plain SGD, the gradient accumulated over k micro-batches."""
  name = "toy_accumulate"

  @classmethod
  def config_schema(cls):
    c = loop_defaults()
    c.experiment = cls.name
    c.train.accumulate_steps = 2
    c.train.update(dict(num_steps=4, log_every=2, checkpoint_every=2, eval_every=0,
                        keep_checkpoints=2, batch_size=8, progress_bar=False))
    return c

  def __init__(self, batch_size=8):
    config = self.config_schema()
    config.train.batch_size = batch_size
    super().__init__(config, shard_lib.make_mesh())
    self.opt = Optimizer(tx=optax.identity(), schedule=lambda step: 0.1)
    self.x, self.y, _ = _linear_problem(b=batch_size, seed=1)

  def init(self, rng):
    return NetworkState.create(params={"w": jnp.zeros(3)}, optimizer=self.opt)

  def train_step(self, state, batch, step, rng):
    def loss_fn(params, batch, carry, rng):
      return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2), ({}, carry)
    (loss, _), grads = accumulate.value_and_grad_accumulated(
        loss_fn, state.params, batch, self.config.train.accumulate_steps, rng=rng,
        mesh=self.mesh)
    return state.apply_gradients(self.opt, grads, step), {"loss": loss}

  def train_batches(self, start_step):
    while True:
      yield {"x": self.x, "y": self.y}

  def evaluate(self, state, *, workdir, step):
    self.final_w = np.asarray(state.params["w"])
    return {}


def test_loop_trains_with_accumulation(tmp_path):
  exp = AccumulatingToy()
  loop.train_and_evaluate(exp, str(tmp_path))
  # Independent: 4 full-batch gradient-descent steps in float64.
  x, y, w = exp.x.astype(np.float64), exp.y.astype(np.float64), np.zeros(3)
  for _ in range(4):
    w = w - 0.1 * 2.0 / len(y) * x.T @ (x @ w - y)
  np.testing.assert_allclose(exp.final_w, w, rtol=1e-5, atol=1e-6)
  lines = [json.loads(l) for l in open(tmp_path / "train_metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 4]
  assert lines[-1]["loss"] < lines[0]["loss"]


def test_loop_with_an_indivisible_batch_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"config\.train\.accumulate_steps=2 .*batch_size=3"):
    loop.train_and_evaluate(AccumulatingToy(batch_size=3), str(tmp_path))


# ---- RetinaNet ---------------------------------------------------------------------------------
def _tiny_retinanet_config(batch=4, k=1, remat="none"):
  from jaxdet.experiments.defaults import detector_defaults
  c = detector_defaults()
  c.data.image_size, c.data.short_side, c.data.max_side = (64, 64), 64, 64
  c.model.depth, c.model.width, c.model.norm, c.model.frozen_stages = 18, 8, "group_norm", -1
  c.model.min_level, c.model.max_level = 3, 5
  c.model.fpn_filters = c.model.head_filters = 16
  c.model.head_convs, c.model.anchor_size = 1, 2.0
  c.model.remat = remat
  c.optim.base_lr, c.optim.base_batch, c.optim.warmup_steps = 0.01, batch, 0
  c.optim.weight_decay, c.optim.decay_steps = 0.0, ()    # update = -lr * momentum trace = -lr g
  c.train.batch_size, c.train.accumulate_steps = batch, k
  return c


def _unbalanced_batch():
  """4 images; micro-batch 0 (rows 0, 2) has 5 objects, micro-batch 1 (rows 1, 3) has 1."""
  rng = np.random.default_rng(0)
  g = 4
  boxes = np.zeros((4, g, 4), np.float32)
  valid = np.zeros((4, g), bool)
  classes = np.zeros((4, g), np.int32)
  for row, n in ((0, 3), (2, 2), (3, 1)):          # row 1: no object at all
    for j in range(n):
      x1, y1 = rng.uniform(0, 40, 2)
      s = rng.uniform(10, 24)
      boxes[row, j] = (x1, y1, x1 + s, y1 + s)
      valid[row, j], classes[row, j] = True, j % 2
  images = rng.integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
  return {"images": images, "boxes": boxes, "classes": classes, "box_valid": valid,
          "image_hw": np.full((4, 2), 64, np.int32)}


class _StandInNet(nn.Module):
  """A small stand-in for the RetinaNet network with its output contract (per level
  ``h_l x w_l x A`` anchors of C logits and 4 deltas, levels in order), so that the
  experiment's own train step (targets, focal + smooth-L1, normaliser, optimizer) compiles in
  seconds; the full network is traced in ``test_real_detectors_trace_with_accumulation``."""
  num_classes: int
  num_anchors: int
  min_level: int = 3
  max_level: int = 5

  @nn.compact
  def __call__(self, images, train=False):
    del train
    h = nn.relu(nn.Conv(8, (3, 3))(images))
    cls, box = [], []
    for level in range(self.min_level, self.max_level + 1):
      s = 2 ** level
      f = nn.avg_pool(h, (s, s), (s, s))
      out = nn.Conv(self.num_anchors * (self.num_classes + 4), (3, 3), name=f"out{level}")(f)
      out = out.reshape(out.shape[0], -1, self.num_classes + 4)
      cls.append(out[..., :self.num_classes])
      box.append(out[..., self.num_classes:])
    return {"cls_logits": jnp.concatenate(cls, 1), "box_deltas": jnp.concatenate(box, 1)}


def _retinanet_with_stand_in(k):
  from jaxdet.experiments.retinanet import RetinaNetExperiment
  from jaxdet.train import optim
  meta = {"categories": {"ids": [1, 2], "names": ["a", "b"]}}
  exp = RetinaNetExperiment(_tiny_retinanet_config(k=k), shard_lib.make_mesh(), metadata=meta)
  exp.model = _StandInNet(exp.num_classes, exp.num_per_loc)
  exp.optimizer = optim.make_optimizer(exp.config.optim, exp.config.train.batch_size)
  return exp


def test_retinanet_step_with_accumulation_equals_the_big_batch_step():
  exps = {1: _retinanet_with_stand_in(1)}
  exps[2] = copy.copy(exps[1])          # one construction (traces the real net's shapes)
  exps[2].config = copy.deepcopy(exps[1].config)
  exps[2].config.train.accumulate_steps = 2
  state = jax.jit(exps[1].init)(jax.random.PRNGKey(0))
  batch = jax.tree.map(jnp.asarray, _unbalanced_batch())
  p0 = state["net"].params
  out, flat = {}, {}
  for k, exp in exps.items():
    new_state, out[k] = jax.jit(exp.train_step)(state, batch, jnp.int32(0),
                                                jax.random.PRNGKey(1))
    flat[k] = np.concatenate([np.ravel(a - b) for a, b in zip(
        jax.tree.leaves(new_state["net"].params), jax.tree.leaves(p0))])

  assert np.linalg.norm(flat[1]) > 0
  assert rel_err(flat[2], flat[1]) < 1e-5, rel_err(flat[2], flat[1])
  for name in ("loss", "cls_loss", "reg_loss", "num_pos"):
    np.testing.assert_allclose(float(out[2][name]), float(out[1][name]), rtol=1e-5)

  # Independent reference from the experiment's loss terms on each half (rows i::2, vmapped):
  # with g_i, N_i the gradient and N_pos of half i's own focal + smooth-L1 loss (S_i / N_i),
  # the big batch's loss S / N = (N_0 (S_0/N_0) + N_1 (S_1/N_1)) / (N_0 + N_1) has gradient
  # (N_0 g_0 + N_1 g_1) / (N_0 + N_1) (= the k = 1 update / -lr: no weight decay, first
  # momentum step), while the mean of the halves' losses has (g_0 + g_1) / 2: another gradient
  # when the positives are unbalanced (27 vs 6 here).
  exp = exps[1]

  def loss(params, b):
    t = exp.losses(exp.model.apply({"params": params}, exp.normalize(b["images"])), b)
    return t["cls_loss"] + t["reg_loss"], t["num_pos"]

  halves = jax.tree.map(lambda a: jnp.stack([a[0::2], a[1::2]]), batch)
  g, n = jax.jit(jax.vmap(jax.grad(loss, has_aux=True), in_axes=(None, 0)))(p0, halves)
  n0, n1 = float(n[0]), float(n[1])
  assert n0 + n1 == float(out[1]["num_pos"]) and n0 > 3 * n1 > 0
  lr = float(exp.optimizer.schedule(0))
  as_update = lambda w0, w1: -lr * np.concatenate(  # noqa: E731
      [np.ravel(w0 * x[0] + w1 * x[1]) for x in jax.tree.leaves(g)])
  assert rel_err(flat[1], as_update(n0 / (n0 + n1), n1 / (n0 + n1))) < 1e-5
  naive = as_update(0.5, 0.5)
  assert rel_err(naive, flat[1]) > 0.05, rel_err(naive, flat[1])


@pytest.mark.parametrize("name", ["retinanet", "faster_rcnn"])
def test_real_detectors_trace_with_accumulation_and_remat(name):
  """The full networks' train steps trace with k = 2 and remat (scan carry with the frozen-BN
  statistics, per-micro-batch keys, lifted remat): shapes only, nothing compiled."""
  from jaxdet.experiments.faster_rcnn import FasterRCNNExperiment, faster_rcnn_defaults
  from jaxdet.experiments.retinanet import RetinaNetExperiment
  c = _tiny_retinanet_config(k=2, remat="stages")
  c.model.norm, c.model.frozen_stages = "frozen_bn", 0
  if name == "faster_rcnn":
    f = faster_rcnn_defaults()
    f.model.update({k: v for k, v in c.model.items() if k in ("depth", "width", "norm",
                                                               "frozen_stages", "remat")})
    f.model.fpn_filters, f.model.fc_dim = 16, 32
    f.rpn.pre_nms_topk_train, f.rpn.post_nms_topk_train = 64, 32
    f.roi_head.num_samples = 16
    f.data.image_size, f.train, f.optim = c.data.image_size, c.train, c.optim
    c, cls = f, FasterRCNNExperiment
  else:
    cls = RetinaNetExperiment
  exp = cls(c, shard_lib.make_mesh(), metadata={"categories": {"ids": [1, 2], "names": "ab"}})
  state = jax.eval_shape(exp.init, jax.random.PRNGKey(0))
  batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _unbalanced_batch())
  traced = jax.jit(exp.train_step).trace(state, batch, jnp.int32(0), jax.random.PRNGKey(1))
  text = str(traced.jaxpr)
  assert "scan" in text and ("remat" in text or "checkpoint" in text)
  new_state, metrics = traced.out_info
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert all(m.shape == () for m in jax.tree.leaves(metrics))


# ---- rematerialisation -------------------------------------------------------------------------
@pytest.mark.parametrize("norm,remat,context", [("group_norm", "stages", "none"),
                                                ("batch_norm", None, "blocks")])
def test_remat_keeps_params_outputs_and_grads(norm, remat, context):
  """Same variables, outputs, BatchNorm statistics and gradients with and without remat (stem
  + 2 stages of a ResNet-18 of width 4, to keep the compile short); ``remat=None`` takes the
  spec of the ``backbone_remat`` context."""
  from jaxdet.models.resnet import ResNet, backbone_remat
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  plain = ResNet(18, 4, norm, -1, num_stages=2, remat="none")
  remat_net = ResNet(18, 4, norm, -1, num_stages=2, remat=remat)
  shapes = lambda m: jax.eval_shape(  # noqa: E731
      lambda: m.init(jax.random.PRNGKey(1), x, train=False))
  abstract = shapes(plain)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes(remat_net)) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), abstract)
  # Random variables without compiling the initialisers (slow on CPU).
  rs = np.random.default_rng(0)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.asarray(
          rs.normal(size=a.shape) * (np.sqrt(2.0 / np.prod(a.shape[:-1]))
                                     if path[-1].key == "kernel" else 0.1)
          + (1.0 if path[-1].key in ("scale", "var") else 0.0), jnp.float32), abstract)
  proj = {"C2": jax.random.normal(jax.random.PRNGKey(2), (1, 4, 4, 4)),
          "C3": jax.random.normal(jax.random.PRNGKey(3), (1, 2, 2, 8))}
  mutable = ["batch_stats"] if norm == "batch_norm" else []

  def grads(model):
    def loss(params):
      out, new = model.apply({**variables, "params": params}, x, train=True, mutable=mutable)
      return sum(jnp.mean(out[k] * proj[k]) for k in out), (out, new)
    return jax.grad(loss, has_aux=True)

  with backbone_remat(context):
    ref_jaxpr = str(jax.make_jaxpr(grads(plain))(variables["params"]))
    traced = jax.jit(lambda p: (grads(plain)(p), grads(remat_net)(p))).trace(variables["params"])
  assert "remat" not in ref_jaxpr and "checkpoint" not in ref_jaxpr   # plain: remat='none'
  assert "remat" in str(traced.jaxpr) or "checkpoint" in str(traced.jaxpr)
  (g_ref, ref), (g, got) = traced.lower().compile()(variables["params"])
  assert len(jax.tree.leaves(ref)) >= (10 if norm == "batch_norm" else 2)
  # float32: XLA fuses the recomputed parts differently, so values agree to rounding.
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    assert rel_err(a, b) < 2e-5, rel_err(a, b)


def test_parse_remat():
  from jaxdet.models.resnet import parse_remat
  assert parse_remat("none") == (frozenset(), False)
  assert parse_remat("stages") == (frozenset(range(5)), False)
  assert parse_remat("blocks") == (frozenset(range(5)), True)
  assert parse_remat("3, 4") == (frozenset({3, 4}), False)
  assert parse_remat((0, 2)) == (frozenset({0, 2}), False)
  for bad, num_stages in (("stage", 4), ("5", 4), ("4", 3), (",", 4), ("-1", 4)):
    with pytest.raises(ValueError, match="remat spec"):
      parse_remat(bad, num_stages)
