"""Up-front checks of the paths and numbers a command line names, so that a
user's mistake is one line (`command.UsageError`, exit status 2) before any
model is loaded or anything is generated, and nothing is created on disk.

Every message starts with `--FLAG=VALUE` so that the user sees which
argument is wrong:

  checks.output_dir_writable(fv.output, "output")
  checks.output_file_writable(fv.output, "output")

A `gs://` URL is checked as far as an object store allows (its bucket
reachable, a run directory not an object, an input present) and returned as
an `etils.epath.Path`; local paths come back as `pathlib.Path`.
"""
from __future__ import annotations

import os
import pathlib
from typing import Union

from etils import epath

from tp2p_jax.cli.command import UsageError
from tp2p_jax.core import storage
from tp2p_jax.inference.files import special_file_problem

AnyPath = Union[pathlib.Path, epath.Path]


def _named(flag: str, path: str | os.PathLike[str]) -> str:
  return f"--{flag}={os.fspath(path)}"


def _writable_dir(path: pathlib.Path) -> bool:
  # X as well as W: entries of a folder without search permission cannot
  # be created either.
  return os.access(path, os.W_OK | os.X_OK)


def _url_output(path: str | os.PathLike[str], flag: str) -> epath.Path:
  problem = storage.bucket_problem(str(path))
  if problem is not None:
    raise UsageError(f"{_named(flag, path)}: {problem}")
  return storage.path(path)


def _url_input(path: str | os.PathLike[str], flag: str, what: str) -> epath.Path:
  p = storage.path(path)
  try:
    found = p.exists()
  except OSError as e:
    raise UsageError(f"{_named(flag, path)}: cannot be read ({e})") from None
  if not found:
    raise UsageError(f"{_named(flag, path)}: no such {what}")
  return p


def _creatable(path: pathlib.Path, flag: str, shown: str | os.PathLike[str]) -> None:
  """`path` does not exist: its nearest existing ancestor must be a folder
  this process can write (the missing ones are created there)."""
  ancestor = path.parent
  while not ancestor.exists() and ancestor != ancestor.parent:
    if ancestor.is_symlink():
      raise UsageError(f"{_named(flag, shown)}: {ancestor} is a broken symbolic link")
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    raise UsageError(f"{_named(flag, shown)}: {ancestor} is a file, not a folder")
  if not _writable_dir(ancestor):
    raise UsageError(f"{_named(flag, shown)}: cannot create it, {ancestor} is not writable")


def output_dir_writable(path: str | os.PathLike[str], flag: str) -> AnyPath:
  """Checks that `path` is a folder that outputs can be written into, or
  one that can be created; creates nothing.

  Args:
    path: the folder (`~` is expanded).
    flag: the flag's name without dashes, for the message.

  Returns:
    The path, `~` expanded.

  Raises:
    UsageError: `path` is a file (or a broken link), or the folder (or the
      nearest existing one above it) is not writable.
  """
  if storage.is_url(path):
    return _url_output(path, flag)
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    if not _writable_dir(p):
      raise UsageError(f"{_named(flag, path)}: the folder is not writable")
  elif p.exists():
    raise UsageError(f"{_named(flag, path)}: is a file, not a folder")
  elif p.is_symlink():
    raise UsageError(f"{_named(flag, path)}: is a broken symbolic link")
  else:
    _creatable(p, flag, path)
  return p


def output_file_writable(path: str | os.PathLike[str], flag: str) -> AnyPath:
  """Checks that the file `path` can be written (created, or replaced
  through a temporary file beside it); creates nothing.

  Args:
    path: the file (`~` is expanded).
    flag: the flag's name without dashes, for the message.

  Returns:
    The path, `~` expanded.

  Raises:
    UsageError: `path` is a folder, or the folder it goes into (or the
      nearest existing one above it) is a file or not writable.
  """
  if storage.is_url(path):
    return _url_output(path, flag)
  p = pathlib.Path(path).expanduser()
  if os.fspath(path).endswith(os.sep) or p.is_dir():
    raise UsageError(f"{_named(flag, path)}: is a folder; give a file name")
  if p.parent.is_dir():
    if not _writable_dir(p.parent):
      # The file is replaced by a rename in its folder, whatever its own mode.
      raise UsageError(f"{_named(flag, path)}: its folder {p.parent} is not writable")
  else:
    _creatable(p, flag, path)
  return p


def _refuse_special(path: str | os.PathLike[str], flag: str) -> None:
  """`UsageError` for an input that must not be opened: a FIFO (its open
  blocks until a writer comes), a socket, a device or a symbolic link loop."""
  problem = special_file_problem(path)
  if problem is not None:
    raise UsageError(f"{_named(flag, path)}: is {problem}")


def input_file(path: str | os.PathLike[str], flag: str) -> AnyPath:
  """Checks that the file `path` exists and is readable.

  Returns:
    The path, `~` expanded.

  Raises:
    UsageError: `path` is missing, a folder, unreadable, or a file that
      must not be opened (`_refuse_special`).
  """
  _refuse_special(path, flag)
  if storage.is_url(path):
    return _url_input(path, flag, "file")
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    raise UsageError(f"{_named(flag, path)}: is a folder, not a file")
  if not p.exists():
    reason = "is a broken symbolic link" if p.is_symlink() else "no such file"
    raise UsageError(f"{_named(flag, path)}: {reason}")
  if not os.access(p, os.R_OK):
    raise UsageError(f"{_named(flag, path)}: not readable")
  return p


def input_path(path: str | os.PathLike[str], flag: str) -> AnyPath:
  """Checks that `path` (a file or a folder) exists and is readable.

  Returns:
    The path, `~` expanded.

  Raises:
    UsageError: `path` is missing, unreadable, or a file that must not be
      opened (`_refuse_special`).
  """
  _refuse_special(path, flag)
  if storage.is_url(path):
    return _url_input(path, flag, "file or folder")
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    reason = "is a broken symbolic link" if p.is_symlink() else "no such file or folder"
    raise UsageError(f"{_named(flag, path)}: {reason}")
  if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
    raise UsageError(f"{_named(flag, path)}: not readable")
  return p


def run_dir(path: str | os.PathLike[str], flag: str = "workdir") -> AnyPath:
  """Checks that `path` is not a file. Whether it holds a run (or exists)
  is for the run loader to say, which names the file that is missing.

  Returns:
    The path, `~` expanded.

  Raises:
    UsageError: `path` is a file.
  """
  if storage.is_url(path):
    p = storage.path(path)
    if p.is_file():
      raise UsageError(f"{_named(flag, path)}: is a file, not a run directory")
    return p
  p = pathlib.Path(path).expanduser()
  if p.exists() and not p.is_dir():
    raise UsageError(f"{_named(flag, path)}: is a file, not a run directory")
  return p


def positive(value: int | None, flag: str) -> None:
  """Checks that an integer setting is >= 1 (None: not given, fine).

  Raises:
    UsageError: `value` < 1.
  """
  if value is not None and value < 1:
    raise UsageError(f"--{flag}={value}: must be at least 1")
