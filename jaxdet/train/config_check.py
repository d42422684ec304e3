"""Config validation against an experiment's schema: unknown keys are errors that suggest the
closest valid key and list the valid ones."""
from __future__ import annotations

import difflib

import ml_collections


class ConfigError(ValueError):
  """A config (file or ``--config.*`` override), or the data it names, that the experiment
  cannot run; ``python -m jaxdet.main`` prints the message and exits with code 2."""


def validate(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
             prefix: str = "config") -> None:
  """Raises ConfigError if ``config`` has a key that ``reference`` lacks, or a group where
  ``reference`` has a value (or the reverse)."""
  for key in config.keys():
    path = f"{prefix}.{key}"
    if key not in reference:
      valid = sorted(reference.keys())
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f" Did you mean '{prefix}.{close[0]}'?" if close else ""
      raise ConfigError(f"Unknown config key '{path}'.{hint} Valid keys under "
                        f"'{prefix}': {', '.join(valid)}.")
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f"'{path}' must be a group of keys ({', '.join(sorted(ref.keys()))}), "
                          f"got {value!r}.")
      validate(value, ref, path)


def checked(key: str, parse, value):
  """``parse(value)``, with a ValueError turned into a ConfigError that names ``key``
  (e.g. ``checked('config.model.remat', resnet.parse_remat, config.model.remat)``)."""
  try:
    return parse(value)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"{key}={value!r}: {e}") from None
