"""``launch/colab.ipynb`` runs top to bottom: a short demo training, metrics, detections, loss.

No Jupyter kernel: the notebook's JSON is read and every code cell is executed in one namespace,
in order, with the notebook's folder as working directory (as Jupyter runs it). IPython syntax is
translated line by line: ``%pip install`` / ``!pip install`` lines become ``pass`` (the test
environment already has jaxdet installed), other ``%`` magics (TensorBoard) are skipped and any
other ``!cmd`` runs through the shell. After the cell tagged ``parameters`` the test sets a tiny
run (``STEPS``, ``BATCH_SIZE``, ``EVAL_IMAGES``) and a temporary ``WORKDIR``.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "launch" / "colab.ipynb"
TINY = {"STEPS": 10, "BATCH_SIZE": 4, "EVAL_IMAGES": 16}


def _shell(command: str) -> None:
  subprocess.run(command, shell=True, check=True)


def python_source(cell_source: str) -> str:
  """A code cell's text as plain Python (the IPython escapes translated, see the module doc)."""
  out = []
  for line in cell_source.splitlines():
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if re.match(r"[%!]\s*pip\s+install\b", stripped):
      out.append(indent + "pass  # " + stripped)
    elif stripped.startswith("%"):
      out.append(indent + "pass  # " + stripped)
    elif stripped.startswith("!"):
      # IPython expands {expr} in shell lines; an f-string does the same.
      out.append(f"{indent}_shell(f{stripped[1:].strip()!r})")
    else:
      out.append(line)
  return "\n".join(out) + "\n"


def code_cells(path: pathlib.Path) -> list[dict]:
  with open(path) as f:
    notebook = json.load(f)
  cells = []
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      source = cell["source"]
      cells.append({"source": "".join(source) if isinstance(source, list) else source,
                    "tags": cell.get("metadata", {}).get("tags", [])})
  return cells


def run_notebook(path: pathlib.Path, overrides: dict) -> dict:
  """Executes the code cells of ``path`` in one namespace; returns the namespace."""
  cells = code_cells(path)
  parameter_cells = [i for i, c in enumerate(cells) if "parameters" in c["tags"]]
  assert len(parameter_cells) == 1, (
      f"{path}: exactly one code cell must carry the 'parameters' tag (metadata.tags); found "
      f"{len(parameter_cells)}. The test sets {sorted(overrides)} after that cell.")
  namespace = {"__name__": "__main__", "_shell": _shell}
  cwd = os.getcwd()
  os.chdir(path.parent)
  try:
    for i, cell in enumerate(cells):
      code = compile(python_source(cell["source"]), f"{path.name}[code cell {i}]", "exec")
      exec(code, namespace)
      if i == parameter_cells[0]:
        missing = sorted(set(overrides) - set(namespace))
        assert not missing, (f"{path}: the parameters cell no longer defines {missing}; the "
                             "test overrides them to keep the run tiny: update the test.")
        namespace.update(overrides)
  finally:
    os.chdir(cwd)
  return namespace


def test_translation_of_ipython_lines():
  src = python_source("x = 1\nif x:\n  %pip install -q \"{SOURCE}\"\n%load_ext tensorboard\n"
                      "!echo {x}\n")
  assert src.splitlines() == ["x = 1", "if x:", "  pass  # %pip install -q \"{SOURCE}\"",
                              "pass  # %load_ext tensorboard", "_shell(f'echo {x}')"]
  compile(src, "probe", "exec")


def test_colab_notebook_runs_top_to_bottom(tmp_path):
  workdir = tmp_path / "run"
  ns = run_notebook(NOTEBOOK, {**TINY, "WORKDIR": str(workdir)})

  # It installed (or found) jaxdet from this checkout, not from some URL.
  assert pathlib.Path(ns["SOURCE"]).resolve() == ROOT
  # Trained STEPS steps of the packaged demo config, loaded by name.
  assert ns["config"].train.num_steps == TINY["STEPS"]
  assert ns["config"].model.depth == 18 and ns["config"].data.source == "benchmark"
  # Metrics: one evaluation after the last step, shown as a table.
  evals = [json.loads(l) for l in (workdir / "eval_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in evals] == [TINY["STEPS"]] and "AP50" in evals[0]
  train = [json.loads(l) for l in (workdir / "train_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in train] == list(range(1, TINY["STEPS"] + 1))
  # Detections drawn on validation images.
  from PIL import Image
  pictures = sorted(workdir.glob("val_*_det.png"))
  assert len(pictures) == 6, pictures
  assert Image.open(pictures[0]).size == (128, 128)
  # The loss plot, from train_metrics.jsonl.
  plot = Image.open(workdir / "loss_curve.png")
  assert plot.size[0] >= 300 and plot.size[1] >= 200
  import numpy as np
  colours = np.unique(np.asarray(plot.convert("RGB")).reshape(-1, 3), axis=0)
  assert len(colours) > 3  # axes, labels and curves, not a blank image
  assert set(ns["curves"]) >= {"loss", "cls_loss", "reg_loss"}


def test_metrics_cell_shows_missing_values(tmp_path, capsys):
  """A metric the split cannot score (APl: no large objects) is null in the JSONL file."""
  (tmp_path / "eval_metrics.jsonl").write_text('{"step": 5, "AP": 0.25, "APl": null}\n')
  (tmp_path / "train_metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
  (cell,) = [c for c in code_cells(NOTEBOOK) if "EVAL_METRICS_FILE" in c["source"]]
  exec(python_source(cell["source"]), {"WORKDIR": str(tmp_path)})
  out = capsys.readouterr().out
  assert "0.2500" in out or "0.25" in out


def test_notebook_without_clone_and_repo_url_says_what_to_set(tmp_path):
  """Outside a clone (on Colab) with REPO_URL unset, the install cell names REPO_URL."""
  nb = tmp_path / "nb" / "colab.ipynb"   # tmp_path/pyproject.toml does not exist
  nb.parent.mkdir()
  nb.write_text(NOTEBOOK.read_text())
  with pytest.raises(RuntimeError, match="REPO_URL"):
    run_notebook(nb, {"STEPS": 1})


def test_notebook_has_no_placeholder_install_url():
  text = NOTEBOOK.read_text()
  assert "YOUR_ORG" not in text and "example.invalid" not in text
  assert not (ROOT / "launch" / "colab_demo.ipynb").exists(), "replaced by launch/colab.ipynb"
