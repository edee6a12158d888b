"""Experiment configs by name or by path.

The configs users edit live in the repository's `experiments/` folder, which
the package installs as `tp2p_jax.experiments` (setup.cfg maps the folder),
so a wheel carries them and every command finds them from any working
directory. A `--config` value is either

  NAME[:VARIANT]   a file of `tp2p_jax.experiments`, e.g. `toycats:tiny`,
                   `transpix2pix`, `pix2pix:facades`;
  PATH[:VARIANT]   any config file, e.g. `experiments/toycats.py:tiny` or a
                   copy of one edited elsewhere.

`resolve` turns the first form into the second, which is what
ml_collections' `config_flags` reads.
"""
from __future__ import annotations

import importlib.util
import pathlib
from typing import Sequence

PACKAGE = "tp2p_jax.experiments"


class UnknownConfigError(ValueError):
  """A --config name that is no file of the experiments package."""


def experiments_dir() -> pathlib.Path:
  """The folder the installed experiment configs are read from."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise UnknownConfigError(f"{PACKAGE} is not installed: reinstall tp2p_jax "
                             "(pip install -e . in a clone)")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def names() -> list[str]:
  """Config names (`get_config` files of the experiments package)."""
  return sorted(p.stem for p in experiments_dir().glob("*.py")
                if not p.stem.startswith("_") and "def get_config" in p.read_text())


def is_name(value: str) -> bool:
  """True when `value` (before any `:VARIANT`) names a config rather than
  giving a path: no folder separator and no `.py`."""
  stem = value.partition(":")[0]
  return bool(stem) and "/" not in stem and "\\" not in stem and not stem.endswith(".py")


def path_of(name: str) -> str:
  """The file of config `name` (no variant), with a one-line error listing
  the names there are."""
  path = experiments_dir() / f"{name}.py"
  if not path.is_file() or name not in names():
    raise UnknownConfigError(f"--config={name}: no such config; names: {', '.join(names())} "
                             "(or give a file path, e.g. experiments/toycats.py:tiny)")
  return str(path)


def resolve(value: str) -> str:
  """`NAME[:VARIANT]` -> `PATH[:VARIANT]`; a path is returned as given."""
  if not is_name(value):
    return value
  name, colon, variant = value.partition(":")
  return path_of(name) + colon + variant


def resolve_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """`argv` with the value of `--FLAG=V` / `--FLAG V` resolved (`resolve`);
  `--FLAG.FIELD=...` overrides are left as they are."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith(f"--{flag}="):
      out[i] = f"--{flag}=" + resolve(arg.split("=", 1)[1])
    elif arg == f"--{flag}" and i + 1 < len(out) and not out[i + 1].startswith("-"):
      out[i + 1] = resolve(out[i + 1])
  return out
