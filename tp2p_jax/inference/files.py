"""The files inference reads and writes, local or remote alike: every path
goes through `etils.epath`, so a folder, an input or a run directory may be
a local path or a `gs://` URL.

Decoding and PNG encoding happen in memory; only whole files are read or
written (a remote store sees one read or one upload per image).
"""
from __future__ import annotations

import io
import os
from typing import Union

from etils import epath
import numpy as np
from PIL import Image

from tp2p_jax.core import atomic_files
from tp2p_jax.data.image_files import IMAGE_SUFFIXES, describe_error, load_image

PathLike = Union[str, os.PathLike]


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path`, `~` expanded (local paths only)."""
  p = epath.Path(path)
  return p.expanduser() if is_local(p) else p


def is_local(path: PathLike) -> bool:
  """Whether `path` is on this machine's filesystem (not a URL such as gs://)."""
  return "://" not in os.fspath(path)


def absolute(path: PathLike) -> epath.Path:
  """`path` made absolute if local (a URL is absolute already)."""
  p = as_path(path)
  return p.absolute() if is_local(p) else p


def image_files(path: PathLike) -> list[epath.Path]:
  """The image files a command-line argument names: the file itself, or a
  folder's entries with an image suffix (`IMAGE_SUFFIXES`, not recursive),
  sorted by name. An entry that is not a folder counts even if it cannot be
  read (a broken link): reading it then fails, naming it, rather than its
  being passed over in silence.

  Raises:
    FileNotFoundError: `path` does not exist.
  """
  p = as_path(path)
  if p.is_dir():
    return sorted((f for f in p.iterdir()
                   if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()),
                  key=lambda f: f.name)
  if p.exists():
    return [p]
  raise FileNotFoundError(f"{os.fspath(path)}: no such file or folder")


def read_image(path: PathLike) -> np.ndarray:
  """Decodes an image file to uint8 (H, W, 3) RGB, upright per its EXIF
  (`image_files.load_image` on the file's bytes).

  Raises:
    FileNotFoundError, OSError: the file cannot be read; whatever PIL raises
    for files that are not images or are truncated.
  """
  return load_image(io.BytesIO(as_path(path).read_bytes()))


def header_problem(path: PathLike) -> str | None:
  """Why `path` is not an image file, from its header alone (only the first
  block is read, nothing decoded), or None when it looks like one."""
  try:
    with as_path(path).open("rb") as f:
      with Image.open(f):
        return None
  except FileNotFoundError:
    return "no such file"
  except Exception as e:  # pylint: disable=broad-except
    return describe_error(e)


def encode_png(image: np.ndarray) -> bytes:
  """uint8 (H, W, 3) (or (H, W)) -> PNG file bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def write_png(path: PathLike, image: np.ndarray) -> None:
  """Writes uint8 (H, W, 3) as a PNG file, replacing `path` atomically
  (`atomic_files.replacing`: readers see the old file or the whole new one);
  the folder must exist.

  Raises:
    OSError: the file cannot be written (a full disk, a folder in its place).
  """
  data = encode_png(image)  # before the file is opened: a failed encode writes nothing
  with atomic_files.replacing(as_path(path), "wb") as f:
    f.write(data)
