"""Config file of the toy GAN (``--config=tests/train/toy_gan_config.py[:sleep]``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy_gan  # noqa: E402


def get_config(arg=None):
  c = toy_gan.ToyGAN.config_schema()
  if arg:  # seconds per example: slows the run down enough to kill it mid-way
    c.gan.sleep_per_example = float(arg)
  return c
