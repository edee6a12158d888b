"""A run directory belongs to one training process at a time.

`WorkdirLock(workdir)` holds an exclusive `flock` on `<workdir>/train.lock`
for the life of a run and writes its holder (host, pid, start time) into the
file. A second trainer on the same directory fails at once with
`WorkdirBusyError` naming the holder. The kernel drops the lock when its
process dies, however it dies; a lock file still naming a holder when the
lock is free therefore comes from a run that was killed, and is taken over
with a warning. The file stays (emptied) after a clean exit: removing a
locked file would let a third process lock a fresh file beside a live one.

On one host the holder's pid is also checked (`kill(pid, 0)`), so a
filesystem where `flock` is a no-op still refuses a second trainer there.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import socket
import time
from typing import Any

LOCK_FILE = "train.lock"

log = logging.getLogger("tp2p_jax.train")


class WorkdirBusyError(RuntimeError):
  """Another live process holds the run directory; the message names it."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
  """Who holds (or held) a run directory's lock."""
  host: str
  pid: int
  started: str  # local time, ISO 8601

  def describe(self) -> str:
    return f"pid {self.pid} on {self.host}, since {self.started}"


def _read_holder(fd: int) -> LockHolder | None:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode("utf-8", "replace").strip()
  if not text:
    return None
  try:
    data: dict[str, Any] = json.loads(text)
    return LockHolder(str(data["host"]), int(data["pid"]), str(data.get("started", "?")))
  except (ValueError, KeyError, TypeError):
    return LockHolder("?", -1, "?")


def _alive_here(holder: LockHolder) -> bool:
  """Whether `holder` is a live process other than this one on this host."""
  if holder.host != socket.gethostname() or holder.pid <= 0 or holder.pid == os.getpid():
    return False
  try:
    os.kill(holder.pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """Exclusive ownership of `workdir` by this process (a context manager).

  Args:
    workdir: the run directory (created if missing).

  Raises (on enter):
    WorkdirBusyError: another live process holds it.
    OSError: the directory cannot be created or the lock file written.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          raise
        holder = _read_holder(fd)
        raise WorkdirBusyError(
            f"{os.path.dirname(self.path)}: in use by another training run "
            f"({holder.describe() if holder else 'holder unknown'}); wait for it to end or "
            "stop it (SIGTERM saves a checkpoint), or choose another --workdir") from None
      holder = _read_holder(fd)
      if holder is not None:
        if _alive_here(holder):
          raise WorkdirBusyError(
              f"{os.path.dirname(self.path)}: in use by another training run "
              f"({holder.describe()}); wait for it to end or stop it, or choose another "
              "--workdir")
        if holder.pid != os.getpid():
          log.warning("%s: taking over the lock of a run that ended without releasing it "
                      "(%s)", os.path.dirname(self.path), holder.describe())
      record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
      os.ftruncate(fd, 0)
      os.pwrite(fd, record.encode() + b"\n", 0)
      os.fsync(fd)
    except BaseException:
      os.close(fd)
      raise
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # empty: released cleanly, not a stale holder
    except OSError:
      pass  # e.g. a full disk: the flock below is what matters
    finally:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc: object) -> None:
    self.release()


def try_lock(workdir: str) -> WorkdirLock | None:
  """The lock of `workdir` if no training run holds it now (for readers that
  tidy a run directory, e.g. moving a damaged checkpoint aside), else None.
  The caller releases it."""
  lock = WorkdirLock(workdir)
  try:
    lock.acquire()
  except (WorkdirBusyError, OSError):
    return None
  return lock
