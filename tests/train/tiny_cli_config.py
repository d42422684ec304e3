"""Config file for the kill/resume test: ``--config=tiny_cli_config.py:<data_root>``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny  # noqa: E402


def get_config(data_root):
  return tiny.tiny_config(data_root, **{"train.num_steps": 8, "train.checkpoint_every": 2,
                                        "train.keep_checkpoints": 10})
