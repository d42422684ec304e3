"""Config files by name: ``--config=demo:quick`` is ``<jaxdet>/configs/demo.py:quick``.

The repo's ``configs/`` folder is installed with the package as ``jaxdet/configs/``
(``pyproject.toml`` maps it; the files exist only in ``configs/``), so after a normal
``pip install`` every config can be named from any directory. With an editable install (or a
checkout on ``sys.path``) the names are the checkout's ``configs/*.py``.

A ``--config`` value is a *name* when the part before ``:`` is not an existing file and has no
``/`` and no ``.py`` (``demo``, ``demo:quick``, ``retinanet_coco:r101,tfds``); anything else is
a path, passed on unchanged (a real file always wins over a name). ``python -m jaxdet.main``
resolves names before absl reads the flag; notebooks load a config with ``load('demo')``.
"""
from __future__ import annotations

import ast
import difflib
import os
import pathlib


class UnknownConfigError(ValueError):
  """A ``--config`` name that is neither a file nor a packaged config (lists the names)."""


def configs_dir() -> pathlib.Path:
  """The folder of the packaged config files.

  ``<site-packages>/jaxdet/configs`` after ``pip install .`` (or a wheel); the checkout's
  ``configs/`` next to ``jaxdet/`` for ``pip install -e .`` or a source tree on ``sys.path``
  (setuptools' editable finder cannot import a sub-folder mapped from outside the package).
  """
  import importlib.resources

  import jaxdet
  installed = importlib.resources.files("jaxdet") / "configs"
  if isinstance(installed, pathlib.Path) and installed.is_dir():
    return installed
  checkout = pathlib.Path(jaxdet.__file__).resolve().parent.parent
  if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
    return checkout / "configs"
  raise FileNotFoundError(
      f"No config files found: neither {installed} (installed package) nor "
      f"{checkout / 'configs'} (source checkout) exists. Reinstall jaxdet "
      "(`pip install .` in the repository, which ships configs/ as jaxdet/configs/) or pass "
      "--config=path/to/config.py.")


def names() -> list[str]:
  """Every config name, sorted (the ``*.py`` files of ``configs_dir()``, ``_*`` excluded)."""
  return sorted(p.stem for p in configs_dir().glob("*.py") if not p.name.startswith("_"))


def describe() -> list[tuple[str, str]]:
  """``(name, first line of the config file's docstring)`` for every config (not executed)."""
  out = []
  for name in names():
    path = configs_dir() / f"{name}.py"
    try:
      doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    except SyntaxError as e:
      doc = f"(cannot be parsed: {e})"
    out.append((name, doc.strip().splitlines()[0] if doc.strip() else ""))
  return out


def is_name(spec: str) -> bool:
  """True if ``spec`` (``--config``'s value, ``FILE[:ARGS]``) names a packaged config."""
  path = spec.split(":", 1)[0]
  return (bool(path) and not os.path.isfile(path) and "/" not in path and os.sep not in path
          and ".py" not in path)


def resolve(spec: str) -> str:
  """``'demo:quick'`` -> ``'<configs_dir>/demo.py:quick'``; a path (or existing file) unchanged.

  Raises UnknownConfigError (naming the closest names and listing all) for an unknown name.
  """
  if not is_name(spec):
    return spec
  name, sep, args = spec.partition(":")
  path = configs_dir() / f"{name}.py"
  if name.startswith("_") or not path.is_file():
    available = names()
    close = difflib.get_close_matches(name, available, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownConfigError(
        f"--config={spec!r}: there is no file {name!r} and no config named {name!r} in "
        f"{configs_dir()}.{hint} Config names: {', '.join(available)}. Pass one of these "
        f"(with ':variant,...' if the config takes variants) or a path to a config file.")
  return f"{path}{sep}{args}"


def load(spec: str):
  """The ConfigDict of ``spec`` (a name or ``FILE``, with ``:ARGS``), loaded as ``--config``
  loads it: the file's ``get_config(ARGS)`` (``get_config()`` without ``:``)."""
  import importlib.util
  path, sep, args = resolve(spec).partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path!r} (from {spec!r}) does not exist.")
  module_spec = importlib.util.spec_from_file_location(
      "_jaxdet_config_" + pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"Config file {path} has no get_config() function.")
  return module.get_config(args) if sep else module.get_config()
