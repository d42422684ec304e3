"""Kill/resume soak: interrupt a short training run N times and check nothing changed.

Runs ``python -m jaxdet.main`` once uninterrupted (the reference), then runs the same command
again and again, each time killing it with SIGKILL or SIGTERM at a random moment — at a random
time, while a checkpoint is being written, or during an evaluation — and rerunning it, until it
finishes. Then it compares with the reference:

* every leaf of the final checkpoint (params, optimizer state, step, RNG, extras): bit-identical;
* ``eval_metrics.jsonl``: the same lines (one per evaluation step);
* ``train_metrics.jsonl``: the same lines (one per log step), except wall-clock fields.

    python benchmarks/kill_resume_soak.py --kills 12
    python benchmarks/kill_resume_soak.py --kills 10 --config configs/aploss_demo.py:quick

Kills are placed in rounds: a round interrupts one run until it finishes by itself and then
compares it; rounds repeat until ``--kills`` signals were delivered. Prints one line per kill,
the comparison of each round and a summary; exits 1 if anything differs.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

WALL_CLOCK = ("img_per_s", "compilations")
SHORT_RUN = ["--config.train.num_steps=60", "--config.train.log_every=5",
             "--config.train.checkpoint_every=10", "--config.train.eval_every=20",
             "--config.train.keep_checkpoints=3", "--config.train.progress_bar=False",
             "--config.eval.max_images=24", "--config.eval.log_images=2"]


def command(config, workdir, extra):
  return [sys.executable, "-m", "jaxdet.main", f"--config={config}", f"--workdir={workdir}",
          *SHORT_RUN, *extra]


def records(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f]


def last_logged_step(workdir):
  r = records(os.path.join(workdir, "train_metrics.jsonl"))
  return r[-1]["step"] if r else 0


def wait_for(pred, proc, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if pred():
      return True
    time.sleep(0.002)
  return False


def interrupted_run(config, workdir, extra, rng, log):
  """Starts the run and interrupts it once; returns (what happened, exit code, signalled)."""
  proc = subprocess.Popen(command(config, workdir, extra), stdout=log, stderr=log,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
  start_step = last_logged_step(workdir)
  target = rng.choice(["random", "checkpoint_write", "evaluation"])
  sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
  ckpt_glob = os.path.join(workdir, "checkpoints", "*tmp*")
  # Wait until training has really started (past compilation) in this process.
  wait_for(lambda: last_logged_step(workdir) > start_step, proc, 600)
  if target == "random":
    time.sleep(rng.uniform(0.0, 3.0))
    hit = True
  elif target == "checkpoint_write":
    hit = wait_for(lambda: bool(glob.glob(ckpt_glob)), proc, 60)
  else:  # an evaluation follows the log line of an evaluation step
    def at_eval_step():
      s = last_logged_step(workdir)
      return s % 20 == 0 and s > start_step
    hit = wait_for(at_eval_step, proc, 60)
    time.sleep(rng.uniform(0.0, 1.0))
  if proc.poll() is not None:
    return f"{target}: the run ended before the signal", proc.returncode, False
  at = last_logged_step(workdir)
  proc.send_signal(sig)
  code = proc.wait(timeout=600)
  return (f"{signal.Signals(sig).name:7s} {target:16s} {'hit' if hit else 'missed'} "
          f"(last log step {at})"), code, True


def final_state(workdir):
  """Leaves of the last checkpoint as numpy arrays, restored without the experiment."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from jaxdet.train.checkpoint import Checkpointer
  ck = Checkpointer(workdir, read_only=True)
  step = ck.latest_step()
  restored = ck.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ck.close()
  return step, [np.asarray(x) for x in jax.tree.leaves(restored["state"])]


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/demo.py")
  p.add_argument("--kills", type=int, default=10)
  p.add_argument("--root", default="runs/soak")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("extra", nargs="*", help="more --config.* overrides")
  args = p.parse_args()
  rng = random.Random(args.seed)
  shutil.rmtree(args.root, ignore_errors=True)
  os.makedirs(args.root)
  ref, run = os.path.join(args.root, "reference"), os.path.join(args.root, "interrupted")
  log = open(os.path.join(args.root, "soak.log"), "w")

  t0 = time.time()
  out = subprocess.run(command(args.config, ref, args.extra), stdout=log, stderr=log)
  if out.returncode:
    sys.exit(f"the reference run failed (exit {out.returncode}); see {args.root}/soak.log")
  print(f"reference run: {time.time() - t0:.0f} s")

  kills, rounds, problems = 0, 0, []
  while kills < args.kills:
    # One round: interrupt the same run until it finishes by itself, then compare it.
    rounds += 1
    shutil.rmtree(run, ignore_errors=True)
    while True:
      what, code, signalled = interrupted_run(args.config, run, args.extra, rng, log)
      if not signalled:
        if code:
          sys.exit(f"a rerun failed (exit {code}); see {args.root}/soak.log")
        print(f"round {rounds}: the run finished", flush=True)
        break
      kills += 1
      print(f"kill {kills:2d} (round {rounds}): {what}, exit {code}", flush=True)
    problems += [f"round {rounds}: {p}" for p in compare(ref, run)]
  print(f"soak: {kills} kills in {rounds} round(s), "
        f"{'PASS' if not problems else 'FAIL: ' + '; '.join(problems)} ({time.time() - t0:.0f} s)")
  sys.exit(1 if problems else 0)


def compare(ref, run) -> list[str]:
  """Differences between the finished interrupted run and the reference (printed too)."""
  problems = []
  (step_a, a), (step_b, b) = final_state(ref), final_state(run)
  if step_a != step_b or len(a) != len(b):
    problems.append(f"final checkpoints differ in step or structure ({step_a} vs {step_b})")
  else:
    n_diff = sum(not (x.shape == y.shape and (x == y).all()) for x, y in zip(a, b))
    print(f"  final state: {len(a)} leaves at step {step_a}, {n_diff} differ")
    if n_diff:
      problems.append(f"{n_diff} state leaves differ")
  for name, skip in (("eval_metrics.jsonl", ()), ("train_metrics.jsonl", WALL_CLOCK)):
    ra, rb = records(os.path.join(ref, name)), records(os.path.join(run, name))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in skip} for r in rs]
    same = strip(ra) == strip(rb)
    print(f"  {name}: {len(ra)} lines in the reference, {len(rb)} after the kills, "
          f"{'identical' if same else 'DIFFERENT'}")
    if not same:
      problems.append(f"{name} differs")
  return problems


if __name__ == "__main__":
  main()
