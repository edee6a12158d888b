"""Data parallelism over a device mesh: one code path from one CPU to a
multi-host pod. The batch is sharded over the mesh's `data` axis, the train
state is replicated, and XLA inserts the gradient all-reduces. Joining a multi-process job is
`tp2p_jax.core.multihost`'s."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis `data` over all (or the given) devices."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_like(mesh: Mesh, abstract_tree: Any) -> Any:
  """Replicated shardings for every leaf of an abstract pytree (e.g. from
  `jax.eval_shape`)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda _: sharding, abstract_tree)


class BatchSizeError(ValueError):
  """A global batch that the mesh cannot split evenly."""


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """`BatchSizeError` unless `global_batch_size` splits evenly over `mesh`."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise BatchSizeError(f"batch_size {global_batch_size} is not divisible by the "
                     f"{n} devices of the mesh")


def to_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's share of the batch -> global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def jit_init(init_fn: Callable[..., Any], mesh: Mesh, *args: Any) -> tuple[Any, Any]:
  """(state, state shardings): `init_fn(*args)` compiled with its output
  replicated on `mesh`.

  A value the state holds twice (an EMA that starts equal to the
  parameters) leaves the compiled program once and is copied at run time
  (a buffer copy, nothing compiled): every output of a program is its own
  buffer, so XLA would otherwise emit a copy kernel per such leaf, which for
  a large model is a sizeable share of the program's compile time.
  """
  sharding = replicated(mesh)
  layout: dict[str, Any] = {}

  def distinct_leaves(*a: Any) -> list[jax.Array]:
    leaves, layout["treedef"] = jax.tree.flatten(init_fn(*a))
    first: dict[int, int] = {}
    layout["index"] = [first.setdefault(id(leaf), len(first)) for leaf in leaves]
    unique = {i: leaf for leaf, i in zip(leaves, layout["index"])}
    return [unique[i] for i in range(len(unique))]

  # The program keeps init's name (logs, profiles, the compilation cache).
  distinct_leaves.__name__ = getattr(init_fn, "__name__", "init")
  values = jax.jit(distinct_leaves, out_shardings=sharding)(*args)
  seen: set[int] = set()
  leaves = []
  for i in layout["index"]:
    leaves.append(values[i] if i not in seen
                  else jax.device_put(values[i], sharding, may_alias=False))
    seen.add(i)
  state = jax.tree.unflatten(layout["treedef"], leaves)
  return state, replicated_like(mesh, state)


def jit_train_step(step_fn: Callable[[Any, Any, Any], tuple[Any, Any]], mesh: Mesh,
                   state_shardings: Any, frozen: Any) -> Callable[..., tuple[Any, Any]]:
  """`step_fn(state, batch, frozen) -> (state, metrics)` jitted over `mesh`:
  the batch split on `data`, state, frozen inputs and metrics replicated,
  the state's buffers donated (the caller keeps only the returned state).

  Args:
    step_fn: a method's pure train step.
    mesh: the device mesh.
    state_shardings: shardings of the state (e.g. from `jit_init`).
    frozen: the frozen inputs (e.g. VGG16 variables) the step is called
      with, or None; only its tree structure is used here.
  """
  return jax.jit(step_fn,
                 in_shardings=(state_shardings, batch_sharding(mesh),
                               replicated_like(mesh, frozen)),
                 out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)
