"""Checkpoints (orbax): the whole train state, the input iterator's position
and the config, under `<dir>/<step>/`.

What can go wrong, and what happens:
- A process killed mid-save leaves a `<step>.orbax-checkpoint-tmp-*` folder
  and no `<step>/` (orbax writes to a temporary folder and renames it); the
  next writer removes such folders when it opens the directory.
- A save that fails (disk full, permissions) removes its partial files and
  raises `CheckpointSaveError` naming the directory and its free space; the
  earlier checkpoints stay.
- A damaged checkpoint (a truncated or missing file) is skipped by
  `restore_newest`, which falls back to the next newest one that restores;
  the skipped one is moved aside to `<dir>.damaged/<step>/` (with a
  `REASON.txt`), never deleted, when the caller owns the run directory.
- A checkpoint whose shapes or tree differ from the state asked for is not
  damaged: the run's config differs. `CheckpointMismatchError`, at once.
- A reader that restores part of the state (`keep_only`: a predictor reads
  the EMA generator) reads only those arrays; damage elsewhere in the
  checkpoint shows at the next full restore (the trainer's resume).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import sys
import time
from typing import Any, Iterator

from etils import epath
import jax
import orbax.checkpoint as ocp

from tp2p_jax.core import storage

log = logging.getLogger("tp2p_jax.train")

DAMAGED_SUFFIX = ".damaged"

# A leaf of an abstract state that `Checkpointer.restore` leaves unread (and
# returns as is): readers that need a part of the state (a predictor: the EMA
# generator) skip the rest. See `keep_only`.
SKIP = ocp.PLACEHOLDER


class CheckpointError(RuntimeError):
  """A checkpoint directory that cannot serve; the message is one line naming
  it. `skipped`: (step, reason) of the damaged checkpoints found."""

  def __init__(self, message: str, skipped: tuple[tuple[int, str], ...] = ()):
    super().__init__(message)
    self.skipped = skipped


class CheckpointSaveError(CheckpointError):
  """A save failed; its partial files were removed, earlier checkpoints kept."""


class CheckpointMismatchError(ValueError):
  """A checkpoint holds a differently built state (another config)."""


@dataclasses.dataclass(frozen=True)
class Restored:
  """A restored checkpoint.

  Attributes:
    state: the state, in the asked-for shapes and shardings.
    data_state: the saved input iterator position (JSON text).
    step: the checkpoint's step.
    skipped: (step, reason) of each newer checkpoint that was damaged.
  """
  state: Any
  data_state: str
  step: int
  skipped: tuple[tuple[int, str], ...]


def _one_line(error: BaseException, limit: int = 200) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
  """A tree path as plain names: orbax's metadata tree has dicts and lists
  where the state has dataclass fields and named tuples."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _leaf_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  return {_path_names(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)
          if hasattr(v, "shape") and hasattr(v, "dtype")}


def _skipped_paths(tree: Any) -> set[tuple[str, ...]]:
  return {_path_names(p) for p, v in jax.tree_util.tree_leaves_with_path(tree) if v is SKIP}


def keep_only(abstract_state: Any, *subtrees: tuple[str, ...]) -> Any:
  """`abstract_state` with every leaf outside `subtrees` replaced by `SKIP`,
  so that a restore reads only those subtrees (e.g. `("ema", "g")`: the
  field `ema`, its key `g`). The tree keeps its structure, so a checkpoint
  of another config is still refused as a whole."""
  def pick(path: tuple[Any, ...], leaf: Any) -> Any:
    names = _path_names(path)
    return leaf if any(names[:len(p)] == tuple(p) for p in subtrees) else SKIP
  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def free_space(directory: str) -> str:
  """Free space on `directory`'s filesystem (or its nearest existing
  parent), e.g. "12.5 MiB free"; object stores have no such figure."""
  if storage.is_url(directory):
    return "free space not applicable (object store)"
  path = os.path.abspath(directory)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    free = shutil.disk_usage(path).free
  except OSError:
    return "free space unknown"
  return f"{free / 2**20:.1f} MiB free"


@contextlib.contextmanager
def _quiet_abandoned_reads() -> Iterator[None]:
  """A failed restore abandons orbax's other pending reads; when they are
  collected Python and asyncio would print each, traceback and all, on
  stderr. Inside the block (and its collection) they go to the debug log."""
  previous = sys.unraisablehook

  def hook(unraisable: Any) -> None:
    log.debug("abandoned checkpoint read: %s", unraisable.exc_value)

  def drop_abandoned(record: logging.LogRecord) -> bool:
    return "exception was never retrieved" not in record.getMessage()

  sys.unraisablehook = hook
  asyncio_log = logging.getLogger("asyncio")  # reports never-awaited failures at ERROR
  asyncio_log.addFilter(drop_abandoned)
  try:
    yield
  finally:
    gc.collect()
    asyncio_log.removeFilter(drop_abandoned)
    sys.unraisablehook = previous


class Checkpointer:
  """Saves and restores `(state, data_state, config)` at integer steps.

  Args:
    directory: where step directories live.
    keep: number of most recent checkpoints kept (writers).
    writer: this process trains into `directory` (and holds its run
      directory's lock): creates it and removes temporary folders of killed
      saves. Readers never touch a directory a trainer may be writing.
    best: (metric, "min" | "max"): the `keep` checkpoints kept are the best
      by `metrics[metric]` (given to `save`, stored in each step's folder
      with it) instead of the newest.
  """

  def __init__(self, directory: str, keep: int, writer: bool = False,
               best: tuple[str, str] | None = None):
    self.directory = storage.text(directory)
    metric, mode = best if best else (None, "max")
    # A step saved without this metric (judged by another) ranks last.
    worst = float("inf") if mode == "min" else float("-inf")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=writer, cleanup_tmp_directories=writer,
            best_fn=(lambda m: m.get(metric, worst)) if best else None, best_mode=mode,
            # Synchronous saves: a checkpoint reported as written is on disk,
            # whatever happens to the process next.
            enable_async_checkpointing=False),
        item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def metrics(self, step: int) -> dict[str, float] | None:
    """The metrics saved with checkpoint `step` (a `best` checkpointer's),
    or None."""
    return self._manager.metrics(step)

  def save(self, step: int, state: Any, data_state: str, config: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    """Writes checkpoint `step` (replacing one of the same step), with
    `metrics` (a `best` checkpointer's; stored in the step's folder, so they
    are written or lost with it).

    Raises:
      CheckpointSaveError: the save failed; no partial files are left.
    """
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(host_copy(state)),
          data=ocp.args.JsonSave({"iterator": data_state}),
          config=ocp.args.JsonSave(config)), metrics=metrics, force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # orbax and tensorstore wrap OSErrors in their own types
      self._remove_partial(step)
      kept = [s for s in self._finalized_steps() if s != step]
      raise CheckpointSaveError(
          f"{self.directory}: saving checkpoint {step} failed ({_one_line(e)}); "
          f"{free_space(self.directory)} there; its partial files were removed; "
          f"{'checkpoints ' + str(kept) + ' are intact' if kept else 'no earlier checkpoint'}"
      ) from e

  def _finalized_steps(self) -> list[int]:
    root = storage.path(self.directory)
    return sorted(int(p.name) for p in root.iterdir()
                  if p.name.isdigit()) if root.is_dir() else []

  def _remove_partial(self, step: int) -> None:
    root = storage.path(self.directory)
    if not root.is_dir():
      return
    for tmp in root.glob(f"{step}.orbax-checkpoint-tmp*"):
      with contextlib.suppress(OSError):
        tmp.rmtree()
    final = root / str(step)
    # On an object store orbax writes straight into <step>/ and marks it
    # complete with commit_success.txt; locally it renames a finished
    # temporary folder, which holds _CHECKPOINT_METADATA.
    if final.is_dir() and not (final / "commit_success.txt").exists() \
        and not (final / "_CHECKPOINT_METADATA").exists():
      with contextlib.suppress(OSError):
        final.rmtree()

  def check_fits(self, step: int, abstract_state: Any) -> str | None:
    """Compares checkpoint `step`'s stored tree with `abstract_state`.

    Returns:
      None if it fits or its metadata cannot be read (the restore decides),
      else why not (the paths or shapes that differ).
    """
    try:
      stored = ocp.StandardCheckpointHandler().metadata(
          epath.Path(self.directory) / str(step) / "state")
    except Exception:  # damaged metadata: the restore will tell
      return None
    stored_leaves = _leaf_shapes(getattr(stored, "tree", stored))
    if not stored_leaves:
      return None
    wanted = _leaf_shapes(abstract_state)
    skipped = _skipped_paths(abstract_state)  # must exist; their shapes are not read
    missing = sorted((set(wanted) | skipped) - set(stored_leaves))
    extra = sorted(set(stored_leaves) - set(wanted) - skipped)
    if missing or extra:
      def names(paths): return ", ".join("/".join(p) for p in paths[:3]) + (
          f" and {len(paths) - 3} more" if len(paths) > 3 else "")
      return ("variables differ" + (f"; not in the checkpoint: {names(missing)}" if missing
                                    else "") + (f"; only in the checkpoint: {names(extra)}"
                                                if extra else ""))
    for path, shape in sorted(wanted.items()):
      if stored_leaves[path] != shape:
        return (f"{'/'.join(path)} has shape {stored_leaves[path]} in the checkpoint, "
                f"{shape} in this config")
    return None

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, str]:
    """Restores checkpoint `step` into the shapes, dtypes and shardings of
    `abstract_state` (e.g. `jax.eval_shape` output with `.sharding` set) and
    returns it with the saved iterator position. Leaves that are `SKIP` are
    not read and stay `SKIP`. Errors are orbax's."""
    if not _skipped_paths(abstract_state):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore()))
      return restored["state"], restored["data"]["iterator"]
    # The standard handler takes whole trees only; it writes the PyTree
    # handler's format, which restores any subset of leaves.
    restore_args = jax.tree.map(
        lambda a: a if a is SKIP else ocp.ArrayRestoreArgs(
            sharding=a.sharding, global_shape=a.shape, dtype=a.dtype), abstract_state)
    handler = ocp.PyTreeCheckpointHandler()
    try:
      state = handler.restore(epath.Path(self.directory) / str(step) / "state",
                              args=ocp.args.PyTreeRestore(item=abstract_state,
                                                          restore_args=restore_args))
    finally:
      handler.close()
    data = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    return state, data["data"]["iterator"]

  def restore_newest(self, abstract_state: Any, step: int | None = None, *,
                     move_aside: bool = False) -> Restored | None:
    """The newest checkpoint that restores (or exactly `step`).

    Damaged checkpoints are skipped with a warning (and moved to
    `<directory>.damaged/` when `move_aside`, by the main process).

    Returns:
      The restored checkpoint, or None if the directory holds none.

    Raises:
      CheckpointMismatchError: a checkpoint's variables differ from
        `abstract_state` (the config differs from the run's).
      CheckpointError: checkpoints exist but none restores (or `step` is
        missing or damaged).
    """
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"{self.directory}: no checkpoint at step {step}; available: "
                              f"{steps}")
      steps = [step]
    skipped: list[tuple[int, str]] = []
    for candidate in reversed(steps):
      mismatch = self.check_fits(candidate, abstract_state)
      if mismatch is not None:
        raise CheckpointMismatchError(f"{self.directory}/{candidate}: {mismatch}")
      try:
        with _quiet_abandoned_reads():
          state, data_state = self.restore(candidate, abstract_state)
      except Exception as e:  # any failure to read files: damaged
        reason = _one_line(e)
        skipped.append((candidate, reason))
        where = self.move_aside(candidate, reason) if move_aside else None
        log.warning("checkpoint %s/%d is damaged (%s); %s", self.directory, candidate, reason,
                    f"moved it to {where}" if where else "skipping it")
        continue
      if skipped:
        log.warning("restored %s/%d instead", self.directory, candidate)
      return Restored(state, data_state, candidate, tuple(skipped))
    if not steps:
      return None
    raise CheckpointError(
        f"{self.directory}: no checkpoint restores (damaged: "
        + "; ".join(f"{s}: {r}" for s, r in skipped) + ")"
        + (f"; they were moved to {self.directory}{DAMAGED_SUFFIX}/, so rerunning starts "
           "this stage afresh" if move_aside else ""), tuple(skipped))

  def move_aside(self, step: int, reason: str) -> str | None:
    """Moves `<directory>/<step>` to `<directory>.damaged/<step>[-<time>]`
    with a REASON.txt; None if another process should (or did)."""
    if jax.process_index() != 0:
      return None
    source = storage.join(self.directory, str(step))
    target_dir = self.directory + DAMAGED_SUFFIX
    target = storage.join(target_dir, str(step))
    if storage.path(target).exists():
      target += time.strftime("-%Y%m%dT%H%M%S")
    try:
      storage.move_tree(source, target)  # creates target_dir
      storage.path(target).joinpath("REASON.txt").write_text(
          f"moved aside {time.strftime('%Y-%m-%dT%H:%M:%S')}: {reason}\n")
    except OSError as e:
      log.warning("could not move %s aside (%s)", source, e)
      return None
    self._manager.reload()
    return target

  def close(self) -> None:
    self._manager.close()


def host_copy(tree: Any) -> Any:
  """`tree` with every fully replicated jax.Array replaced by a numpy copy,
  fetched in one batched transfer; other leaves unchanged.

  Orbax writes a jax.Array leaf by leaf through its replica slices and
  device transfers, about 2.5 ms per leaf on CPU; replicated numpy arrays
  take its plain path (written once, by process 0), which saved the tiny
  TransPix2Pix state (973 leaves) in 1.3 s instead of 3.0 s. The files are
  the same format: `restore` still returns jax.Arrays in the target's
  shardings. Sharded leaves (not fully replicated) stay jax.Arrays, so each
  process writes its own shards."""
  leaves, treedef = jax.tree.flatten(tree)
  replicated = [i for i, x in enumerate(leaves)
                if isinstance(x, jax.Array) and x.is_fully_replicated]
  fetched = jax.device_get([leaves[i] for i in replicated])
  for i, value in zip(replicated, fetched):
    leaves[i] = value
  return jax.tree.unflatten(treedef, leaves)


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (and the leaves' weak
  types), for restore or for compiling before the state exists (`SKIP`
  leaves stay `SKIP`)."""
  return jax.tree.map(
      lambda a, s: a if a is SKIP else jax.ShapeDtypeStruct(
          a.shape, a.dtype, sharding=s, weak_type=bool(getattr(a, "weak_type", False))),
      abstract_tree, shardings)
