"""Session setup shared by every test: one persistent XLA compilation cache per test run.

Most of the suite's time is XLA:CPU compiling the same small programs again: the tiny
RetinaNet's train step is compiled by a dozen tests, in-process and in ``python -m jaxdet.main``
subprocesses, and the MTGAN / landmark tests rebuild identical experiments. jax's persistent
cache (``JAX_COMPILATION_CACHE_DIR``) turns the repeats into file reads. The directory is made
fresh for each run by the controlling pytest process, before xdist starts its workers, so that
workers and the subprocesses they launch inherit it through the environment, and a run never
depends on what an earlier run left behind. A directory already set in the environment is kept
(to share a cache across runs on purpose).
"""
import os
import shutil
import tempfile

_OWNED = []


def pytest_configure(config):
  if "PYTEST_XDIST_WORKER" in os.environ or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  path = tempfile.mkdtemp(prefix="jaxdet-test-xla-cache-")
  _OWNED.append(path)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  # Cache every program that takes a noticeable time to compile (jax's default is 1 s).
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_unconfigure(config):
  for path in _OWNED:
    shutil.rmtree(path, ignore_errors=True)


# The slowest files (minutes of XLA:CPU compiling and training), collected first. With
# ``--dist loadfile`` each file runs whole on one worker and files are handed out in collection
# order, so a long file collected last keeps one worker busy while the other has nothing left.
_SLOW_FILES_FIRST = (
    "tests/train/test_training.py",
    "tests/train/test_landmark_experiments.py",
    "tests/train/test_mtgan_experiment.py",
    "tests/train/test_ssd_experiment.py",
    "tests/train/test_mask_rcnn.py",
    "tests/train/test_faster_rcnn.py",
    "tests/models/test_mtgan.py",
    "tests/evaluation/test_adversarial.py",
    "tests/train/test_aspect_buckets.py",
    "tests/models/test_conretinanet.py",
    "tests/train/test_mtgan_faster_rcnn_baseline.py",
    "tests/test_notebook.py",
)


def pytest_collection_modifyitems(session, config, items):
  root = str(config.rootpath)
  rank = {name: i for i, name in enumerate(_SLOW_FILES_FIRST)}

  def key(item):
    rel = os.path.relpath(str(item.path), root).replace(os.sep, "/")
    return rank.get(rel, len(rank))

  items.sort(key=key)   # stable: the order inside a file, and among the rest, is kept
