"""Atomic file writes: readers see the old file or the complete new one,
never a partial write. A failed write (a full disk) removes its temporary
file; a killed process leaves at most a stray hidden `.<name>*.tmp`.

A path that is a symbolic link is written through: the file it points to
is replaced (its temporary file beside that file), and the link stays. A
link to something that is not a regular file (`/dev/stdout`, a FIFO) or a
link loop is an OSError naming it: a rename would put a regular file in
its place.

On an object store (`gs://...`) the contents are gathered in memory and sent
as one upload, which the store makes visible only once complete; a failed
or interrupted upload leaves the old object (these files are small:
configs, sample grids, style tables, exported programs)."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import tempfile
from typing import IO, Any, Iterator, Mapping

import numpy as np

from tp2p_jax.core import storage


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _write_target(path: str) -> str:
  """The file that replacing the local `path` replaces: `path`, or the
  file a symbolic link at `path` points to (possibly not there yet).

  Raises:
    OSError: `path` is a link loop, or a link to something that is not a
      regular file.
  """
  if not os.path.islink(path):
    return path
  target = os.path.realpath(path)
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    return target  # a dangling link: the write creates the file it names
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise OSError(errno.ELOOP, "is a symbolic link loop", path) from None
    raise
  if not stat.S_ISREG(mode):
    raise OSError(errno.EINVAL, f"is a symbolic link to {target}, which is not a regular "
                  "file", path)
  return target


@contextlib.contextmanager
def replacing(path: storage.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
  """A file object whose contents replace `path` when the block ends
  without an error; on an error the temporary file is removed.

  The file gets the permissions a plain `open(path, "w")` would (0666 less
  the umask), not `mkstemp`'s private 0600. A symbolic link is written
  through (see the module's docstring).

  Raises:
    OSError: the directory cannot be created or written; `path` is a link
      loop or a link to something other than a regular file.
  """
  if storage.is_url(path):
    with _replacing_object(storage.path(path), mode) as f:
      yield f
    return
  path = _write_target(os.fspath(path))
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path),
                             suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


@contextlib.contextmanager
def _replacing_object(target: Any, mode: str) -> Iterator[IO[Any]]:
  """`replacing` for an object store: one upload once the block succeeds."""
  buffer: IO[Any] = io.BytesIO() if "b" in mode else io.StringIO()
  yield buffer
  data = buffer.getvalue()
  target.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, str):
    target.write_text(data)
  else:
    target.write_bytes(data)


def write_npz_atomically(path: storage.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """np.savez to a temporary file beside `path`, then rename over it.

  Raises OSError when the directory cannot be created or written.
  """
  with replacing(path, "wb") as f:
    np.savez(f, **arrays)


def write_json_atomically(path: storage.PathLike, data: Any) -> None:
  """`data` as indented JSON (sorted keys), replacing `path` atomically."""
  with replacing(path, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")


def write_text_atomically(path: storage.PathLike, text: str) -> None:
  """`text` replacing the file at `path` (local or URL) atomically."""
  with replacing(path, "w") as f:
    f.write(text)
