"""Train-step memory of RetinaNet: gradient accumulation x backbone remat.

For the demo RetinaNet (``configs/demo.py``: ResNet-18 width 16, GroupNorm, P3-P5, 128x128)
at a global batch of 16, builds ``train_step`` for ``train.accumulate_steps`` in {1, 2, 4}
and ``model.remat`` in {none, stages} and prints two measures:

* ``temp``: XLA's ``memory_analysis()`` of the compiled step, the scratch it needs besides its
  inputs and outputs (activations kept for the backward pass, gradients, the accumulation
  buffer, convolution workspaces) under the backend's own scheduling and fusion;
* ``resid``: what JAX's autodiff stores for the backward pass of ONE micro-batch
  (``jax.ad_checkpoint.print_saved_residuals`` of the focal + smooth-L1 loss on B/k images,
  parameters excluded): the backend-independent activation footprint that accumulation
  divides by k and remat cuts to the stage inputs plus the rest of the network's.

On XLA:CPU the default concurrency-optimised scheduler hoists rematerialised forward
computations back next to the forward pass, so remat does not lower ``temp`` there;
``--memory-scheduler`` sets ``--xla_cpu_enable_concurrency_optimized_scheduler=false``
(must be chosen before JAX starts; XLA:GPU/TPU schedule for memory by default). Nothing is
trained, so no data is needed (the experiment is built from category metadata).

    python benchmarks/bench_memory.py [--batch=16] [--accumulate=1,2,4] [--remat=none,stages]
        [--config=configs/demo.py] [--memory-scheduler] [--time]   # --time: 3 steps, s/step
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--memory-scheduler" in sys.argv:   # before JAX initialises its backend
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_enable_concurrency_optimized_scheduler=false")

import contextlib  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def load_config(path: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def batch_shapes(config, num_classes: int):
  del num_classes
  b, (h, w), g = config.train.batch_size, config.data.image_size, config.data.max_boxes or 16
  return {"images": jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8),
          "boxes": jax.ShapeDtypeStruct((b, g, 4), jnp.float32),
          "classes": jax.ShapeDtypeStruct((b, g), jnp.int32),
          "box_valid": jax.ShapeDtypeStruct((b, g), jnp.bool_),
          "image_hw": jax.ShapeDtypeStruct((b, 2), jnp.int32)}


def random_batch(config, rng):
  b, (h, w), g = config.train.batch_size, config.data.image_size, config.data.max_boxes or 16
  xy = rng.uniform(0, min(h, w) - 32, (b, g, 2))
  size = rng.uniform(8, 32, (b, g, 1))
  return {"images": rng.integers(0, 256, (b, h, w, 3)).astype(np.uint8),
          "boxes": np.concatenate([xy, xy + size], -1).astype(np.float32),
          "classes": rng.integers(0, 5, (b, g)).astype(np.int32),
          "box_valid": rng.uniform(size=(b, g)) < 0.3,
          "image_hw": np.full((b, 2), (h, w), np.int32)}


_BYTES = {"f64": 8, "f32": 4, "i32": 4, "u32": 4, "bf16": 2, "f16": 2, "u8": 1, "i8": 1,
          "bool": 1}


def residual_bytes(fn, *args) -> int:
  """Bytes of the values ``jax.grad(fn)`` keeps for its backward pass, arguments excluded
  (parsed from ``print_saved_residuals``: one ``dtype[shape] description`` line each)."""
  from jax.ad_checkpoint import print_saved_residuals
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    print_saved_residuals(fn, *args)
  total = 0
  for line in out.getvalue().splitlines():
    m = re.match(r"(\w+)\[([\d,]*)\]\s+(.*)", line)
    if m and not m.group(3).startswith("from the argument"):
      size = int(np.prod([int(d) for d in m.group(2).split(",")])) if m.group(2) else 1
      total += size * _BYTES.get(m.group(1), 4)
  return total


def micro_batch_residuals(exp, state, config) -> int:
  """Residual bytes of the focal + box loss on one micro-batch (B/k images)."""
  from jaxdet.models.resnet import backbone_remat
  k = config.train.accumulate_steps
  batch = jax.tree.map(lambda a: jnp.asarray(a[:a.shape[0] // k]),
                       random_batch(config, np.random.default_rng(0)))
  zeros = lambda tree: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), tree)  # noqa: E731
  params, model_state = zeros(state["net"].params), zeros(state["net"].model_state)

  def loss(p):
    out = exp.model.apply({"params": p, **model_state}, exp.normalize(batch["images"]),
                          train=True)
    terms = exp.losses(out, batch)
    return terms["cls_loss"] + terms["reg_loss"]

  with backbone_remat(config.model.remat):
    return residual_bytes(loss, params)


def measure(config, *, timed: bool) -> dict:
  from jaxdet.experiments.retinanet import RetinaNetExperiment
  from jaxdet.train import sharding as shard_lib
  meta = {"categories": {"ids": [1, 2, 3, 4, 5], "names": ["c1", "c2", "c3", "c4", "c5"]}}
  mesh = shard_lib.make_mesh()
  exp = RetinaNetExperiment(config, mesh, metadata=meta)
  state = jax.eval_shape(exp.init, jax.random.PRNGKey(0))
  batch = batch_shapes(config, exp.num_classes)
  step = jax.jit(exp.train_step, donate_argnums=0)
  t0 = time.time()
  compiled = step.lower(state, batch, jnp.int32(0), jax.random.PRNGKey(1)).compile()
  out = {"compile_s": time.time() - t0}
  stats = compiled.memory_analysis()
  if stats is not None:
    out.update(temp=stats.temp_size_in_bytes, args=stats.argument_size_in_bytes,
               outputs=stats.output_size_in_bytes, alias=stats.alias_size_in_bytes)
  out["resid"] = micro_batch_residuals(exp, state, config)
  if timed:
    real_state = exp.init(jax.random.PRNGKey(0))
    real = jax.tree.map(jnp.asarray, random_batch(config, np.random.default_rng(0)))
    real_state, m = compiled(real_state, real, jnp.int32(0), jax.random.PRNGKey(1))
    jax.block_until_ready(m)
    t0 = time.time()
    for i in range(3):
      real_state, m = compiled(real_state, real, jnp.int32(i + 1), jax.random.PRNGKey(1))
    jax.block_until_ready(m)
    out["step_s"] = (time.time() - t0) / 3
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default=os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "configs", "demo.py"))
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--accumulate", default="1,2,4")
  p.add_argument("--remat", default="none,stages")
  p.add_argument("--time", action="store_true")
  p.add_argument("--memory-scheduler", action="store_true",
                 help="XLA:CPU: memory-minimising instead of concurrency-optimised scheduling")
  args = p.parse_args(argv)
  mib = lambda n: f"{n / 2 ** 20:9.1f}"  # noqa: E731
  flags = " (memory scheduler)" if args.memory_scheduler else ""
  print(f"RetinaNet train step, {os.path.basename(args.config)}, global batch {args.batch}, "
        f"{jax.devices()[0].platform} x {jax.device_count()}{flags}")
  print(f"{'remat':>7} {'accum':>5} {'micro':>5} {'temp MiB':>9} {'resid MiB':>9} "
        f"{'args MiB':>9} {'out MiB':>9} {'compile s':>9}" + (f" {'step s':>7}" if args.time
                                                               else ""))
  for remat in args.remat.split(","):
    for k in (int(s) for s in args.accumulate.split(",")):
      c = load_config(args.config)
      c.train.batch_size, c.train.accumulate_steps, c.model.remat = args.batch, k, remat
      r = measure(c, timed=args.time)
      if "temp" not in r:
        r.update(temp=float("nan"), args=float("nan"), outputs=float("nan"))
      line = (f"{remat:>7} {k:>5} {args.batch // k:>5} {mib(r['temp'])} {mib(r['resid'])} "
              f"{mib(r['args'])} {mib(r['outputs'])} {r['compile_s']:9.1f}")
      if args.time:
        line += f" {r['step_s']:7.3f}"
      print(line, flush=True)


if __name__ == "__main__":
  main()
