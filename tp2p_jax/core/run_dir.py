"""A run directory's files other than metrics: `config.json` (the options
saved with every run) and restoring a state from `checkpoints/<step>/`.

Layout of a run directory (stages other than the last live in
subdirectories, e.g. `style_encoder/`, with the same layout):

  config.json            the resolved config, `method` naming its method
  checkpoints/<step>/    whole train state, input position, config
  best/<step>/           the best step by `keep_best`, in the same format
  metrics.jsonl          one JSON object per logged step
  tensorboard/           the same scalars
  samples/step_*.png     sample grids
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections

from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core import storage
from tp2p_jax.core.atomic_files import write_json_atomically
from tp2p_jax.core.best_checkpoint import BEST_DIR
from tp2p_jax.core.checkpoints import (Checkpointer, CheckpointError,
                                       CheckpointMismatchError, abstract_with_shardings)
from tp2p_jax.core.workdir_lock import try_lock

CONFIG_FILE = "config.json"

log = logging.getLogger("tp2p_jax.train")


class RunError(ValueError):
  """A run directory that cannot be used; the message names the path."""


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A JSON-safe dict of an ml_collections config."""
  return json.loads(config.to_json_best_effort())


# Fields a resumed run may change: when and how much to train, log and keep,
# where the (same) data lives, where a fresh start would take its weights
# from (`init_from`: used only before the first checkpoint), how hard XLA
# optimises the programs (`fast_compile`), what the backward pass
# recomputes (`remat`: the same function and parameters), and when and by
# what the EMA generator is validated and its best step kept (not on how
# many examples: earlier scores would not compare), and how the trained
# generator runs at test time (`test_mode`). Any other difference means
# another model or objective, which the checkpoints do not hold.
RESUMABLE_FIELDS = frozenset({"total_steps", "log_every", "checkpoint_every",
                              "keep_checkpoints", "sample_every", "num_samples",
                              "worker_count", "data_dir", "init_from", "fast_compile",
                              "remat", "eval_every", "eval_inception_weights", "keep_best",
                              "test_mode"})


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out: dict[str, Any] = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_differences(stored: dict[str, Any], new: dict[str, Any]
                       ) -> tuple[list[str], list[str]]:
  """Fields whose values differ between a run's stored config and a new one.

  Returns:
    (blocking, allowed): dotted names with "old -> new", those a resume
    cannot take and those it can (`RESUMABLE_FIELDS`). Fields only one side
    has are neither: configs gain and lose fields across versions, and the
    checkpoint itself is what decides whether it still fits.
  """
  old, cur = _flatten(stored), _flatten(new)
  blocking, allowed = [], []
  for name in sorted(set(old) & set(cur)):
    if old[name] != cur[name]:
      change = f"{name} {json.dumps(old[name])} -> {json.dumps(cur[name])}"
      (allowed if name.rsplit(".", 1)[-1] in RESUMABLE_FIELDS else blocking).append(change)
  return blocking, allowed


def has_checkpoints(workdir: str) -> bool:
  """Whether any stage of the run in `workdir` (a local folder or a gs://
  URL) has a finished checkpoint: in `workdir/checkpoints/` or, for the
  stages before the last, `workdir/<stage>/checkpoints/`. Only those folders
  are listed, not every file of the run (on an object store each listing
  is a request)."""
  root = storage.path(workdir)
  if not root.is_dir():
    return False
  stages = [root] + [c for c in root.iterdir() if c.name != "checkpoints" and c.is_dir()]
  for stage in stages:
    checkpoints = stage / "checkpoints"
    if checkpoints.is_dir() and any(c.name.isdigit() for c in checkpoints.iterdir()):
      return True
  return False


def check_workdir_usable(workdir: str) -> None:
  """`RunError` if `workdir` is a file, or cannot be created or written; for
  a gs:// URL, if its bucket does not exist or cannot be reached."""
  if storage.is_url(workdir):
    problem = storage.bucket_problem(str(workdir))
    if problem is not None:
      raise RunError(f"{workdir}: {problem} (--workdir)")
    if storage.path(workdir).is_file():
      raise RunError(f"{workdir}: exists and is not a directory (--workdir)")
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise RunError(f"{workdir}: exists and is not a directory (--workdir)")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise RunError(f"{workdir}: cannot be created, {existing} is a file (--workdir)")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise RunError(f"{workdir}: {existing} is not writable (--workdir)")


def resolve_run_config(workdir: str, config: ml_collections.ConfigDict
                       ) -> tuple[dict[str, Any], bool]:
  """The config dict to store for a run of `config` in `workdir`, checked
  against the run's stored `config.json`; writes nothing.

  A new run, or one without checkpoints yet, takes `config` as it is. A run
  with checkpoints is resumed only with the same config up to
  `RESUMABLE_FIELDS`; fields the stored config has and `config` lacks are
  kept (e.g. what `import_torch` recorded).

  Returns:
    (config dict, whether `workdir` holds checkpoints to resume).

  Raises:
    RunError: one line naming the fields that differ; or an unreadable
      stored config.
  """
  config_dict = config_to_dict(config)
  path = storage.join(workdir, CONFIG_FILE)
  if storage.path(path).exists() and has_checkpoints(workdir):
    try:
      stored = json.loads(storage.path(path).read_text())
    except (OSError, ValueError) as e:
      raise RunError(f"{path}: unreadable ({e}); it belongs to the checkpoints beside it, so "
                     "fix or restore it, or choose another --workdir") from None
    blocking, allowed = config_differences(stored, config_dict)
    if blocking:
      shown = "; ".join(blocking[:4]) + (f"; and {len(blocking) - 4} more"
                                         if len(blocking) > 4 else "")
      raise RunError(f"{workdir} holds a run with another config ({shown}): resume it "
                     "without those overrides, or choose another --workdir for a new run")
    if allowed:
      log.info("resuming with changed %s", "; ".join(allowed))
    config_dict = {**{k: v for k, v in stored.items() if k not in config_dict},
                   **config_dict}
    return config_dict, True
  return config_dict, False


def write_run_config(workdir: str, config_dict: dict[str, Any]) -> None:
  """Writes `<workdir>/config.json` atomically (main process only)."""
  if jax.process_index() == 0:
    storage.path(workdir).mkdir(parents=True, exist_ok=True)
    write_json_atomically(storage.join(workdir, CONFIG_FILE), config_dict)


def save_run_config(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`resolve_run_config`, then `write_run_config`; returns the dict."""
  config_dict, _ = resolve_run_config(workdir, config)
  write_run_config(workdir, config_dict)
  return config_dict


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config as written; `RunError` naming the file if it is
  missing or not JSON. (`tp2p_jax.methods.read_run_config` adds the
  `method` field of runs saved before methods were named.)"""
  path = storage.join(workdir, CONFIG_FILE)
  try:
    return ml_collections.ConfigDict(json.loads(storage.path(path).read_text()))
  except FileNotFoundError:
    raise RunError(f"{path}: not found; is {workdir!r} a run directory made by "
                   f"run_train.py?") from None
  except (OSError, json.JSONDecodeError) as e:
    raise RunError(f"{path}: unreadable config ({e})") from None


def imported_fresh(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Networks of a run imported from PyTorch checkpoints that were
  initialised from its config instead ("discriminator", "style_encoder",
  "generator_b", ...); () for runs trained here."""
  imported = config.get("imported")
  return tuple(imported.get("fresh", ())) if imported else ()


def restore_run_state(workdir: str, abstract: Any, step: int | str | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> tuple[Any, int]:
  """Restores `<workdir>/checkpoints/<step>` (default, or "latest": the
  newest that restores; "best": the one in `<workdir>/best/`, kept by
  `keep_best`) into the shapes and dtypes of `abstract` (e.g.
  `jax.eval_shape` of the run's init), replicated on `mesh` (default: the
  first device).

  A damaged newest checkpoint is skipped with a warning naming it and why;
  when no training run holds the directory, it is also moved aside
  (`<workdir>/checkpoints.damaged/`).

  Returns:
    (state, step).

  Raises:
    RunError: one line naming the path: no (such) checkpoint, none that
      restores, or checkpoints that do not fit `abstract` (the config); no
      best checkpoint for "best".
  """
  mesh = mesh or mesh_lib.make_mesh(jax.devices()[:1])
  best = step == "best"
  if best:
    directory = storage.join(workdir, BEST_DIR)
    if not any(p.name.isdigit() for p in storage.path(directory).glob("*")):
      raise RunError(f"{workdir}: no best checkpoint ({BEST_DIR}/ is kept only by runs "
                     "trained with keep_best): resume the run with --config.eval_every=N "
                     "--config.keep_best=eval/lpips to get one, or use --checkpoint=latest")
    step = None
  elif step == "latest":
    step = None
  elif step is not None and not isinstance(step, int):
    raise RunError(f"checkpoint {step!r}: expected 'best', 'latest' or a step number")
  ckpt = Checkpointer(storage.join(workdir, BEST_DIR if best else "checkpoints"), keep=10**9)
  try:
    restored = ckpt.restore_newest(
        abstract_with_shardings(abstract, mesh_lib.replicated_like(mesh, abstract)), step)
  except CheckpointError as e:
    _move_aside_unless_training(workdir, ckpt, e.skipped)
    raise RunError(str(e)) from None
  except CheckpointMismatchError as e:
    raise RunError(f"{e}: the checkpoint does not match {workdir}/{CONFIG_FILE}") from None
  else:
    if restored is not None:
      _move_aside_unless_training(workdir, ckpt, restored.skipped)
  finally:
    ckpt.close()
  if restored is None:
    raise RunError(f"{ckpt.directory}: no checkpoints yet")
  return restored.state, restored.step


def _move_aside_unless_training(workdir: str, ckpt: Checkpointer,
                                skipped: tuple[tuple[int, str], ...]) -> None:
  """Moves damaged checkpoints aside if no training run holds `workdir` (a
  trainer moves them itself when it resumes)."""
  if not skipped or (not storage.is_url(workdir) and not os.access(workdir, os.W_OK)):
    return
  owner = try_lock(workdir)
  if owner is None:
    return
  try:
    for step, reason in skipped:
      where = ckpt.move_aside(step, reason)
      if where:
        log.warning("moved the damaged checkpoint %s/%d to %s", ckpt.directory, step, where)
  finally:
    owner.release()
