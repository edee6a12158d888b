"""The files inference reads: input images in any folder or URL that
`etils.epath` reaches (local paths and `gs://` alike, through
`tp2p_jax.core.storage`), decoded in memory from one whole-file read each.
Outputs are written with `image_files.save_png` (atomic locally, one upload
to a URL).
"""
from __future__ import annotations

import io

from etils import epath
import numpy as np
from PIL import Image

from tp2p_jax.core import storage
from tp2p_jax.data.image_files import IMAGE_SUFFIXES, describe_error, load_image


def image_files(path: storage.PathLike) -> list[epath.Path]:
  """The image files a command-line argument names: the file itself, or a
  folder's entries with an image suffix (`IMAGE_SUFFIXES`, not recursive),
  sorted by name. An entry that is not a folder counts even if it cannot be
  read (a broken link): reading it then fails, naming it, rather than its
  being passed over in silence.

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
    FileNotFoundError, OSError: the file cannot be read; whatever PIL raises
    for files that are not images or are truncated.
  """
  return load_image(io.BytesIO(storage.path(path).read_bytes()))


def header_problem(path: storage.PathLike) -> str | None:
  """Why `path` is not an image file, from its header alone (nothing is
  decoded), or None when it looks like one."""
  try:
    with storage.path(path).open("rb") as f:
      with Image.open(f):
        return None
  except FileNotFoundError:
    return "no such file"
  except Exception as e:  # pylint: disable=broad-except
    return describe_error(e)
