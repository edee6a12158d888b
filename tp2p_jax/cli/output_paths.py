"""Checks that what a command writes leaves what it reads alone, made before
any work; each failure is one line (`command.UsageError`, exit status 2)
starting with `--FLAG=VALUE`.

  outputs = [output_paths.Output("output", fv.output, fv.output)]
  output_paths.check_outputs(outputs, inputs=[("--input", fv.input)], run=fv.workdir)

Every file a command writes (side files such as `<output>.json` included)
is compared with its inputs, with the run directory's own files and with
the other outputs. Local paths are compared after resolving symbolic links
(`os.path.realpath`, which never raises on a loop) and, where both exist,
by device and inode (hard links); `gs://` URLs as normalised strings (no
`.`, `..`, doubled or trailing slashes).

A run's own files are its `config.json`, `checkpoints/`,
`checkpoints.damaged/`, `best/`, `best.damaged/`, `*.jsonl`, `tensorboard/`,
`samples/`, `eval/`, `train.lock` and `class_embeddings.npz`, at its root and in each stage
folder below it (a folder holding `config.json` or `checkpoints/`). Other
names inside a run directory are free: `export --output=RUN/g.jaxexport`
is fine.

An output path that is a symbolic link to a regular file (or to nothing
yet) is written through (`atomic_files.replacing`); a link loop, a link to
anything else (`/dev/stdout`) and a FIFO, socket or device as the output
itself are refused. An input that is a FIFO, socket, device or link loop is
refused too (`checks.input_file`/`input_path`, or `regular_input` where a
command's inputs do not go through those): opening a FIFO blocks until a
writer comes.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
import stat
from typing import Sequence

from tp2p_jax.cli.command import UsageError
from tp2p_jax.core import storage
from tp2p_jax.inference.files import special_file_problem

RUN_FILES = frozenset({"config.json", "checkpoints", "checkpoints.damaged", "tensorboard",
                       "samples", "eval", "train.lock", "class_embeddings.npz", "best",
                       "best.damaged"})


@dataclasses.dataclass(frozen=True)
class Output:
  """One file a command writes.

  Attributes:
    flag: the flag that names it, without dashes ("output").
    given: the flag's value as given, for the message.
    path: the file written (a side file, or a file in an output folder).
    shown: how the message names `path` (default: `path`).
  """
  flag: str
  given: str | os.PathLike[str]
  path: storage.PathLike
  shown: str | None = None

  def named(self) -> str:
    return f"--{self.flag}={os.fspath(self.given)}"

  def written(self) -> str:
    return self.shown if self.shown is not None else os.fspath(self.path)


def identity(path: storage.PathLike) -> str:
  """What two spellings of one location have in common: a URL normalised, a
  local path absolute with its symbolic links resolved."""
  text = str(path) if not isinstance(path, str) else path
  if storage.is_url(text):
    scheme, rest = text.split("://", 1)
    rest = posixpath.normpath("/" + rest).lstrip("/")
    return f"{scheme.lower()}://{rest}"
  return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _inode(path: storage.PathLike) -> tuple[int, int] | None:
  if storage.is_url(path):
    return None
  try:
    st = os.stat(os.fspath(path))  # metadata only: never blocks on a FIFO
  except OSError:
    return None
  return st.st_dev, st.st_ino


def regular_input(path: storage.PathLike | None, flag: str) -> None:
  """Refuses an input that must not be opened, for commands whose inputs do
  not go through `checks.input_file`/`input_path` (which refuse them too).

  Raises:
    UsageError: `--FLAG=PATH: is a FIFO (named pipe), not a regular file`.
  """
  if path is None or path == "":
    return
  problem = special_file_problem(path)
  if problem is not None:
    raise UsageError(f"--{flag}={os.fspath(path)}: is {problem}")


def _special_output(path: str) -> str | None:
  """Why the local output `path` cannot be replaced by a rename, or None."""
  try:
    own = os.lstat(path).st_mode
  except FileNotFoundError:
    return None
  if stat.S_ISLNK(own):
    target = os.path.realpath(path)
    try:
      mode = os.stat(path).st_mode
    except FileNotFoundError:
      return None  # a dangling link: written through, creating its target
    except OSError as e:
      return "is a symbolic link loop" if e.errno == errno.ELOOP else None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
      return None  # a folder is the folder checks' to name
    kind = special_file_problem(path) or "not a regular file"
    return f"is a symbolic link to {target}, {kind}; give a regular file"
  if stat.S_ISREG(own) or stat.S_ISDIR(own):
    return None
  return f"is {special_file_problem(path) or 'not a regular file'}; give a regular file"


def _run_file(path: str, run: str) -> str | None:
  """The run's own file or folder that writing `path` would replace or put
  a file into (relative to `run`, e.g. "config.json"), or None. Both are
  identities (`identity`)."""
  prefix = run.rstrip("/") + "/"
  if not path.startswith(prefix):
    return None
  parts = path[len(prefix):].split("/")
  folder = run
  for i, part in enumerate(parts):
    if part in RUN_FILES or (i == len(parts) - 1 and part.endswith(".jsonl")):
      return "/".join(parts[:i + 1])
    folder = f"{folder}/{part}"
    # Stage folders (e.g. style_encoder/) have a run's layout; on an object
    # store each probe is a request, so only the root is checked there.
    if storage.is_url(folder) or not (os.path.isfile(f"{folder}/config.json")
                                      or os.path.isdir(f"{folder}/checkpoints")):
      return None
  return None


def check_outputs(outputs: Sequence[Output], *,
                  inputs: Sequence[tuple[str, storage.PathLike]] = (),
                  run: storage.PathLike | None = None, kind: str = "file") -> None:
  """Refuses, before any work, an output that would replace an input, one
  of the run's own files, or another output, or that cannot be replaced by
  a rename (see the module's docstring).

  Args:
    outputs: every file the command will write.
    inputs: (how the message names it, path) of each file read, e.g.
      ("--input=cat.png", "cat.png").
    run: the run directory the command reads, if any.
    kind: "file" or "folder", what the flag names: "choose another KIND".

  Raises:
    UsageError: one line naming the flag, the file and what it would
      overwrite.
  """
  readers: dict[str, str] = {}
  inodes: dict[tuple[int, int], str] = {}
  for label, path in inputs:
    readers.setdefault(identity(path), label)
    node = _inode(path)
    if node is not None:
      inodes.setdefault(node, label)
  run_id = identity(run) if run is not None and os.fspath(run) != "" else None
  seen: dict[str, Output] = {}
  for out in outputs:
    local = not storage.is_url(out.path)
    if local:
      problem = _special_output(os.path.abspath(os.path.expanduser(os.fspath(out.path))))
      if problem is not None:
        prefix = "" if out.shown is None else f"{out.written()} "
        raise UsageError(f"{out.named()}: {prefix}{problem}")
    key = identity(out.path)
    node = _inode(out.path) if local else None
    victim = readers.get(key) or (inodes.get(node) if node is not None else None)
    if victim is not None:
      raise UsageError(f"{out.named()}: writing {out.written()} would overwrite the input "
                       f"{victim}; choose another {kind}")
    if run_id is not None:
      own = _run_file(key, run_id)
      if own is not None:
        raise UsageError(f"{out.named()}: writing {out.written()} would overwrite the run's "
                         f"{own} (--workdir={os.fspath(run)}); write outside the run's own "
                         "files")
    other = seen.get(key)
    if other is not None:
      raise UsageError(f"{out.named()}: {other.written()} and {out.written()} are the same "
                       "file; choose another name")
    seen[key] = out
