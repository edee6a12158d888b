"""The files inference reads: input images in any folder or URL that
`etils.epath` reaches (local paths and `gs://` alike, through
`tp2p_jax.core.storage`), decoded in memory from one whole-file read each.
Outputs are written with `image_files.save_png` (atomic locally, one upload
to a URL).

A local path that is not a regular file or folder (a FIFO, whose opening
blocks until a writer comes; a socket; a device) or a symbolic link loop is
never opened: `special_file_problem` names it, and reading it fails at once
with that reason.
"""
from __future__ import annotations

import errno
import io
import os
import stat

from etils import epath
import numpy as np
from PIL import Image

from tp2p_jax.core import storage
from tp2p_jax.data.image_files import IMAGE_SUFFIXES, describe_error, load_image


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_file_problem(path: storage.PathLike) -> str | None:
  """Why the local `path` must not be opened, from its metadata alone: it
  is a symbolic link loop, a FIFO, a socket or a device (as itself or
  through links). None for regular files, folders, missing paths (their
  readers say so) and URLs."""
  if storage.is_url(path):
    return None
  try:
    mode = os.stat(os.fspath(path)).st_mode
  except OSError as e:
    return "a symbolic link loop" if e.errno == errno.ELOOP else None
  for is_kind, kind in _SPECIAL_KINDS:
    if is_kind(mode):
      return f"{kind}, not a regular file"
  return None


class SpecialFileError(OSError):
  """An input that is a FIFO, socket, device or link loop (`special_file_problem`)."""

  def __str__(self) -> str:
    return self.strerror or ""


def image_files(path: storage.PathLike) -> list[epath.Path]:
  """The image files a command-line argument names: the file itself, or a
  folder's entries with an image suffix (`IMAGE_SUFFIXES`, not recursive),
  sorted by name. An entry that is not a folder counts even if it cannot be
  read (a broken link, a link loop, a FIFO): reading it then fails at once,
  naming it, rather than its being passed over in silence.

  Raises:
    FileNotFoundError: `path` does not exist.
  """
  p = storage.path(path)
  if p.is_dir():
    return sorted((f for f in p.iterdir()
                   if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()),
                  key=lambda f: f.name)
  if p.exists():
    return [p]
  raise FileNotFoundError(f"{path}: no such file or folder")


def read_image(path: storage.PathLike) -> np.ndarray:
  """Decodes an image file to uint8 (H, W, 3) RGB, upright per its EXIF
  (`image_files.load_image` on the file's bytes).

  Raises:
    SpecialFileError: a FIFO, socket, device or link loop (not opened).
    FileNotFoundError, OSError: the file cannot be read; whatever PIL raises
    for files that are not images or are truncated.
  """
  problem = special_file_problem(path)
  if problem is not None:
    raise SpecialFileError(errno.EINVAL, problem, os.fspath(path))
  return load_image(io.BytesIO(storage.path(path).read_bytes()))


def header_problem(path: storage.PathLike) -> str | None:
  """Why `path` is not an image file, from its header alone (nothing is
  decoded), or None when it looks like one."""
  problem = special_file_problem(path)
  if problem is not None:
    return problem
  try:
    with storage.path(path).open("rb") as f:
      with Image.open(f):
        return None
  except FileNotFoundError:
    return "no such file"
  except Exception as e:  # pylint: disable=broad-except
    return describe_error(e)
