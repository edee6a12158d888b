"""Starting a run's generator partly from another run: pix2pixHD's staged
training, where the local-enhancer run (stage 2) takes the global generator
G1 trained by a `pix2pixhd.py:global` run (stage 1), as the release's
`--load_pretrain`.

`init_from_run(state, run_dir, mesh, state_shapes)` restores the source
run's latest checkpoint (its shapes from the source's own `config.json`
through `state_shapes`) and copies one
top-level generator subtree (default `global`) into a freshly initialised
`TrainState`, each copy from its counterpart:

- `g_params` / `g_batch_stats` (what the optimiser trains, and what the
  stage-2 freeze holds fixed) <- the source's trained G1, as the release
  loads the trained netG;
- `ema["g"]` <- the source's EMA G1, so the averaged generator continues the
  stage-1 average. pix2pixHD keeps no average (`ema_decay = 0`), so both
  copies are the same weights there.

Only leaves the target has are taken: G1 standing alone ends in an output
conv (`head`) that G1 inside an enhancer does not have, and that conv is
dropped, as in the release. The trainer applies this only when a run starts
from scratch, never on resume (the checkpoint already holds the state).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import jax
from jax.sharding import Mesh

import ml_collections

from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core import storage
from tp2p_jax.core.run_dir import RunError, read_run_config, restore_run_state
from tp2p_jax.methods.paired_gan_step import TrainState

StateShapes = Callable[[ml_collections.ConfigDict], TrainState]

log = logging.getLogger("tp2p_jax.train")


def restore_latest_state(run_dir: str, mesh: Mesh, state_shapes: StateShapes
                         ) -> tuple[TrainState, int]:
  """The GAN `TrainState` of a run's latest checkpoint, replicated on `mesh`.

  Args:
    run_dir: a run directory written by `run_train.py` (config.json and
      checkpoints/).
    mesh: where the restored arrays live (replicated).
    state_shapes: the abstract `TrainState` of a config (e.g.
      `tp2p_jax.methods.paired_gan.state_shapes`).

  Returns:
    (state, step).

  Raises:
    RunError: naming the path, if the directory, its config or its
      checkpoints are missing or the checkpoint does not fit the config.
  """
  run_dir = storage.text(run_dir)
  if not storage.path(run_dir).is_dir():
    raise RunError(f"{run_dir}: no such run directory")
  config = read_run_config(run_dir)
  return restore_run_state(run_dir, state_shapes(config), mesh=mesh)


def _take_matching(target: Any, source: Any, what: str, where: str) -> Any:
  """`target`'s tree structure filled with `source`'s leaves at the same
  paths; `RunError` if one is missing or differs in shape or dtype."""
  leaves = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(source)}

  def pick(path, t):
    key = jax.tree_util.keystr(path)
    if key not in leaves:
      raise RunError(f"{where}: {what}{key} is missing (the source generator is built "
                     f"differently)")
    s = leaves[key]
    if s.shape != t.shape or s.dtype != t.dtype:
      raise RunError(f"{where}: {what}{key} has shape {tuple(s.shape)} {s.dtype}, this run "
                     f"needs {tuple(t.shape)} {t.dtype}; the generators' settings differ")
    return s

  return jax.tree_util.tree_map_with_path(pick, target)


def graft_generator_subtree(state: TrainState, source: TrainState, subtree: str,
                            where: str) -> TrainState:
  """`state` with the generator subtree `subtree` of its trained variables
  and of its EMA copy replaced by `source`'s (trained <- trained, EMA <-
  EMA). Optimiser states stay as initialised (the release builds a fresh
  optimiser too).

  Args:
    state: the new run's initial state.
    source: the source run's restored state.
    subtree: top-level key of the generator's variables, e.g. "global".
    where: the source checkpoint's path, for error messages.

  Raises:
    RunError: this run's generator has no `subtree`, the source lacks one
      of its collections, or shapes differ.
  """
  if subtree not in state.g_params:
    raise RunError(f"this run's generator has no {subtree!r} subtree to start from {where} "
                   f"(its top-level parameters: {sorted(state.g_params)})")
  pairs = {
      "g_params": (state.g_params, source.g_params),
      "g_batch_stats": (state.g_batch_stats, source.g_batch_stats),
      "ema.g.params": (state.ema["g"]["params"], source.ema["g"]["params"]),
      "ema.g.batch_stats": (state.ema["g"]["batch_stats"], source.ema["g"]["batch_stats"]),
  }
  new = {}
  for name, (target_tree, source_tree) in pairs.items():
    if subtree not in target_tree:  # e.g. no batch_stats under instance norm
      new[name] = target_tree
      continue
    if subtree not in source_tree:
      raise RunError(f"{where}: {name} has no {subtree!r} subtree (top-level keys: "
                     f"{sorted(source_tree)})")
    taken = _take_matching(target_tree[subtree], source_tree[subtree],
                           f"{name}[{subtree!r}]", where)
    new[name] = {**target_tree, subtree: taken}
  ema = {**state.ema, "g": {"params": new["ema.g.params"],
                            "batch_stats": new["ema.g.batch_stats"]}}
  return state.replace(g_params=new["g_params"], g_batch_stats=new["g_batch_stats"], ema=ema)


def init_from_run(state: TrainState, run_dir: str, mesh: Mesh, state_shapes: StateShapes,
                  subtree: str = "global") -> TrainState:
  """A fresh `state` whose generator subtree comes from `run_dir`'s latest
  checkpoint (see the module docstring), replicated on `mesh`.

  Raises:
    RunError: naming the path, if the run, its checkpoint or the subtree is
      missing or shapes differ.
  """
  source, step = restore_latest_state(run_dir, mesh, state_shapes)
  where = storage.join(run_dir, "checkpoints", str(step))
  grafted = graft_generator_subtree(state, source, subtree, where)
  log.info("generator subtree %r taken from %s", subtree, where)
  return jax.device_put(grafted, mesh_lib.replicated_like(mesh, grafted))
