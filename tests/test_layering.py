"""Import layering of the package, checked statically with ``ast`` (no module is imported).

  * ``jaxdet.ops`` and ``jaxdet.losses`` are the bottom layer: pure array functions that import
    nothing from ``jaxdet.models``, ``.train``, ``.data``, ``.experiments`` or ``.evaluation``.
  * ``jaxdet.evaluation`` scores detections and imports nothing from ``jaxdet.train``,
    ``.experiments`` or ``.models``.

Every import counts, including imports inside functions (``ast.walk`` visits the whole tree),
relative imports (resolved against the module's package), ``from jaxdet import models`` and
``importlib.import_module("jaxdet.models...")`` with a literal name.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxdet"


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  parts = path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[tuple[int, str]]:
  """(line, fully qualified module name) of every import in ``path`` (a file under ``root``)."""
  tree = ast.parse(path.read_text(), filename=str(path))
  name = module_name(path, root)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ""
      out.append((node.lineno, mod))
      # ``from jaxdet import models`` imports the submodule jaxdet.models.
      out += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names if alias.name != "*"]
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and (getattr(node.func, "attr", None) == "import_module"
               or getattr(node.func, "id", None) in ("import_module", "__import__"))):
      out.append((node.lineno, node.args[0].value))
  return out


def violations(layers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
  found = []
  for layer in layers:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules under jaxdet/{layer}"
    for path in files:
      for line, name in imported_names(path):
        for bad in forbidden:
          target = f"jaxdet.{bad}"
          if name == target or name.startswith(target + "."):
            found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
  return sorted(set(found))


def test_import_scanner_sees_function_level_and_relative_imports(tmp_path):
  pkg = tmp_path / "jaxdet" / "ops"
  pkg.mkdir(parents=True)
  mod = pkg / "probe.py"
  mod.write_text("import numpy\n"
                 "def f():\n"
                 "  from ..models import retinanet\n"
                 "  from jaxdet import train\n"
                 "  import jaxdet.data.records\n"
                 "  return importlib.import_module('jaxdet.evaluation.coco')\n")
  names = {name for _, name in imported_names(mod, root=tmp_path)}
  assert {"jaxdet.models", "jaxdet.models.retinanet", "jaxdet.train", "jaxdet.data.records",
          "jaxdet.evaluation.coco"} <= names


def test_ops_and_losses_import_no_higher_layer():
  bad = violations(("ops", "losses"), ("models", "train", "data", "experiments", "evaluation"))
  assert not bad, "ops/ and losses/ must stay below the other packages:\n" + "\n".join(bad)


def test_evaluation_imports_no_train_experiments_models():
  bad = violations(("evaluation",), ("train", "experiments", "models"))
  assert not bad, "evaluation/ must not depend on training, experiments or models:\n" + "\n".join(bad)
