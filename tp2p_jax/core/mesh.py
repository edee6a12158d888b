"""Data parallelism over a device mesh: one code path from one CPU to a
multi-host pod. The batch is sharded over the mesh's `data` axis, the train
state is replicated, and XLA inserts the gradient all-reduces. Joining a multi-process job is
`tp2p_jax.core.multihost`'s."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tp2p_jax.core.compile_effort import jit_options

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


@dataclasses.dataclass(frozen=True)
class InitProgram:
  """A state initialiser compiled for a mesh: `program(*args) -> state`,
  replicated on the mesh.

  A value the state holds twice (an EMA that starts equal to the
  parameters) leaves the compiled program once and is copied at run time
  (a buffer copy, nothing compiled): every output of a program is its own
  buffer, so XLA would otherwise emit a copy kernel per such leaf, which for
  a large model is a sizeable share of the program's compile time.

  Attributes:
    compiled: returns the state's distinct leaves.
    layout: the state's tree structure ("treedef"), for each of its leaves
      the index of its value among the compiled program's outputs
      ("index"), and those outputs' "shapes" and "dtypes".
    sharding: the state's (replicated) sharding.
  """
  compiled: jax.stages.Compiled
  layout: Mapping[str, Any]
  sharding: NamedSharding

  def __call__(self, *args: Any) -> Any:
    values = self.compiled(*args)
    seen: set[int] = set()
    leaves = []
    for i in self.layout["index"]:
      leaves.append(values[i] if i not in seen
                    else jax.device_put(values[i], self.sharding, may_alias=False))
      seen.add(i)
    return jax.tree.unflatten(self.layout["treedef"], leaves)


def _init_options(mesh: Mesh, compiler_options: Mapping[str, Any] | None) -> dict[str, Any]:
  """The init program's jit options."""
  return {"out_shardings": replicated(mesh), **jit_options(compiler_options)}


def _distinct_leaves_fn(init_fn: Callable[..., Any]
                        ) -> tuple[Callable[..., Any], dict[str, Any]]:
  """(`init_fn` returning the state's distinct leaves, the layout it records
  while traced)."""
  layout: dict[str, Any] = {}

  def distinct_leaves(*a: Any) -> list[jax.Array]:
    leaves, layout["treedef"] = jax.tree.flatten(init_fn(*a))
    first: dict[int, int] = {}
    layout["index"] = [first.setdefault(id(leaf), len(first)) for leaf in leaves]
    unique = {i: leaf for leaf, i in zip(leaves, layout["index"])}
    values = [unique[i] for i in range(len(unique))]
    layout["shapes"] = [tuple(v.shape) for v in values]
    layout["dtypes"] = [str(v.dtype) for v in values]
    return values

  # The program keeps init's name (logs, profiles, the compilation cache).
  distinct_leaves.__name__ = getattr(init_fn, "__name__", "init")
  return distinct_leaves, layout


def compile_init(init_fn: Callable[..., Any], mesh: Mesh, *args: Any,
                 compiler_options: Mapping[str, Any] | None = None) -> InitProgram:
  """`init_fn(*args)` compiled with its output replicated on `mesh`.
  `compiler_options`: XLA's, e.g. `compile_effort`'s."""
  fn, layout = _distinct_leaves_fn(init_fn)
  options = _init_options(mesh, compiler_options)
  compiled = jax.jit(fn, **options).lower(*args).compile()
  return InitProgram(compiled, layout, options["out_shardings"])


def jit_init(init_fn: Callable[..., Any], mesh: Mesh, *args: Any,
             compiler_options: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
  """(state, state shardings): `init_fn(*args)` compiled (see `compile_init`)
  and run, its output replicated on `mesh`."""
  program = compile_init(init_fn, mesh, *args, compiler_options=compiler_options)
  state = program(*args)
  return state, replicated_like(mesh, state)


def jit_train_step(step_fn: Callable[[Any, Any, Any], tuple[Any, Any]], mesh: Mesh,
                   state_shardings: Any, frozen: Any,
                   compiler_options: Mapping[str, Any] | None = None
                   ) -> Callable[..., tuple[Any, Any]]:
  """`step_fn(state, batch, frozen) -> (state, metrics)` jitted over `mesh`:
  the batch split on `data`, state, frozen inputs and metrics replicated,
  the state's buffers donated (the caller keeps only the returned state).

  Args:
    step_fn: a method's pure train step.
    mesh: the device mesh.
    state_shardings: shardings of the state (e.g. from `jit_init`).
    frozen: the frozen inputs (e.g. VGG16 variables) the step is called
      with, or None; only its tree structure is used here.
    compiler_options: XLA's compile options (e.g. `compile_effort`'s), or
      None for its defaults.
  """
  options = dict(in_shardings=(state_shardings, batch_sharding(mesh),
                               replicated_like(mesh, frozen)),
                 out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0,
                 **jit_options(compiler_options))
  return jax.jit(step_fn, **options)
