"""`train_and_evaluate(config, workdir)`: trains (or resumes) the method that
`config.method` names, through the one loop (`tp2p_jax.core.loop`).

The method decides its stages (e.g. TransPix2Pix: the style encoder in
`<workdir>/style_encoder/`, then the GAN in `<workdir>/`); the loop owns
checkpoints, resume, logging, SIGTERM and NaN checks. `param_counts(config)`
gives the method's parameter counts without allocating anything.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time

import jax
import ml_collections

from tp2p_jax import methods
from tp2p_jax.methods import test_mode
from tp2p_jax.core import compile_effort, loop, mesh as mesh_lib, storage
from tp2p_jax.core.best_checkpoint import keep_best_problem
from tp2p_jax.core.run_dir import (RunError, check_workdir_usable, resolve_run_config,
                                   write_run_config)
from tp2p_jax.core.workdir_lock import WorkdirLock

log = logging.getLogger("tp2p_jax.train")


def param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Trainable parameters of each network of the config's method."""
  return methods.get(config.method).param_counts(config)


# Config fields every method reads, and the least each may be.
_AT_LEAST = {"batch_size": 1, "image_size": 1, "total_steps": 0, "log_every": 1,
             "checkpoint_every": 1, "keep_checkpoints": 1, "sample_every": 0,
             "num_samples": 0, "eval_every": 0, "eval_examples": 1}


def check_config(config: ml_collections.ConfigDict) -> None:
  """`RunError` naming the first of `config`'s common counts that is out of
  range (e.g. `--config.batch_size=0`), or validation fields that do not fit
  together (`keep_best`, `eval_inception_weights`), before anything is
  built. Configs from before a field existed pass."""
  for name, least in _AT_LEAST.items():
    if name in config and (not isinstance(config[name], int) or config[name] < least):
      raise RunError(f"--config.{name}={config[name]!r}: must be an integer >= {least}")
  mode = config.get("test_mode", "eval")
  if mode not in test_mode.TEST_MODES:
    raise RunError(f"--config.test_mode={mode!r}: choose from {', '.join(test_mode.TEST_MODES)}")
  eval_every = config.get("eval_every", 0)
  problem = keep_best_problem(config.get("keep_best", ""), eval_every)
  if problem is not None:
    raise RunError(problem)
  weights = config.get("eval_inception_weights", "")
  if weights and eval_every > 0:
    if not storage.path(weights).is_file():
      raise RunError(f"--config.eval_inception_weights={weights}: no such file")
    if config.get("eval_examples", 2) < 2:
      raise RunError(f"--config.eval_examples={config.eval_examples}: FID and KID "
                     "(eval_inception_weights) need at least 2")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> int:
  """Runs (or resumes) every stage of `config.method` in `workdir`. Returns
  the process exit status: 0 when finished or cleanly stopped by SIGTERM.

  Raises:
    loop.NonFiniteLossError: a loss or norm became NaN/inf.
    RunError: a config value out of range, an unusable `workdir`, or a
      config that differs from the run's in `workdir` (nothing written).
    WorkdirBusyError: another training process holds `workdir`.
    CheckpointError: a save failed (disk full) or no checkpoint restores.
  """
  method = methods.get(config.method)
  check_config(config)
  check_workdir_usable(workdir)
  if method.prepare_config is not None:
    config = method.prepare_config(config)
  config_dict, resuming = resolve_run_config(workdir, config)  # writes nothing
  mesh = mesh_lib.make_mesh()
  stages = method.stages(config)
  for stage in stages:  # every stage's batch, before the first one trains
    if stage.total_steps > 0:
      mesh_lib.check_batch_size(stage.batch_size, mesh)
  # The main process owns the run directory (other hosts share or mirror it).
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    write_config = functools.partial(write_run_config, workdir, config_dict)
    if not resuming:
      write_config()
    log.info("workdir %s; method %s; %d device(s) (%s); config in config.json", workdir,
             method.name, mesh.devices.size, jax.devices()[0].device_kind)
    t0 = time.time()
    # A resumed run's config.json changes only once a checkpoint of the new
    # config is being written: a resume that fails leaves it as it was.
    result = loop.run_stages(
        stages, workdir, mesh, config_dict,
        before_first_save=write_config if resuming else None,
        compiler_options=compile_effort.compiler_options(
            bool(config.get("fast_compile", False)), jax.default_backend()),
        # Only process 0 holds the lock; every process takes part in the vote.
        ownership_lost=lock.lost_now if isinstance(lock, WorkdirLock) else lambda: False)
  log.info("finished at step %d in %.0f s%s", result.step, time.time() - t0,
           " (stopped by SIGTERM)" if result.interrupted else "")
  return 0
