"""Batch inference on the whole machine: every batch split over all of this
process's devices (a data-parallel mesh, as in training: weights
replicated, the batch sharded on its leading axis), input decoding in a
background thread and output encoding and writing in a small thread pool,
so that files and devices work at the same time.

Memory stays bounded whatever the number of inputs: the decoder runs at
most `depth` items ahead of the devices, and the writer holds at most
`max_pending` outputs not yet written.

In a multi-process job each process drives only its own devices (no
collectives: inference of one image needs no other), on its own share of
the inputs (`process_share`).
"""
from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import jax
from jax.sharding import Mesh
import numpy as np

from tp2p_jax.core import mesh as mesh_lib

T = TypeVar("T")


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D `data` mesh over this process's devices (default: all of them)."""
  return mesh_lib.make_mesh(jax.local_devices() if devices is None else devices)


def global_batch_size(batch_size: int, mesh: Mesh) -> int:
  """`batch_size` rounded up to a multiple of the mesh's device count (each
  device gets the same number of rows)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = mesh.devices.size
  return -(-batch_size // n) * n


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every array leaf of `tree` replicated on `mesh` (weights)."""
  return jax.device_put(tree, mesh_lib.replicated(mesh))


def process_share(items: Sequence[T], index: int | None = None, count: int | None = None
                  ) -> list[T]:
  """Process `index`'s share of `items` in a job of `count` processes
  (default: this process's): the items at positions index, index + count,
  index + 2 * count, ... (interleaved, so that sorted inputs of growing
  size spread evenly)."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  return list(items[index::count])


_DONE = object()


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
  """`items`, produced by a background thread that runs at most `depth`
  items ahead of the consumer. An exception in the producer is raised in
  the consumer at the point where it happened; a consumer that stops early
  (or fails) stops the producer at its next item.
  """
  if depth < 1:
    raise ValueError(f"depth must be >= 1, got {depth}")
  slots: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def put(value: Any) -> bool:
    while not stop.is_set():
      try:
        slots.put(value, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce() -> None:
    try:
      for item in items:
        if not put(item):
          return
      put(_DONE)
    except BaseException as e:  # pylint: disable=broad-except
      put(_Failure(e))

  worker = threading.Thread(target=produce, name="inference-prefetch", daemon=True)
  worker.start()
  try:
    while True:
      value = slots.get()
      if value is _DONE:
        return
      if isinstance(value, _Failure):
        raise value.error
      yield value
  finally:
    stop.set()
    worker.join()


class BoundedWriter:
  """A small thread pool for output work (encoding, writing) that holds at
  most `max_pending` unfinished jobs: `submit` waits for the oldest first.
  The first job to fail raises its exception from `submit` or `finish`; the
  jobs already started still complete.

  Use as a context manager; leaving the block without an error waits for
  every job (`finish`).
  """

  def __init__(self, workers: int = 2, max_pending: int = 16):
    if workers < 1 or max_pending < 1:
      raise ValueError(f"workers ({workers}) and max_pending ({max_pending}) must be >= 1")
    self._pool = concurrent.futures.ThreadPoolExecutor(workers,
                                                       thread_name_prefix="inference-write")
    self._pending: collections.deque[concurrent.futures.Future] = collections.deque()
    self._max_pending = max_pending

  def submit(self, fn: Callable[..., Any], *args: Any) -> None:
    while len(self._pending) >= self._max_pending:
      self._pending.popleft().result()
    self._pending.append(self._pool.submit(fn, *args))

  def finish(self) -> None:
    """Waits for every submitted job; raises the first failure."""
    while self._pending:
      self._pending.popleft().result()

  def __enter__(self) -> BoundedWriter:
    return self

  def __exit__(self, exc_type: Any, *_: Any) -> None:
    try:
      if exc_type is None:
        self.finish()
    finally:
      for future in self._pending:
        future.cancel()
      self._pool.shutdown(wait=True)


def across_processes(compute: Callable[[list[np.ndarray]], np.ndarray],
                     arrays: Sequence[np.ndarray]) -> np.ndarray:
  """`compute(arrays)` with its rows split over the job's processes: process
  `i` of `N` computes the `i`-th contiguous slice of ceil(rows / N) rows on
  its own devices, and every process gets the whole (rows, ...) result back
  (one all-gather). With one process: `compute(arrays)`.

  Every process must call it with the same `arrays` (e.g. the held-out
  pairs, which each process loads identically), in the same order.
  `compute` maps (k, ...) row slices to (k, ...) results, k >= 1.
  """
  count, index = jax.process_count(), jax.process_index()
  if count == 1:
    return compute(list(arrays))
  from jax.experimental import multihost_utils
  n = len(arrays[0])
  per = -(-n // count)
  bounds = [(min(i * per, n), min((i + 1) * per, n)) for i in range(count)]
  lo, hi = bounds[index]
  # An empty share still computes one row, so that every process's piece of
  # the all-gather has the same shape.
  local = compute([a[lo:hi] if hi > lo else a[-1:] for a in arrays])
  padded = np.concatenate([local, np.repeat(local[-1:], per - len(local), axis=0)])
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # (count, per, ...)
  return np.concatenate([gathered[i][:b - a] for i, (a, b) in enumerate(bounds)])
