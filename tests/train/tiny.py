"""A tiny detector config on a small embedded-benchmark build, shared by the train tests.

Run as a script it executes one scenario in a fresh process (so XLA_FLAGS and
jax.distributed can be set before JAX starts) and prints a JSON result line.
"""
from __future__ import annotations

import json
import os
import sys


def tiny_config(data_root: str, **overrides):
  from jaxdet.data import benchmark
  from jaxdet.experiments.defaults import detector_defaults
  paths = benchmark.ensure_benchmark(data_root, num_train=24, num_val=8, image_size=64,
                                     verbose=False)
  c = detector_defaults()
  c.data.source = "coco_json"
  c.data.train_json, c.data.train_images = paths["train_json"], paths["train_images"]
  c.data.val_json, c.data.val_images = paths["val_json"], paths["val_images"]
  c.data.image_size, c.data.short_side, c.data.max_side = (64, 64), 64, 64
  c.data.max_boxes, c.data.num_workers = 8, 1
  c.model.depth, c.model.width, c.model.norm, c.model.frozen_stages = 18, 8, "group_norm", -1
  c.model.min_level, c.model.max_level = 3, 5
  c.model.fpn_filters = c.model.head_filters = 16
  c.model.head_convs, c.model.anchor_size = 1, 2.0
  c.optim.base_lr, c.optim.base_batch, c.optim.warmup_steps = 0.01, 8, 0
  c.optim.decay_steps = ()
  c.train.batch_size, c.train.num_steps = 8, 6
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 2, 2, 0
  c.train.progress_bar = False
  c.eval.batch_size = 8
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


def one_step_loss(data_root: str) -> dict:
  """Init + one train step on the first global batch; returns loss and a param checksum."""
  import jax
  import numpy as np
  from jaxdet.experiments import registry
  from jaxdet.train import sharding as shard_lib
  from jaxdet.train.loop import init_or_restore, make_step

  cfg = tiny_config(data_root, **{"train.batch_size": 8})
  mesh = shard_lib.make_mesh()
  exp = registry.build(cfg, mesh)
  state, shardings = init_or_restore(exp, None)
  step = jax.jit(make_step(exp), out_shardings=(shardings, shard_lib.replicated(mesh)))
  batch = shard_lib.to_global(next(exp.train_batches(0)), mesh)
  state, metrics = step(state, batch)
  state, metrics2 = step(state, shard_lib.to_global(next(exp.train_batches(1)), mesh))
  leaves = jax.tree.leaves(shard_lib.to_host(state.experiment["net"].params))
  return {"loss": float(metrics["loss"]), "loss2": float(metrics2["loss"]),
          "checksum": float(sum(np.abs(l).sum() for l in leaves)),
          "devices": jax.device_count(), "processes": jax.process_count()}


if __name__ == "__main__":
  scenario, data_root = sys.argv[1], sys.argv[2]
  if scenario == "distributed":
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[3], num_processes=2,
                               process_id=int(sys.argv[4]))
  result = one_step_loss(data_root)
  print("RESULT " + json.dumps(result), flush=True)
