"""Atomic file writes: readers see the old file or the complete new one,
never a partial write (a killed process leaves at most a stray temp file)."""
from __future__ import annotations

import os
import tempfile
from typing import Mapping

import numpy as np


def write_npz_atomically(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
  """np.savez to a temporary file beside `path`, then rename over it.

  Raises OSError when the directory cannot be created or written.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path),
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
