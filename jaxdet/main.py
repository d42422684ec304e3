"""jaxdet entry point: ``python -m jaxdet.main --config=configs/demo.py --workdir=DIR``.

Modes: ``train`` (trains with periodic evaluation; rerunning resumes),
``eval`` (evaluates the latest checkpoint of --workdir), ``predict`` (a folder
of images -> COCO-style JSON + images with boxes drawn), ``robustness``
(AP50 under the AP-loss paper's corruptions, Table 3).

Config files take variants (``--config=configs/x.py:variant``) and overrides
(``--config.train.num_steps=100``). For multi-host jobs pass
``--multihost`` (TPU pods and SLURM/GPU clusters are detected by
``jax.distributed.initialize``) or --coordinator_address/--num_processes/--process_id.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and results go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "robustness"],
                          "What to run.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() (auto-detected cluster).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv):
  del argv
  import jax
  if _COORD.value or _MULTIHOST.value:
    kwargs = {}
    if _COORD.value:
      kwargs = dict(coordinator_address=_COORD.value, num_processes=_NPROC.value,
                    process_id=_PID.value)
    jax.distributed.initialize(**kwargs)

  from jaxdet.run import run
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
  workdir = _WORKDIR.value or os.path.join(
      "workdirs", os.path.splitext(os.path.basename(_CONFIG.config_filename))[0])
  run(config, workdir, _MODE.value)


def _check_overrides(argv) -> None:
  """Names an unknown ``--config.a.b=...`` key and lists the valid ones (before absl's
  terser error)."""
  import difflib
  from jaxdet.experiments.defaults import detector_defaults
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node, prefix = detector_defaults(), "config"
    for key in path:
      if not hasattr(node, "keys") or key not in node:
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean '{prefix}.{close[0]}'?" if close else ""
        raise app.UsageError(f"Unknown config key '{prefix}.{key}' in {arg!r}.{hint} "
                             f"Valid keys under '{prefix}': {', '.join(valid)}.")
      node, prefix = node[key], f"{prefix}.{key}"


def _parse_flags(argv):
  try:
    _check_overrides(argv)
  except app.UsageError as e:
    import sys
    print(f"jaxdet: {e}", file=sys.stderr)
    sys.exit(2)
  return flags.FLAGS(argv)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
