"""Dynamic batching: requests that arrive together share one model call.

Requests are queued on the event loop; a collector task takes the first
waiting one, then gathers more until the batch is full or `timeout_s` has
passed since the first, and hands the batch to one model thread (calls
never overlap: the compiled program already uses every core). While a batch
runs, the next one queues up, so under load batches fill without waiting.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
from typing import Any, Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclasses.dataclass
class _Waiting(Generic[Item]):
  item: Item
  future: asyncio.Future[Any]


class DynamicBatcher(Generic[Item, Result]):
  """Gathers concurrent `submit` calls into batches for `run_batch`.

  Args:
    run_batch: maps a list of 1..max_batch_size items to their results, in
      order; runs on the model thread.
    max_batch_size: the most items per call (the compiled batch size).
    timeout_s: how long a batch that is not full waits for more items after
      its first arrived (0: take what is waiting).
    on_batch: called on the event loop with (items in the batch, seconds the
      call took) after each call; for metrics.
  """

  def __init__(self, run_batch: Callable[[list[Item]], Sequence[Result]],
               max_batch_size: int, timeout_s: float,
               on_batch: Callable[[int, float], None] | None = None) -> None:
    if max_batch_size < 1:
      raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if timeout_s < 0:
      raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
    self.run_batch = run_batch
    self.max_batch_size = max_batch_size
    self.timeout_s = timeout_s
    self.on_batch = on_batch
    self._waiting: collections.deque[_Waiting[Item]] = collections.deque()
    self._arrived: asyncio.Event | None = None
    self._task: asyncio.Task[None] | None = None
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None

  def start(self) -> None:
    """Starts the collector on the running event loop."""
    self._arrived = asyncio.Event()
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
    self._task = asyncio.get_running_loop().create_task(self._collect())

  async def stop(self) -> None:
    """Stops collecting; requests still waiting fail with CancelledError."""
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
    while self._waiting:
      self._waiting.popleft().future.cancel()
    if self._executor is not None:
      self._executor.shutdown(wait=True)

  async def submit(self, item: Item) -> Result:
    """Queues `item` and waits for its result (run_batch's exception, if it
    raised, is raised here for every item of the batch)."""
    if self._task is None or self._task.done():
      raise RuntimeError("the batcher is not running")
    future = asyncio.get_running_loop().create_future()
    self._waiting.append(_Waiting(item, future))
    self._arrived.set()
    return await future

  async def _wait_for_arrival(self, timeout: float | None) -> bool:
    """Waits until `submit` queues something (or `timeout` passes)."""
    self._arrived.clear()
    try:
      await asyncio.wait_for(self._arrived.wait(), timeout)
      return True
    except TimeoutError:
      return False

  async def _collect(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      while not self._waiting:
        await self._wait_for_arrival(None)
      deadline = loop.time() + self.timeout_s
      while len(self._waiting) < self.max_batch_size:
        remaining = deadline - loop.time()
        if remaining <= 0 or not await self._wait_for_arrival(remaining):
          break
      batch = [self._waiting.popleft()
               for _ in range(min(self.max_batch_size, len(self._waiting)))]
      # A client that went away while queued costs no model time.
      batch = [w for w in batch if not w.future.done()]
      if not batch:
        continue
      start = loop.time()
      try:
        results = await loop.run_in_executor(self._executor, self.run_batch,
                                             [w.item for w in batch])
      except Exception as e:  # pylint: disable=broad-except
        for w in batch:
          if not w.future.done():
            w.future.set_exception(e)
        continue
      if self.on_batch is not None:
        self.on_batch(len(batch), loop.time() - start)
      for w, result in zip(batch, results):
        if not w.future.done():
          w.future.set_result(result)
