"""jaxdet entry point: ``python -m jaxdet.main --config=demo --workdir=DIR``.

Modes are the experiment's (``Experiment.modes()``): every experiment has ``train`` (trains
with periodic evaluation; rerunning resumes) and ``eval`` (evaluates the latest checkpoint of
--workdir); detectors add ``predict`` (a folder of images -> COCO-style JSON + images with
boxes drawn) and ``robustness`` (VOC07 mAP50 or COCO AP50 under the AP-loss paper's Table 3
perturbations).

``--config`` is a config file (``--config=configs/demo.py``) or, from any directory, the name
of a config shipped with the package (``--config=demo``; ``--list_configs`` lists them; see
``jaxdet.configs_by_name``). Configs take variants (``--config=demo:quick``,
``--config=configs/x.py:variant``) and overrides (``--config.train.num_steps=100``).

For multi-host jobs pass ``--multihost`` (TPU pods and SLURM/GPU clusters are detected by
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
_LIST_CONFIGS = flags.DEFINE_bool("list_configs", False,
                                  "Print the config names --config accepts and exit.")


def main(argv):
  del argv
  if _LIST_CONFIGS.value:
    from jaxdet import configs_by_name
    print(f"Configs in {configs_by_name.configs_dir()} (--config=NAME[:variant,...]):")
    for name, doc in configs_by_name.describe():
      print(f"  {name:24s} {doc}")
    return
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
    raise app.UsageError("--config is required, e.g. --config=demo (--list_configs lists the "
                         "names) or --config=configs/demo.py")
  config_file = flags.FLAGS[_CONFIG.name].config_filename.split(":", 1)[0]  # minus :variants
  workdir = _WORKDIR.value or os.path.join(
      "workdirs", os.path.splitext(os.path.basename(config_file))[0])
  try:
    run(config, workdir, _MODE.value)
  except ConfigError as e:
    print(f"jaxdet: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    print(f"jaxdet: {e}", file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)


def _config_args(argv):
  """Indices in ``argv`` of the values of ``--config=V`` / ``--config V`` (``-config`` too)."""
  out = []
  for k, arg in enumerate(argv[1:], start=1):
    for prefix in ("--config=", "-config="):
      if arg.startswith(prefix):
        out.append((k, prefix))
    if arg in ("--config", "-config") and k + 1 < len(argv):
      out.append((k + 1, ""))
  return out


def _resolve_config_names(argv) -> list:
  """``argv`` with a config name in ``--config`` (``demo:quick``) replaced by the packaged
  file (``.../jaxdet/configs/demo.py:quick``); paths are left as they are."""
  from jaxdet import configs_by_name
  argv = list(argv)
  for k, prefix in _config_args(argv):
    value = argv[k][len(prefix):]
    try:
      argv[k] = prefix + configs_by_name.resolve(value)
    except (configs_by_name.UnknownConfigError, FileNotFoundError) as e:
      raise app.UsageError(str(e)) from None
    path = value.split(":", 1)[0]
    if argv[k] == prefix + value and path and not os.path.exists(path):
      # e.g. configs/demo.py run outside the repository: point at the packaged config.
      name = os.path.splitext(os.path.basename(path))[0]
      hint = " --list_configs lists the config names."
      try:
        packaged = configs_by_name.names()
      except FileNotFoundError:   # no packaged configs either: the plain message
        packaged = []
      if name in packaged:
        hint = f" A config named {name!r} ships with jaxdet: --config={name}{value[len(path):]}"
      raise app.UsageError(f"--config={value!r}: no such file (relative to {os.getcwd()}).{hint}")
  return argv


def _load_config_file(argv):
  """The config that ``--config=FILE[:ARG]`` names, loaded as absl will load it (or None)."""
  args = _config_args(argv)
  if not args:
    return None
  k, prefix = args[-1]
  spec = argv[k][len(prefix):]
  if not os.path.isfile(spec.split(":", 1)[0]):
    return None  # absl reports the missing file
  from jaxdet import configs_by_name
  return configs_by_name.load(spec)


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
    argv = _resolve_config_names(argv)
    _check_overrides(argv)
  except app.UsageError as e:
    print(f"jaxdet: {e}", file=sys.stderr)
    sys.exit(2)
  return flags.FLAGS(argv)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
