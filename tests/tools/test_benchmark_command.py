"""Tests for jaxdet.tools.benchmark (and the skip path of benchmark_torchvision).

One in-process run of a tiny RetinaNet (configs/demo.py at width 8, 16-channel FPN and head,
frozen BN) on CPU at 64x64, 64x96 and 64x64 again, batch 2, 2 steps. The figures are checked
against independent references: compilations counted by a second jax.monitoring listener and
by the shapes (one train-step compile per distinct size, none for the repeat or while timing),
XLA's FLOPs of a matmul against 2mkn, img/s against batch / ms, TFLOP/s and MFU against their
definitions, the host peak RSS against /proc's VmRSS, and the torch path with torch made
unimportable.
"""
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxdet import configs_by_name
from jaxdet.tools import benchmark, benchmark_torchvision

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["model.width=8", "model.fpn_filters=16", "model.head_filters=16", "model.head_convs=1",
        "model.norm=frozen_bn", "model.head_norm=''"]
SIZES = [(64, 64), (64, 96), (64, 64)]
BATCH, PEAK = 2, 0.5


def demo_config(overrides=TINY):
  config = configs_by_name.load(os.path.join(REPO, "configs", "demo.py"))
  benchmark.apply_overrides(config, list(overrides))
  return config


@pytest.fixture(scope="module")
def run():
  with benchmark.CompileLog() as outer:
    result = benchmark.run_benchmark(demo_config(), SIZES, batch=BATCH, steps=2,
                                     peak_tflops=PEAK, label="demo tiny")
  return result, outer


def test_one_train_compile_per_distinct_size(run):
  result, outer = run
  train = [row["train"] for row in result["sizes"]]
  infer = [row["inference"] for row in result["sizes"]]
  assert [t["compiles"] for t in train] == [1, 1, 0]    # 64x96 recompiles, 64x64 again does not
  assert [i["compiles"] for i in infer] == [1, 1, 0]
  assert all(t["timed_compiles"] == 0 and i["timed_compiles"] == 0 for t, i in zip(train, infer))
  names = [name for name, _ in outer.events]            # an independent listener agrees
  assert names.count("jit(bench_train_step)") == 2 == result["compiles"]["by_function"][
      "jit(bench_train_step)"]
  assert names.count("jit(bench_predict)") == 2
  assert result["compiles"]["total"] == len(outer.events)


def test_matmul_flops_from_cost_analysis():
  m, k, n = 8, 24, 5
  compiled = jax.jit(jnp.matmul).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
  assert benchmark.compiled_flops(compiled) == 2 * m * k * n


def test_rates_follow_from_times(run):
  result, _ = run
  for row in result["sizes"]:
    for part in ("train", "inference"):
      figures = row[part]
      assert figures["ms"] > 0
      assert figures["img_s"] == pytest.approx(BATCH * 1000 / figures["ms"], rel=1e-9)
    assert 0 <= row["inference"]["dets_per_image"] <= 100   # eval.max_detections
    t = row["train"]
    assert t["flops"] > row["inference"]["flops"] > 0  # backward + update cost more than predict
    assert t["tflops"] == pytest.approx(t["flops"] / (t["ms"] / 1e3) / 1e12)
    assert t["mfu"] == pytest.approx(t["tflops"] / PEAK)
  a, b = result["sizes"][0], result["sizes"][1]
  # Anchors of the demo's levels 3-5, 9 per location: (8*8 + 4*4 + 2*2) * 9 at 64x64.
  assert a["anchors"] == 9 * (64 + 16 + 4) and b["anchors"] == 9 * (8 * 12 + 4 * 6 + 2 * 3)
  assert b["train"]["flops"] > a["train"]["flops"]      # 1.5x the pixels


def test_host_memory_on_cpu(run):
  result, _ = run
  memory = result["sizes"][-1]["memory"]
  if jax.default_backend() != "cpu":
    assert memory["kind"] == "device"
    return
  assert memory["kind"] == "host_rss"
  with open("/proc/self/status") as f:
    rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
  assert memory["bytes"] >= rss_kib * 1024 * 0.9
  assert "host RSS" in benchmark.format_report(result)


def test_report_and_header(run):
  result, _ = run
  text = benchmark.format_report(result)
  assert result["dtype"] == "float32" and result["classes"] == 5
  assert result["jax"] == jax.__version__ and result["device_count"] == jax.device_count()
  assert "64x96" in text and "MFU against 0.5 TFLOP/s" in text
  no_peak = dict(result, peak_tflops=None, device_kind="cpu")
  no_peak["sizes"] = [dict(r, train=dict(r["train"], mfu=None)) for r in result["sizes"]]
  assert "MFU n/a (no peak for cpu; pass --peak_tflops)" in benchmark.format_report(no_peak)


def test_torchvision_skipped_without_torch(monkeypatch, run):
  result, _ = run
  monkeypatch.setitem(sys.modules, "torch", None)        # import torch -> ImportError
  assert benchmark_torchvision.unavailable_reason() == "torch is not installed"
  out = benchmark.torchvision_side_by_side(result, SIZES)
  assert out == {"status": "skipped", "reason": "torch is not installed"}
  text = benchmark.format_report(dict(result, torchvision=out))
  assert "torchvision: skipped (torch is not installed)" in text


def test_peak_table():
  assert benchmark.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989
  assert benchmark.peak_tflops_for("NVIDIA H100 PCIe") == 756
  assert benchmark.peak_tflops_for("NVIDIA H200") == 989
  assert benchmark.peak_tflops_for("NVIDIA A100-SXM4-40GB") == 312
  assert benchmark.peak_tflops_for("TPU v5 lite") == 197
  assert benchmark.peak_tflops_for("TPU v5p") == 459
  assert benchmark.peak_tflops_for("TPU v4") == 275
  assert benchmark.peak_tflops_for("cpu") is None


def test_overrides_and_sizes():
  config = demo_config(["model.depth=34", "model.dtype=bfloat16", "data.hflip=false",
                        "model.aspect_ratios=(1.0,)", "model.head_norm=''"])
  assert config.model.depth == 34 and config.model.dtype == "bfloat16"
  assert config.data.hflip is False and config.model.aspect_ratios == (1.0,)
  assert config.model.head_norm == ""
  with pytest.raises(ValueError, match="--override 'model.deph=18'.*model.deph"):
    demo_config(["model.deph=18"])
  with pytest.raises(ValueError, match="--override 'model.depth=deep'"):
    demo_config(["model.depth=deep"])
  assert benchmark.parse_sizes("512x512, 800X1344") == [(512, 512), (800, 1344)]
  with pytest.raises(ValueError, match="--sizes"):
    benchmark.parse_sizes("512")
  assert benchmark.main(["--config=" + os.path.join(REPO, "configs", "demo.py"),
                         "--sizes", "64", "--no_torchvision"]) == 2


def test_rejects_non_detector_experiments():
  config = configs_by_name.load(os.path.join(REPO, "configs", "mtgan_demo.py"))
  with pytest.raises(ValueError, match="box detection experiments"):
    benchmark.experiment_class(config)


def test_torchvision_failure_keeps_jaxdet_figures(monkeypatch, run):
  """A torch error (e.g. out of memory) becomes a row; the per-device batch and ratios are used."""
  result, _ = run
  calls = []

  def fake_run(num_classes, batch, hw, steps):
    calls.append(batch)
    if hw == (64, 96):
      raise RuntimeError("CUDA out of memory")
    return {"amp": "bfloat16", "train_ms": 10.0, "inference_ms": 5.0,
            "train_img_s": batch / 0.01, "inference_img_s": batch / 0.005}
  monkeypatch.setattr(benchmark_torchvision, "unavailable_reason", lambda: "")
  monkeypatch.setattr(benchmark_torchvision, "run_torchvision", fake_run)
  two = dict(result, device_count=2)
  out = benchmark.torchvision_side_by_side(two, SIZES)
  assert calls == [BATCH // 2] * 3
  assert out["sizes"][1] == {"size": [64, 96], "failed": "RuntimeError: CUDA out of memory"}
  row, jax_row = out["sizes"][0], result["sizes"][0]
  assert row["train_ratio"] == pytest.approx(jax_row["train"]["img_s"] / 2 / (BATCH // 2 / 0.01))
  text = benchmark.format_report(dict(two, torchvision=out))
  assert "torchvision 64x96: failed (RuntimeError: CUDA out of memory)" in text
