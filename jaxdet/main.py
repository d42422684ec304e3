"""jaxdet entry point: ``python -m jaxdet.main --config=configs/demo.py --workdir=DIR``.

Modes are the experiment's (``Experiment.modes()``): every experiment has ``train`` (trains
with periodic evaluation; rerunning resumes) and ``eval`` (evaluates the latest checkpoint of
--workdir); detectors add ``predict`` (a folder of images -> COCO-style JSON + images with
boxes drawn) and ``robustness`` (AP50 under the AP-loss paper's corruptions, Table 3).

Config files take variants (``--config=configs/x.py:variant``) and overrides
(``--config.train.num_steps=100``). For multi-host jobs pass
``--multihost`` (TPU pods and SLURM/GPU clusters are detected by
``jax.distributed.initialize``) or --coordinator_address/--num_processes/--process_id.

Exit codes: 0 done; 2 a config or mode the experiment cannot run (the message names the key);
75 stopped by SIGTERM/SIGINT after writing a checkpoint (rerun the same command to resume).
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and results go here.")
_MODE = flags.DEFINE_string("mode", "train",
                            "What to run: train, eval, or a mode of the experiment "
                            "(detectors: predict, robustness).")
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
  from jaxdet.train.config_check import ConfigError
  from jaxdet.train.preemption import PREEMPTED_EXIT_CODE, Preempted
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
  workdir = _WORKDIR.value or os.path.join(
      "workdirs", os.path.splitext(os.path.basename(_CONFIG.config_filename))[0])
  try:
    run(config, workdir, _MODE.value)
  except ConfigError as e:
    print(f"jaxdet: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    print(f"jaxdet: {e}", file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)


def _load_config_file(argv):
  """The config that ``--config=FILE[:ARG]`` names, loaded as absl will load it (or None)."""
  spec = None
  for k, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      spec = arg[len("--config="):]
    elif arg == "--config" and k + 1 < len(argv):
      spec = argv[k + 1]
  if not spec:
    return None
  path, _, config_arg = spec.partition(":")
  if not os.path.isfile(path):
    return None  # absl reports the missing file
  import importlib.util
  module_spec = importlib.util.spec_from_file_location("_jaxdet_cli_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(config_arg) if config_arg else module.get_config()


def _check_overrides(argv) -> None:
  """Checks every ``--config.a.b=...`` key against the schema of the experiment the config
  names (``--config.experiment=`` included) and names an unknown one with the closest valid key
  (before absl's terser error)."""
  import difflib
  from jaxdet.experiments import registry
  overrides = [a for a in argv[1:] if a.startswith("--config.")]
  if not overrides:
    return
  config = _load_config_file(argv)
  name = config.get("experiment") if config is not None else None
  for arg in overrides:
    if arg.startswith("--config.experiment="):
      name = arg.split("=", 1)[1]
  if name is None:
    return
  try:
    schema = registry.schema(name)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  for arg in overrides:
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node, prefix = schema, "config"
    for key in path:
      if not hasattr(node, "keys") or key not in node:
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean '{prefix}.{close[0]}'?" if close else ""
        raise app.UsageError(f"Unknown config key '{prefix}.{key}' in {arg!r} for experiment "
                             f"{name!r}.{hint} Valid keys under '{prefix}': {', '.join(valid)}.")
      node, prefix = node[key], f"{prefix}.{key}"


def _parse_flags(argv):
  try:
    _check_overrides(argv)
  except app.UsageError as e:
    print(f"jaxdet: {e}", file=sys.stderr)
    sys.exit(2)
  return flags.FLAGS(argv)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
