"""Unknown config keys are errors naming the key and listing the valid ones."""
import pytest

from jaxdet.experiments.defaults import detector_defaults
from jaxdet.train.config_check import validate


def test_defaults_are_valid():
  validate(detector_defaults(), detector_defaults())  # raises on a problem
  assert detector_defaults().experiment == "retinanet"


def test_typo_is_an_error_with_suggestion():
  c = detector_defaults()
  c.optim.learning_rate = 0.1
  with pytest.raises(ValueError) as e:
    validate(c, detector_defaults())
  msg = str(e.value)
  assert "config.optim.learning_rate" in msg and "base_lr" in msg


def test_group_replaced_by_value_is_an_error():
  c = detector_defaults()
  c.unlock()
  del c["alwa"]
  c.alwa = 3
  with pytest.raises(ValueError, match="config.alwa"):
    validate(c, detector_defaults())


import pathlib  # noqa: E402

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[2] / "configs").glob("*.py"))


def test_every_paper_config_is_checked():
  assert {"demo", "retinanet_coco", "mtgan_coco", "mtgan_widerface", "mtgan_demo"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
  import importlib.util, pathlib
  path = pathlib.Path(__file__).parents[2] / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config()
  from jaxdet.experiments.registry import EXPERIMENTS, schema
  validate(config, schema(config.experiment))  # raises on an unknown key
  assert config.experiment in EXPERIMENTS
  if config.experiment in ("retinanet", "ssd"):
    from jaxdet.losses.detection import CLS_LOSSES
    assert config.loss.cls in CLS_LOSSES
  assert config.train.num_steps > 0 and config.train.batch_size > 0


def test_command_line_typo_names_the_key_and_lists_valid_ones():
  import subprocess, sys
  out = subprocess.run([sys.executable, "-m", "jaxdet.main", "--config=configs/demo.py",
                        "--workdir=/tmp/unused", "--config.optim.learning_rate=0.1"],
                       capture_output=True, text=True, timeout=120,
                       cwd=__import__("pathlib").Path(__file__).parents[2])
  assert out.returncode == 2
  assert "config.optim.learning_rate" in out.stderr and "base_lr" in out.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_variant_is_an_error_listing_the_valid_ones(name):
  """A typo after ':' (e.g. ':ohme') must not silently run another recipe."""
  import importlib.util, pathlib
  path = pathlib.Path(__file__).parents[2] / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  with pytest.raises(ValueError, match=r"unknown variant.*'ohme'.*valid"):
    mod.get_config("ohme")


@pytest.mark.parametrize("name,arg,expect", [
    ("conretinanet_coco", "cascade,r101,500",
     {"model.depth": 101, "consistent.variant": "cascade", "data.short_side": 500}),
    ("conretinanet_demo", "quick,gated_cascade,alwa,aploss",
     {"consistent.variant": "gated_cascade", "alwa.enabled": True, "loss.cls": "ap"}),
    ("aploss_coco", "800,r50,tfds,ohem",
     {"model.depth": 50, "data.source": "tfds", "loss.cls": "ce_ohem", "data.short_side": 800}),
    ("aploss_demo", "quick,auc", {"loss.cls": "auc"}),
    ("ssd512_coco", "demo,consistent,focal",
     {"consistent.enabled": True, "loss.cls": "focal", "data.source": "benchmark",
      "ssd.vgg_width": 0.125, "ssd.min_sizes": (12.8, 25.6, 51.2, 76.8, 102.4)}),
    ("ssd512_voc", "resnet50,ap,tfds",
     {"ssd.backbone": "resnet", "loss.cls": "ap", "data.source": "tfds", "model.depth": 50}),
    ("aploss_voc", "r101,500,focal", {"model.depth": 101, "loss.cls": "focal",
                                      "data.eval_short_side": 500})])
def test_variants_passed_on_to_a_sibling_config_stay_valid(name, arg, expect):
  """Variants a config hands to a sibling still reach the recipe (not filtered away)."""
  import importlib.util, pathlib
  from jaxdet.experiments.registry import schema
  path = pathlib.Path(__file__).parents[2] / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  validate(c, schema(c.experiment))
  for key, value in expect.items():
    group, field = key.split(".")
    assert c[group][field] == value, key
