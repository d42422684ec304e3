"""Packaging: the configs ship with the package, names resolve, launch/ has no placeholders.

* The repo's ``configs/`` folder is installed as ``jaxdet/configs/`` (``pyproject.toml`` maps
  it; the files are not copied in the repo): the build of a copy of the project must contain
  every ``configs/*.py`` there and every module of ``jaxdet/``.
* ``--config=NAME[:variants]`` resolves to the packaged file (``jaxdet.configs_by_name``), from
  any directory; an unknown name lists the names; an existing file wins over a name.
* No file in ``launch/`` installs from a placeholder URL.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from jaxdet import configs_by_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLACEHOLDERS = ("example.invalid", "YOUR_ORG")


# ------------------------------------------------------------------------------ build contents
def _can_build_wheel() -> bool:
  """setuptools >= 70.1 has bdist_wheel; older ones need the ``wheel`` package."""
  return (importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
          or importlib.util.find_spec("wheel") is not None)


def built_files(tmp_path: pathlib.Path) -> tuple[set[str], pathlib.Path | None, str]:
  """Builds a copy of the project (the repo itself is not written to) without network.

  Returns (paths in the built package, folder they were built into or None for a wheel, how).
  With a wheel builder available: ``pip wheel --no-deps --no-build-isolation`` and the wheel's
  file list. Otherwise setuptools' ``build_py``, the step whose output bdist_wheel zips.
  """
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, src / name)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for name in ("jaxdet", "configs"):
    shutil.copytree(ROOT / name, src / name, ignore=ignore)
  if _can_build_wheel():
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"pip wheel failed:\n{out.stdout}\n{out.stderr}"
    (wheel,) = (tmp_path / "wheel").glob("jaxdet-*.whl")
    with zipfile.ZipFile(wheel) as z:
      return set(z.namelist()), None, "wheel"
  lib = tmp_path / "lib"
  out = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                        "egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib",
                        str(lib)], cwd=src, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, f"setuptools build_py failed:\n{out.stdout}\n{out.stderr}"
  return {p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()}, lib, "build_py"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
  return built_files(tmp_path_factory.mktemp("build"))


def test_build_ships_every_config_as_jaxdet_configs(build):
  files, _, how = build
  assert "jaxdet/configs/demo.py" in files, (
      f"the {how} build lacks jaxdet/configs/demo.py: pyproject.toml must list 'jaxdet.configs' "
      "in [tool.setuptools] packages and map it to configs/ in [tool.setuptools.package-dir]")
  configs = sorted(p.name for p in (ROOT / "configs").iterdir()
                   if p.is_file() and p.suffix == ".py")
  missing = [n for n in configs if f"jaxdet/configs/{n}" not in files]
  assert not missing, f"configs/ files not in the {how} build as jaxdet/configs/: {missing}"
  assert not any(f.startswith("configs/") for f in files), "configs/ is not a top-level package"


def test_build_ships_every_module_of_jaxdet(build):
  """pyproject.toml lists the packages by hand (to map configs/): a new one must be added."""
  files, _, how = build
  missing = sorted({p.parent.relative_to(ROOT).as_posix().replace("/", ".")
                    for p in (ROOT / "jaxdet").rglob("*.py")
                    if "__pycache__" not in p.parts
                    and p.relative_to(ROOT).as_posix() not in files})
  assert not missing, (f"modules of these packages are not in the {how} build: {missing}; add "
                       "them to [tool.setuptools] packages in pyproject.toml")


def test_configs_are_not_duplicated_into_the_package():
  assert not (ROOT / "jaxdet" / "configs").exists(), (
      "jaxdet/configs/ exists in the repo: configs live only in configs/ (pyproject.toml maps "
      "them into the package); remove the copy")


def test_built_configs_load_their_siblings_from_the_installed_folder(build):
  """Configs that build on another (``sibling_config(__file__, 'demo')``) work installed."""
  _, lib, _ = build
  if lib is None:
    pytest.skip("checked on the build_py output (a wheel is not unpacked here)")
  users = sorted(p for p in (lib / "jaxdet" / "configs").glob("*.py")
                 if "sibling_config(__file__" in p.read_text())
  assert users, "no config uses sibling_config any more: drop this test"
  for path in users:
    config = configs_by_name.load(str(path))
    assert config.experiment, path


# ------------------------------------------------------------------------------- names
def test_a_name_resolves_to_the_packaged_file():
  path = pathlib.Path(configs_by_name.resolve("demo"))
  assert path.name == "demo.py" and path.is_file()
  assert path.read_text() == (ROOT / "configs" / "demo.py").read_text()
  assert "demo" in configs_by_name.names() and "retinanet_coco" in configs_by_name.names()


def test_a_name_with_variants_keeps_them():
  spec = configs_by_name.resolve("demo:quick")
  assert spec == configs_by_name.resolve("demo") + ":quick"
  quick = configs_by_name.load("demo:quick").to_dict()
  assert quick == configs_by_name.load(str(ROOT / "configs" / "demo.py") + ":quick").to_dict()
  assert quick != configs_by_name.load("demo").to_dict()


def test_an_unknown_name_lists_the_names():
  with pytest.raises(configs_by_name.UnknownConfigError) as e:
    configs_by_name.resolve("demox:quick")
  message = str(e.value)
  assert "'demox'" in message and "Did you mean 'demo'" in message
  for name in ("demo", "retinanet_coco", "mtgan_demo"):
    assert name in message


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "demo").write_text("def get_config(arg=None):\n  raise NotImplementedError\n")
  assert configs_by_name.resolve("demo") == "demo"
  assert configs_by_name.resolve("demo:quick") == "demo:quick"
  # Paths are never names, whether or not they exist.
  for spec in ("configs/demo.py", "demo.py:quick", "./demo", "missing/demo:quick"):
    assert configs_by_name.resolve(spec) == spec


def test_main_resolves_config_names_before_absl_reads_them():
  from jaxdet import main
  demo = configs_by_name.resolve("demo")
  argv = main._resolve_config_names(["jaxdet", "--config=demo:quick", "--workdir=w"])
  assert argv == ["jaxdet", f"--config={demo}:quick", "--workdir=w"]
  argv = main._resolve_config_names(["jaxdet", "--config", "demo", "--mode=eval"])
  assert argv == ["jaxdet", "--config", demo, "--mode=eval"]
  argv = ["jaxdet", f"--config={demo}"]
  assert main._resolve_config_names(argv) == argv


def _main(*args, cwd):
  return subprocess.run([sys.executable, "-m", "jaxdet.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=120)


def test_cli_names_from_another_directory(tmp_path):
  out = _main("--list_configs", cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  assert "demo " in out.stdout and "retinanet_coco" in out.stdout

  out = _main("--config=demox:quick", "--workdir=w", cwd=tmp_path)
  assert out.returncode == 2
  assert "Did you mean 'demo'" in out.stderr and "retinanet_coco" in out.stderr

  # A repo-relative path from elsewhere: says so and names the packaged config.
  out = _main("--config=configs/demo.py:quick", "--workdir=w", cwd=tmp_path)
  assert out.returncode == 2 and "--config=demo:quick" in out.stderr, out.stderr

  # A name reaches the experiment (here its mode check: nothing is built or written).
  out = _main("--config=demo:quick", "--workdir=w", "--mode=nonsense", cwd=tmp_path)
  assert out.returncode == 2 and "'nonsense' is not a mode" in out.stderr, out.stderr
  assert not (tmp_path / "w").exists()

  # Without --workdir: workdirs/<config file name> (here: eval finds no checkpoint there).
  out = _main("--config=demo:quick", "--mode=eval", cwd=tmp_path)
  assert out.returncode != 0, out.stderr
  assert str(tmp_path / "workdirs" / "demo" / "checkpoints") in out.stderr, out.stderr


# ------------------------------------------------------------------------------- launch/
def test_no_placeholder_urls_in_launch():
  found = [f"{p.relative_to(ROOT)}: {word}" for p in sorted((ROOT / "launch").iterdir())
           if p.is_file() for word in PLACEHOLDERS if word in p.read_text(errors="replace")]
  assert not found, f"placeholder URLs in launch/: {found}"


def test_launch_scripts_parse():
  for script in sorted((ROOT / "launch").glob("*.sh")):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, f"{script}: {out.stderr}"


@pytest.fixture
def fake_gcloud(tmp_path):
  """A ``gcloud`` on PATH that logs its arguments (``|``-joined, calls ended by ``@@``)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.log"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{log}"\necho @@ >> "{log}"\n'
                    'case "$*" in *" scp "*) cp "$5" "' + str(tmp_path) + '/sent.tar.gz";; esac\n')
  gcloud.chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TPU_NAME": "pod",
         "ZONE": "z", "CONFIG": "demo:quick", "WORKDIR": "gs://b/run"}
  env.pop("REPO_URL", None)
  return env, log


def test_tpu_pod_copies_this_checkout_without_repo_url(fake_gcloud, tmp_path):
  if not (ROOT / ".git").exists():
    pytest.skip("not a git checkout: tpu_pod.sh needs REPO_URL here")
  env, log = fake_gcloud
  out = subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh")], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "REPO_URL is not set: copying this checkout" in out.stderr
  scp, ssh = log.read_text().split("@@\n")[:-1]
  assert scp.startswith("compute|tpus|tpu-vm|scp|") and "--worker=all" in scp
  assert ssh.startswith("compute|tpus|tpu-vm|ssh|pod|") and "tar -xzf" in ssh
  assert "--config=demo:quick --workdir=gs://b/run" in ssh
  import tarfile
  with tarfile.open(tmp_path / "sent.tar.gz") as tar:
    names = set(tar.getnames())
  assert {"pyproject.toml", "jaxdet/main.py", "configs/demo.py"} <= names
  assert not any(n.startswith((".venv/", ".git/")) for n in names)


def test_tpu_pod_clones_repo_url(fake_gcloud):
  env, log = fake_gcloud
  env["REPO_URL"] = "https://git.example.org/me/jaxdet.git"
  out = subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  (ssh,) = log.read_text().split("@@\n")[:-1]
  assert "git clone" in ssh and "https://git.example.org/me/jaxdet.git ~/jaxdet" in ssh
  assert "every worker clones https://git.example.org/me/jaxdet.git" in out.stderr
