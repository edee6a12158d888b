"""One run on several JAX processes (hosts): joining the job, and what the
hosts must agree on while training (every host's input position in a
checkpoint, when to stop, whether a loss went non-finite).

With one process nothing here talks to anyone: the agreements return the
local answer at no cost.
"""
from __future__ import annotations

import logging
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from tp2p_jax.core import mesh as mesh_lib

log = logging.getLogger("tp2p_jax.train")


class DistributedStartError(RuntimeError):
  """This process could not join the multi-process job (one-line message)."""


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once `address` (HOST:PORT) accepts TCP connections.

  JAX aborts the whole process (no Python exception) when the coordinator
  stays unreachable, so the wait with a readable failure happens first.

  Raises:
    DistributedStartError: not reachable within `timeout_s` seconds.
  """
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedStartError(f"--coordinator_address={address!r}: expected HOST:PORT")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedStartError(
            f"cannot reach the coordinator at {address} within {timeout_s:g} s "
            f"({e.strerror or e}); start process 0 there first, or raise "
            "--initialization_timeout") from None
      time.sleep(0.5)


def initialize_distributed(*, auto_detect: bool, coordinator_address: str | None,
                           num_processes: int | None, process_id: int | None,
                           initialization_timeout: int) -> None:
  """Joins a multi-process JAX job, or does nothing for a one-process run.

  Args:
    auto_detect: let JAX find the job from its cluster (TPU pod, SLURM,
      Kubernetes, Open MPI); explicit values below take precedence.
    coordinator_address: HOST:PORT of process 0's coordinator service.
    num_processes: the job's number of processes.
    process_id: this process's index in [0, num_processes).
    initialization_timeout: seconds to wait for the coordinator and for
      every process to join.

  Raises:
    DistributedStartError: incomplete or invalid explicit values, or a
      coordinator that this process cannot reach in time.
  """
  explicit = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
              "--process_id": process_id}
  if not auto_detect:
    if all(v is None for v in explicit.values()):
      return
    missing = [name for name, v in explicit.items() if v is None]
    if missing:
      raise DistributedStartError(
          f"a multi-process start needs {', '.join(missing)} too (or --jax_distributed to "
          "detect the job from a TPU pod, SLURM or Kubernetes)")
  if num_processes is not None and num_processes < 1:
    raise DistributedStartError(f"--num_processes={num_processes}: must be >= 1")
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise DistributedStartError(
        f"--process_id={process_id}: must be in [0, {num_processes})")
  if initialization_timeout < 1:
    raise DistributedStartError(
        f"--initialization_timeout={initialization_timeout}: must be >= 1 second")
  if coordinator_address and process_id not in (None, 0):
    _wait_for_coordinator(coordinator_address, initialization_timeout)
  log.info("joining the job at %s as process %s of %s (waiting up to %d s for all)",
           coordinator_address or "(detected)", process_id, num_processes,
           initialization_timeout)
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout)
  except (ValueError, RuntimeError) as e:  # nothing detected, bad values, refused
    raise DistributedStartError(f"cannot join the multi-process job: {e}") from None


def all_process_texts(text: str) -> list[str]:
  """Every process's `text`, in process order (all processes must call it).

  One process: [text], without any communication.
  """
  if jax.process_count() == 1:
    return [text]
  data = np.frombuffer(text.encode("utf-8"), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
  sizes = sizes.reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [bytes(row[:size]).decode("utf-8") for row, size in zip(rows, sizes)]


class Agreement:
  """Yes/no questions all processes answer together over `mesh`: yes when
  any process says yes.

  `any_process(flag)` waits for the answer (for rare questions, e.g. a
  non-finite loss at a log step). `any_process_lagged(flag)` returns the
  answer to the previous call's question and leaves this one in flight, so
  asking every step does not make the host wait for the step's computation
  (e.g. a SIGTERM: all processes stop one step after the first notices).
  With one process both return the local answer at once (lagged too).
  """

  def __init__(self, mesh: Mesh):
    self._multi = jax.process_count() > 1
    self._pending: jax.Array | None = None
    if self._multi:
      self._sharding = mesh_lib.batch_sharding(mesh)
      self._local = len(mesh.local_devices)
      self._reduce = jax.jit(jnp.max, out_shardings=mesh_lib.replicated(mesh))

  def _ask(self, flag: bool) -> jax.Array:
    votes = jax.make_array_from_process_local_data(
        self._sharding, np.full((self._local,), int(flag), np.int32))
    return self._reduce(votes)

  def any_process(self, flag: bool) -> bool:
    if not self._multi:
      return flag
    return bool(self._ask(flag))

  def any_process_lagged(self, flag: bool) -> bool:
    if not self._multi:
      return flag
    previous, self._pending = self._pending, self._ask(flag)
    return previous is not None and bool(previous)
