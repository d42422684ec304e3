"""Config file for the kill/resume test: ``--config=tiny_cli_config.py:<data_root>``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny  # noqa: E402


def get_config(data_root):
  # ALWA with a 3-step window: the kill at step >= 4 lands inside a window, so the
  # resumed run must restore the half-filled loss window to match.
  return tiny.tiny_config(data_root, **{"train.num_steps": 8, "train.checkpoint_every": 2,
                                        "train.keep_checkpoints": 10, "alwa.enabled": True,
                                        "alwa.window": 3, "alwa.statistic": "alwa1"})
