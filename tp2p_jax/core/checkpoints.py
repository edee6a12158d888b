"""Checkpoints (orbax): the whole train state, the input iterator's position
and the config, under `<dir>/<step>/`. Saves are atomic (orbax writes to a
temporary directory and renames), so a run killed mid-save still has its
previous checkpoint."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores `(state, data_state, config)` at integer steps.

  Args:
    directory: where step directories live (created on first save).
    keep: number of most recent checkpoints kept.
  """

  def __init__(self, directory: str, keep: int):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            # Synchronous saves: a checkpoint reported as written is on disk,
            # whatever happens to the process next.
            enable_async_checkpointing=False),
        item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: str, config: dict[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"iterator": data_state}),
        config=ocp.args.JsonSave(config)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, str]:
    """Restores the state into the shapes, dtypes and shardings of
    `abstract_state` (e.g. `jax.eval_shape` output with `.sharding` set) and
    returns it with the saved iterator position."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]["iterator"]

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restore."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)
