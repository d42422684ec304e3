"""Config validation: unknown keys are errors that list the valid ones."""
from __future__ import annotations

import difflib

import ml_collections


def validate(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
             prefix: str = "config") -> None:
  """Raises ValueError if ``config`` has a key that ``reference`` lacks, or a wrong kind of value."""
  for key in config.keys():
    path = f"{prefix}.{key}"
    if key not in reference:
      valid = sorted(reference.keys())
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f" Did you mean '{close[0]}'?" if close else ""
      raise ValueError(f"Unknown config key '{path}'.{hint} Valid keys under "
                       f"'{prefix}': {', '.join(valid)}.")
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ValueError(f"'{path}' must be a group of keys ({', '.join(sorted(ref.keys()))}), "
                         f"got {value!r}.")
      validate(value, ref, path)
