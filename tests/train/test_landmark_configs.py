"""The landmark configs set what the paper's settings say (Table 1b, Table 4, §4.1)."""
import importlib.util
import pathlib

import pytest

from jaxdet.train.config_check import validate

ROOT = pathlib.Path(__file__).parents[2]


def _config(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  from jaxdet.experiments.registry import schema
  validate(c, schema(c.experiment))
  return c


@pytest.mark.parametrize("data", ["", "300w", "demo"])
@pytest.mark.parametrize("setting", ["s1", "s2", "s3", "s4", "hr_ld"])
def test_settings(setting, data):
  c = _config("lr_landmarks", ",".join(v for v in (setting, data) if v))
  assert c.landmarks.setting == setting
  l = c.loss
  if setting in ("s1", "s2", "hr_ld"):
    assert l.a > 0 and l.b == 0 and l.c == 0          # Eq. 10 only
  elif setting == "s3":
    assert l.a > l.b > 0 and l.c == 0                 # + D2 (Eq. 11)
  else:
    assert l.a > l.b > l.c > 0                        # Eq. 13, a > b > c (§3.3)
  labelled_hr = setting in ("s1", "hr_ld")
  assert all(not s.startswith("generated:") for s in c.data.train) == labelled_hr
  assert (c.data.train_transform == "subsample") == (setting == "s1")
  assert c.landmarks.input_size == (128 if setting == "hr_ld" else 32)
  if data == "300w":
    assert c.landmarks.scheme == "68" and c.landmarks.normaliser == "inter_pupil"
    assert [s.rsplit("_", 1)[-1] for s in c.data.eval_sets] == ["common", "challenging", "full"]
  elif data == "demo":
    assert c.data.eval_sets[:2] == ("real_lr_test", "generated_test")
    # HR-LD sees LR faces upsampled to its 128 px input (§4.3 "re-scaling"); the others as is.
    want = "resize" if setting == "hr_ld" else "none"
    assert c.data.eval_transforms[:2] == (want, want)
  else:
    assert c.landmarks.scheme == "19" and c.landmarks.normaliser == "box"


def test_paper_schedule():
  c = _config("lr_landmarks", "s4")
  epoch = 20_000 // 32                                  # 20,000 AFLW train faces, batch 32
  assert c.train.batch_size == 32 and c.train.num_steps == 200 * epoch
  for o in (c.optim_G, c.optim_D2, c.optim_D3):
    assert (o.name, o.base_lr, o.beta1, o.beta2) == ("adam", 2e-4, 0.5, 0.9)
    assert tuple(o.decay_steps) == (80 * epoch, 160 * epoch) and o.decay_factor == 0.5
  assert (c.data.scale, c.data.rotation_deg, c.data.translation_px) == ((0.9, 1.1), 30.0, 20.0)
  assert c.landmarks.sigma == 2.0


def test_one_setting_at_a_time():
  with pytest.raises(ValueError, match="one setting"):
    _config("lr_landmarks", "s2,s3")


def test_high_to_low_generates_the_sets_stage_2_reads():
  c = _config("high_to_low")
  assert c.generate.splits == ("train", "test") and c.generate.scheme == "19"
  c = _config("high_to_low", "300w")
  assert c.generate.scheme == "68"
  assert c.generate.splits == ("300w_train", "300w_common", "300w_challenging", "300w_full")
  s2 = _config("lr_landmarks", "s2,300w")
  assert set(x.split(":")[1] for x in s2.data.train + s2.data.eval_specs) <= set(
      c.generate.splits)
