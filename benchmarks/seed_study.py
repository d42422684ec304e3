"""Runs several configs with several seeds and prints AP / AP50 / AP75 as mean +- std.

Each run is ``python -m jaxdet.main --config=<config> --workdir=<root>/<name>/seed<k>
--config.seed=<k> [overrides]`` in a subprocess (rerunning the script resumes/skips
finished runs), then the last line of each eval_metrics.jsonl is read.

    python benchmarks/seed_study.py --root runs/study --seeds 0 1 2 \
        --run baseline=configs/demo.py \
        --run consistent=configs/conretinanet_demo.py \
        --run alwa2=configs/alwa_voc.py:demo,smooth_l1,alwa2 \
        -- --config.train.num_steps=600
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--root", required=True)
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--run", action="append", required=True, help="name=config[:variants]")
  p.add_argument("overrides", nargs="*", help="extra --config.* flags for every run")
  args = p.parse_args()
  table = {}
  for spec in args.run:
    name, config = spec.split("=", 1)
    for seed in args.seeds:
      workdir = os.path.join(args.root, name, f"seed{seed}")
      cmd = [sys.executable, "-m", "jaxdet.main", f"--config={config}", f"--workdir={workdir}",
             f"--config.seed={seed}", "--config.train.progress_bar=False", *args.overrides]
      t0 = time.time()
      out = subprocess.run(cmd, capture_output=True, text=True)
      if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"run {name} seed {seed} failed")
      with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
        last = json.loads(f.read().splitlines()[-1])
      table.setdefault(name, []).append(last)
      print(f"{name:12s} seed {seed}: AP {last['AP']:.4f} AP50 {last['AP50']:.4f} "
            f"AP75 {last['AP75']:.4f}  ({time.time() - t0:.0f} s)", flush=True)
  print(f"\n{'run':12s} {'AP':>16s} {'AP50':>16s} {'AP75':>16s}   (mean +- std over seeds {args.seeds})")
  for name, rows in table.items():
    cells = []
    for k in ("AP", "AP50", "AP75"):
      v = [r[k] for r in rows]
      sd = statistics.stdev(v) if len(v) > 1 else 0.0
      cells.append(f"{statistics.mean(v):.4f} +- {sd:.4f}")
    print(f"{name:12s} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
  main()
