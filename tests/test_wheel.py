"""The package as a wheel: `pip install .` (not editable) carries everything a
command needs, configs included, and runs from any folder.

The wheel is built here and installed into a folder of its own, which
comes first on the path of commands run from an empty folder: they import
the wheel's files, never the checkout's (asserted)."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import zipfile

import pytest

from tests.subprocess_runs import REPO, cli_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
  """The folder the freshly built wheel is installed into."""
  dist = tmp_path_factory.mktemp("dist")
  build = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
       "--wheel-dir", str(dist), str(REPO)], capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, build.stderr[-3000:]
  wheel, = dist.glob("tp2p_jax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  for needed in ("tp2p_jax/core/__init__.py", "tp2p_jax/experiments/toycats.py",
                 "tp2p_jax/serving/static/index.html"):
    assert needed in names, needed
  assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
  target = tmp_path_factory.mktemp("site")
  install = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
       str(wheel)], capture_output=True, text=True, timeout=600)
  assert install.returncode == 0, install.stderr[-3000:]
  return target


def _tp2p(installed: pathlib.Path, cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  env = cli_env()
  env["PYTHONPATH"] = str(installed)
  return subprocess.run([sys.executable, "-m", "tp2p_jax.cli.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_the_wheels_commands_find_their_configs_from_an_empty_folder(installed, tmp_path):
  elsewhere = tmp_path / "empty"
  elsewhere.mkdir()
  where = subprocess.run([sys.executable, "-c", "import tp2p_jax; print(tp2p_jax.__file__)"],
                         cwd=elsewhere, env={**cli_env(), "PYTHONPATH": str(installed)},
                         capture_output=True, text=True)
  assert where.stdout.strip().startswith(str(installed)), where.stdout

  dry = _tp2p(installed, elsewhere, "train", "--config=transpix2pix", "--dry_run")
  assert dry.returncode == 0, dry.stderr[-2000:]
  assert json.loads(dry.stdout.splitlines()[-1])["params"]["generator"] == 129_034_960

  unknown = _tp2p(installed, elsewhere, "train", "--config=nope", "--dry_run")
  assert unknown.returncode == 2
  assert unknown.stderr.strip().splitlines()[-1].startswith("error: --config=nope: no such config")
