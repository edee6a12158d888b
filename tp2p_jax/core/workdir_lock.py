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

A run directory on Cloud Storage (`gs://...`) has no `flock`. There the lock
is the object `train.lock`, created only if absent (an upload with the
precondition `ifGenerationMatch=0`, which GCS applies atomically: of two
trainers starting at once, one gets HTTP 412 and is refused). The holder
rewrites it every `HEARTBEAT_S` seconds (again conditionally, on its own
generation). A lock object whose holder is a dead process on this host, or
that nobody refreshed for `STALE_S` seconds, is from a killed run and is
taken over (conditionally on that object's generation, so two takers cannot
both win). What this cannot protect against: a holder paused longer than
`STALE_S` (its heartbeat thread stopped, e.g. a frozen VM) is taken over
while it lives; when it wakes, its next heartbeat finds the lock gone and
logs an error and stops before its next checkpoint (its current step's
work is lost, the run's checkpoints are not). Clocks: staleness
compares the object's `updated` time (the storage server's clock) with this
host's clock, so hosts whose clocks are off by more than a few seconds see
the staleness that much sooner or later.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from tp2p_jax.core import storage

LOCK_FILE = "train.lock"
# Object-store locks: the holder refreshes its lock this often, and a lock
# not refreshed for STALE_S seconds is taken to be a killed run's.
HEARTBEAT_S = 30.0
STALE_S = 90.0

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


def _parse_holder(record: bytes) -> LockHolder | None:
  """The holder a lock file or object names (None: empty, released)."""
  text = record.decode("utf-8", "replace").strip()
  if not text:
    return None
  try:
    data: dict[str, Any] = json.loads(text)
    return LockHolder(str(data["host"]), int(data["pid"]), str(data.get("started", "?")))
  except (ValueError, KeyError, TypeError):
    return LockHolder("?", -1, "?")


def _read_holder(fd: int) -> LockHolder | None:
  os.lseek(fd, 0, os.SEEK_SET)
  return _parse_holder(os.read(fd, 4096))


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


class _FileLock:
  """`WorkdirLock` of a local run directory: an `flock` on its lock file."""

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

def _busy(workdir: str, holder: str) -> WorkdirBusyError:
  return WorkdirBusyError(
      f"{workdir}: in use by another training run ({holder}); wait for it to end or "
      "stop it (SIGTERM saves a checkpoint), or choose another --workdir")


def _utc_now() -> float:
  return time.time()


class _ObjectLock:
  """Exclusive ownership of a `gs://` run directory (see the module
  docstring): a conditionally created lock object with a heartbeat."""

  def __init__(self, workdir: str):
    self.workdir = workdir.rstrip("/")
    self.path = f"{self.workdir}/{LOCK_FILE}"
    self._key = self.path[len("gs://"):]
    self._bucket, _, self._name = self._key.partition("/")
    self._fs = storage.gcs_filesystem()
    self._generation: str | None = None
    self._started = time.strftime("%Y-%m-%dT%H:%M:%S")
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.lost = False

  def _record(self) -> bytes:
    return (json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "started": self._started}) + "\n").encode()

  def _stat(self) -> dict[str, Any] | None:
    self._fs.invalidate_cache(self._key)
    try:
      return self._fs.info(self._key)
    except FileNotFoundError:
      return None

  def _read(self) -> LockHolder | None:
    try:
      return _parse_holder(self._fs.cat_file(self._key))
    except FileNotFoundError:
      return None

  def _write(self, if_generation: str) -> str:
    """Uploads this holder's record if the object's generation is
    `if_generation` ("0": absent); returns the new generation.
    FileExistsError (HTTP 412) when the precondition fails."""
    reply = self._fs.call(
        "POST", f"{self._fs._location}/upload/storage/v1/b/{self._bucket}/o",
        uploadType="media", name=self._name, ifGenerationMatch=if_generation,
        data=self._record(), headers={"Content-Type": "application/octet-stream"},
        json_out=True)
    self._fs.invalidate_cache(self._key)
    return str(reply["generation"])

  def acquire(self) -> None:
    for _ in range(3):
      info = self._stat()
      expected = "0"
      if info is not None:
        holder = self._read()
        age = _utc_now() - _parse_time(info.get("updated"))
        same_host = holder is not None and holder.host == socket.gethostname()
        dead_here = same_host and not _alive_here(holder) and holder.pid != os.getpid()
        if holder is not None and not dead_here and age < STALE_S:
          raise _busy(self.workdir, f"{holder.describe()}, its lock {self.path} refreshed "
                      f"{age:.0f} s ago; a lock not refreshed for {STALE_S:.0f} s is taken "
                      "over")
        if holder is not None:
          log.warning("%s: taking over the lock of a run that ended without releasing it "
                      "(%s; %s)", self.workdir, holder.describe(),
                      "that process is gone" if dead_here else f"not refreshed for {age:.0f} s")
        expected = str(info["generation"])
      try:
        generation = self._write(expected)
      except FileExistsError:
        continue  # another trainer changed the object first: look again
      self._generation = generation
      self._thread = threading.Thread(target=self._heartbeat, name="tp2p-lock-heartbeat",
                                      daemon=True)
      self._thread.start()
      return
    holder = self._read()
    raise _busy(self.workdir, holder.describe() if holder else "holder unknown")

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S) and self.refresh():
      pass

  def refresh(self) -> bool:
    """Rewrites the lock object if it is still this holder's; False (and
    `lost`) once another process has taken it over."""
    try:
      self._generation = self._write(self._generation or "0")
    except FileExistsError:
      self.lost = True
      log.error("%s: another process took over this run's lock (%s); this run stops before "
                "its next checkpoint", self.workdir, self.path)
      return False
    except Exception as e:  # pylint: disable=broad-except
      # Transient (gcsfs retried already): try again at the next beat.
      log.warning("%s: could not refresh the lock (%s)", self.workdir, e)
    return True

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._generation is None or self.lost:
      return
    try:
      self._fs.call("DELETE", "b/{}/o/{}", self._bucket, self._name,
                    ifGenerationMatch=self._generation)
    except FileExistsError:
      pass  # replaced by a taker: theirs now
    except Exception as e:  # pylint: disable=broad-except
      log.warning("%s: could not remove the lock object (%s); the next run takes it over "
                  "once it is %.0f s old", self.workdir, e, STALE_S)
    finally:
      self._fs.invalidate_cache(self._key)
      self._generation = None


def _parse_time(value: Any) -> float:
  import datetime
  if not value:
    return 0.0
  text = str(value).replace("Z", "+00:00")
  return datetime.datetime.fromisoformat(text).timestamp()


class WorkdirLock:
  """Exclusive ownership of `workdir` by this process (a context manager): a
  `flock` on a local run directory, a lock object on `gs://` (see the
  module docstring).

  Args:
    workdir: the run directory (created if missing).

  Raises (on enter):
    WorkdirBusyError: another live process holds it.
    OSError: the directory cannot be created or the lock file written.
  """

  def __init__(self, workdir: str):
    if storage.is_url(workdir):
      if not str(workdir).startswith("gs://"):
        raise OSError(f"{workdir}: training into this kind of URL is not supported "
                      "(a local folder or gs://)")
      self._impl: _FileLock | _ObjectLock = _ObjectLock(str(workdir))
    else:
      self._impl = _FileLock(workdir)
    self.path = self._impl.path

  def acquire(self) -> None:
    self._impl.acquire()

  def release(self) -> None:
    self._impl.release()

  @property
  def lost(self) -> bool:
    """Whether another process took the (object-store) lock over."""
    return bool(getattr(self._impl, "lost", False))

  def lost_now(self) -> bool:
    """`lost`, checked now: an object-store lock is refreshed on the spot
    (one request), so that a takeover since the last heartbeat counts.
    A local `flock` cannot be taken over: always False."""
    if isinstance(self._impl, _ObjectLock) and not self._impl.lost:
      self._impl.refresh()
    return self.lost

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
