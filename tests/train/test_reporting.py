"""Reporter (JSONL, console, progress bar, images) and jaxdet.visualize pictures."""
import json
import math
import os
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxdet import visualize
from jaxdet.train.reporting import Reporter


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


# --------------------------------------------------------------------------- Reporter


def test_train_jsonl_matches_scalars_and_is_flushed_per_call(tmp_path):
  rep = Reporter(str(tmp_path), total_steps=100, start_step=0, progress=False)
  path = tmp_path / "train_metrics.jsonl"
  rep.scalars(10, {"loss": 0.5, "cls_loss": float("nan"), "lr": np.float32(0.25),
                   "compilations": 1})
  # Read before close: the line must already be on disk.
  assert _read_jsonl(path) == [
      {"step": 10, "loss": 0.5, "cls_loss": None, "lr": 0.25, "compilations": 1}]
  rep.scalars(20, {"loss": 0.125, "cls_loss": float("inf")})
  rep.scalars(20, {"AP": 0.3}, prefix="val")  # only "train" goes to train_metrics.jsonl
  assert _read_jsonl(path) == [
      {"step": 10, "loss": 0.5, "cls_loss": None, "lr": 0.25, "compilations": 1},
      {"step": 20, "loss": 0.125, "cls_loss": None}]
  rep.close()
  rep.close()  # idempotent


def test_console_line_without_progress_bar(tmp_path, capsys):
  rep = Reporter(str(tmp_path), total_steps=1200, start_step=0, progress=False,
                 progress_metrics=("loss", "lr", "not_logged"))
  rep.scalars(200, {"cls_loss": 0.57, "img_per_s": 49.1, "loss": 0.891234, "lr": 0.001})
  lines = capsys.readouterr().out.splitlines()
  assert lines == ["step 200/1200  loss 0.8912  lr 0.001  cls_loss 0.57  img/s 49.1"]
  rep.scalars(400, {"loss": float("nan")})
  assert capsys.readouterr().out.splitlines() == ["step 400/1200  loss nan"]
  rep.close()


def test_eval_line_prints_once_and_appends_jsonl(tmp_path, capsys):
  rep = Reporter(str(tmp_path), total_steps=10, start_step=0, progress=False)
  rep.eval_line(10, {"AP": 0.5, "APl": -1.0 * float("inf")})
  out = capsys.readouterr().out.splitlines()
  assert out == ["eval @ step 10: AP=0.5000, APl=-inf"]
  assert _read_jsonl(tmp_path / "eval_metrics.jsonl") == [{"step": 10, "AP": 0.5, "APl": None}]
  assert not (tmp_path / "train_metrics.jsonl").exists()
  rep.close()


def test_progress_postfix_shows_only_requested_metrics(tmp_path, capsys):
  rep = Reporter(str(tmp_path), total_steps=10, start_step=0, progress=True,
                 progress_metrics=("loss_G", "lambda_cls", "missing"))
  rep.step(5)
  rep.scalars(5, {"loss_G": 0.5, "cls_loss": 0.3, "lambda_cls": 2.0, "lr": 0.1, "img_per_s": 9.0})
  rep.close()  # tqdm prints its final state, postfix included
  out = capsys.readouterr().out
  final = out.replace("\r", "\n").strip().splitlines()[-1]
  assert "loss_G=0.5" in final and "lambda_cls=2" in final, final
  for name in ("cls_loss", "lr=", "img_per_s", "missing"):
    assert name not in final, final
  assert "step 5/10" not in out  # no console line while the bar is on


def test_images_writes_pngs_with_exact_pixels(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (4, 6), dtype=np.uint8)
  rep = Reporter(str(tmp_path), total_steps=10, start_step=0, progress=False)
  paths = rep.images(3, {"val/grid sr": rgb, "grey": grey})
  assert paths == [str(tmp_path / "images" / "val_grid_sr_step3.png"),
                   str(tmp_path / "images" / "grey_step3.png")]
  np.testing.assert_array_equal(np.asarray(Image.open(paths[0])), rgb)
  np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), grey)
  with pytest.raises(TypeError, match="uint8"):
    rep.images(4, {"x": rgb.astype(np.float32)})
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    rep.images(4, {"x": rgb[..., :2]})
  with pytest.raises(ValueError, match="both map"):
    rep.images(4, {"a/b": rgb, "a_b": rgb})
  rep.close()
  if reporting_has_tensorboard():
    assert os.listdir(tmp_path / "tensorboard")


def reporting_has_tensorboard():
  try:
    import tensorboardX  # noqa: F401
    return True
  except ImportError:
    return False


def test_works_without_tensorboardx(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import raises ImportError
  rep = Reporter(str(tmp_path), total_steps=10, start_step=0, progress=False)
  assert rep._tb is None
  rep.scalars(1, {"loss": 1.0})
  img = np.zeros((2, 3, 3), np.uint8)
  [path] = rep.images(1, {"im": img})
  rep.eval_line(1, {"AP": 0.1})
  rep.close()
  assert _read_jsonl(tmp_path / "train_metrics.jsonl") == [{"step": 1, "loss": 1.0}]
  np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
  assert not (tmp_path / "tensorboard").exists()


def test_other_processes_write_nothing(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  workdir = tmp_path / "run"
  rep = Reporter(str(workdir), total_steps=10, start_step=0, progress=False)
  rep.scalars(1, {"loss": 1.0})
  assert rep.images(1, {"im": np.zeros((2, 2, 3), np.uint8)}) == []
  rep.eval_line(1, {"AP": 0.1})
  rep.message("hello")
  rep.close()
  assert not workdir.exists()
  assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- visualize


def test_image_grid_matches_hand_built_layout_with_nearest_upsampling():
  small = np.array([[[10, 11, 12], [20, 21, 22]],
                    [[30, 31, 32], [40, 41, 42]]], np.uint8)          # 2x2 RGB
  big = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) + 100   # 4x4 RGB
  grey = np.arange(16, dtype=np.uint8).reshape(4, 4) + 200             # 4x4 grey
  grid = visualize.image_grid([small, big, grey], columns=2, pad=1, pad_value=7)

  up = np.empty((4, 4, 3), np.uint8)  # each small pixel -> a 2x2 block
  for r in range(4):
    for c in range(4):
      up[r, c] = small[r // 2, c // 2]
  expected = np.full((2 * 4 + 3, 2 * 4 + 3, 3), 7, np.uint8)
  expected[1:5, 1:5] = up
  expected[1:5, 6:10] = big
  expected[6:10, 1:5] = np.stack([grey] * 3, axis=-1)
  # expected[6:10, 6:10] stays pad_value: the unused cell.
  assert grid.dtype == np.uint8
  np.testing.assert_array_equal(grid, expected)

  assert visualize.image_grid([big], columns=3, pad=0).shape == (4, 4, 3)
  np.testing.assert_array_equal(visualize.image_grid([big], columns=3, pad=0), big)
  np.testing.assert_array_equal(  # a [N, H, W, C] batch is a sequence of images
      visualize.image_grid(np.stack([big, big]), columns=2, pad=0), np.concatenate([big, big], 1))
  rgb_pad = visualize.image_grid([small], columns=1, pad=1, pad_value=(1, 2, 3))
  np.testing.assert_array_equal(rgb_pad[0, 0], [1, 2, 3])


def test_image_grid_errors():
  ok = np.zeros((2, 2, 3), np.uint8)
  with pytest.raises(TypeError, match="uint8"):
    visualize.image_grid([ok, ok.astype(np.float32)], columns=2)
  with pytest.raises(ValueError, match="columns"):
    visualize.image_grid([ok], columns=0)
  with pytest.raises(ValueError, match="at least one"):
    visualize.image_grid([], columns=1)
  with pytest.raises(ValueError, match="shape"):
    visualize.image_grid([np.zeros((2, 2, 4), np.uint8)], columns=1)
  with pytest.raises(ValueError, match="wrap a single image"):
    visualize.image_grid(ok, columns=1)
  with pytest.raises(ValueError, match="pad_value"):
    visualize.image_grid([ok], columns=1, pad_value=300)


def test_draw_points_radius0_changes_exactly_expected_pixels():
  image = np.full((6, 8, 3), 50, np.uint8)
  before = image.copy()
  points = [[2.7, 1.2],    # -> row 1, col 2
            [7.0, 5.9],    # -> row 5, col 7 (last pixel)
            [3.0, 3.0],    # invisible
            [8.0, 2.0],    # outside (col 8)
            [math.nan, 1]]  # not drawn
  out = visualize.draw_points(image, points, color=(1, 2, 3), radius=0,
                              visible=[True, True, False, True, True])
  np.testing.assert_array_equal(image, before)  # input untouched
  expected = before.copy()
  expected[1, 2] = (1, 2, 3)
  expected[5, 7] = (1, 2, 3)
  np.testing.assert_array_equal(out, expected)


def test_draw_points_radius1_disc_and_grey_input():
  out = visualize.draw_points(np.zeros((5, 5), np.uint8), np.array([[2.5, 2.5]]), radius=1)
  assert out.shape == (5, 5, 3)
  changed = np.argwhere(np.any(out != 0, axis=-1))
  assert sorted(map(tuple, changed)) == [(1, 2), (2, 1), (2, 2), (2, 3), (3, 2)]
  np.testing.assert_array_equal(out[2, 2], (0, 255, 0))


def test_draw_points_errors():
  img = np.zeros((4, 4, 3), np.uint8)
  with pytest.raises(ValueError, match=r"\[N, 2\]"):
    visualize.draw_points(img, [[1.0, 2.0, 3.0]])
  with pytest.raises(TypeError, match="uint8"):
    visualize.draw_points(img.astype(np.float32), [[1.0, 2.0]])
  with pytest.raises(ValueError, match="visible"):
    visualize.draw_points(img, [[1.0, 2.0]], visible=[True, False])
  with pytest.raises(ValueError, match="radius"):
    visualize.draw_points(img, [[1.0, 2.0]], radius=-1)
  with pytest.raises(ValueError, match="color"):
    visualize.draw_points(img, [[1.0, 2.0]], color=(0, 0))
  np.testing.assert_array_equal(visualize.draw_points(img, np.zeros((0, 2))), img)


def test_draw_detections_draws_only_at_or_above_threshold():
  image = np.zeros((80, 80, 3), np.uint8)
  dets = [{"bbox": [5, 5, 20, 20], "score": 0.9, "category_id": 1},
          {"bbox": [50, 40, 10, 30], "score": 0.2, "category_id": 2},   # below: dropped
          {"bbox": [5, 50, 20, 20], "score": 0.5, "category_id": 3}]    # == threshold: drawn
  im = np.asarray(visualize.draw_detections(image, dets, {1: "cat"}, threshold=0.5))
  assert im.shape == (80, 80, 3) and not image.any()
  red = (255, 40, 40)
  # Rows below the labels (drawn at the top-left corner of each box).
  np.testing.assert_array_equal(im[22, 5], red)    # left edge of the kept box
  np.testing.assert_array_equal(im[22, 25], red)   # its right edge
  np.testing.assert_array_equal(im[67, 5], red)    # left edge of the box at the threshold
  np.testing.assert_array_equal(im[55, 50], 0)     # left edge of the dropped box
  np.testing.assert_array_equal(im[70, 55], 0)     # its bottom edge
  assert not im[38:72, 48:62].any()                # nothing of it (box or label) at all
