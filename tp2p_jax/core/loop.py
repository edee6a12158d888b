"""The training loop every method runs through: `run_stages(stages, workdir,
mesh, config_dict)` trains a method's stages in order, each in its own run
directory, handing each stage's result to the next.

Each stage resumes from its latest checkpoint and a finished stage is
skipped, so rerunning the same command continues the run exactly: the state,
the RNG (per-step keys are `fold_in(rng, step)`) and the input iterator's
position are all in the checkpoint (every process's position, on several
processes). SIGTERM saves a checkpoint and returns cleanly; on several
processes a SIGTERM to any of them stops all of them at the same step (the
step after the one that noticed). A non-finite loss or norm (checked at every
log step and before every save, and agreed by all processes) raises
`NonFiniteLossError`; the last good checkpoint stays. A damaged checkpoint is moved aside and the newest one
that restores resumes the run (`tp2p_jax.core.checkpoints`). A stage with
`validate` scores held-out examples every `eval_every` steps and at the
last (metrics `eval/...`); with `keep_best` the best step so far is kept
under `best/` (`tp2p_jax.core.best_checkpoint`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from tqdm import tqdm

from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core import compile_effort, multihost, run_log
from tp2p_jax.core.best_checkpoint import BestCheckpoint
from tp2p_jax.core.checkpoints import (Checkpointer, CheckpointMismatchError,
                                       abstract_with_shardings)
from tp2p_jax.core.run_dir import RunError
from tp2p_jax.core.stage import Jit, Stage
from tp2p_jax.core.workdir_lock import WorkdirBusyError
from tp2p_jax.data import pipeline
from tp2p_jax.data.image_files import save_png

log = logging.getLogger("tp2p_jax.train")


class NonFiniteLossError(RuntimeError):
  """Raised when a logged loss or norm is NaN/inf; the run stops without
  saving, so the latest checkpoint is the last good state."""


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int
  interrupted: bool  # stopped early by SIGTERM (a checkpoint was saved)


class _StopFlag:
  """SIGTERM -> finish the current step, checkpoint, return."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _check_finite(stage: str, step: int, metrics: dict[str, float], ckpt: Checkpointer,
                  agreement: multihost.Agreement) -> None:
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  # Every process stops, or none: a process that carried on alone would
  # wait forever in the next step's collectives.
  if agreement.any_process(bool(bad)):
    what = str(bad) if bad else "on another process"
    last = ckpt.latest_step()
    where = (f"the last good checkpoint is step {last} in {ckpt.directory}; lower the learning "
             "rate or check the data, then rerun the same command to resume from it"
             if last is not None else
             "no checkpoint was written yet, so a rerun starts this stage afresh; lower the "
             "learning rate or check the data first")
    raise NonFiniteLossError(
        f"{stage}: non-finite values at step {step}: {what}. Stopped without saving; {where}.")


def stage_jit(compiler_options: Mapping[str, Any] | None = None) -> Jit:
  """The `Jit` a stage's `samples` and `finish` get: `jax.jit` with
  `compiler_options` (XLA's), each program made once per name."""
  made: dict[str, Callable[..., Any]] = {}
  options = compile_effort.jit_options(compiler_options)

  def jit(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name not in made:
      made[name] = jax.jit(fn, **options)
    return made[name]
  return jit


def train_loop(stage: Stage, workdir: str, mesh: jax.sharding.Mesh, handoff: Any,
               config_dict: dict[str, Any],
               before_first_save: Callable[[], None] | None = None,
               compiler_options: Mapping[str, Any] | None = None,
               ownership_lost: Callable[[], bool] | None = None) -> LoopResult:
  """Runs (or resumes) one stage in `workdir`.

  Restores `<workdir>/checkpoints/<latest>` (state and iterator position) or
  initialises with `stage.init(PRNGKey(stage.seed), handoff)`, then runs
  `stage.train_step(state, batch, stage.frozen)` jitted over the mesh (batch
  sharded on `data`, state and frozen inputs replicated, state buffers
  donated) up to `stage.total_steps`, logging, checkpointing and sampling on
  the stage's schedule. `config_dict` is stored with every checkpoint;
  `before_first_save` runs once, before the first checkpoint is written.
  `compiler_options` (XLA's, from `compile_effort`) apply to the init,
  train step and sample programs; JAX's persistent compilation cache
  (`tp2p_jax.core.caches`) spares a restarted run their compilation.
  `ownership_lost()` is asked before every save (on every process, agreed
  by all): True when another trainer took the run directory's lock over,
  and the stage stops with `WorkdirBusyError` instead of writing into a run
  it no longer owns.
  """
  is_main = jax.process_index() == 0
  init_args = (jax.random.PRNGKey(stage.seed), handoff)
  if stage.total_steps <= 0:  # nothing to train: the initial state
    state, _ = mesh_lib.jit_init(stage.init, mesh, *init_args,
                                 compiler_options=compiler_options)
    return LoopResult(state, 0, False)
  mesh_lib.check_batch_size(stage.batch_size, mesh)
  abstract = jax.eval_shape(stage.init, *init_args)
  state_sharding = mesh_lib.replicated_like(mesh, abstract)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), stage.keep_checkpoints,
                      writer=True)
  iterator = stage.make_iterator()
  state_target = abstract_with_shardings(abstract, state_sharding)
  try:
    restored = ckpt.restore_newest(state_target, move_aside=True)
  except CheckpointMismatchError as e:
    ckpt.close()
    raise RunError(f"{e}: this config builds another {stage.name} than the checkpoint holds; "
                   "resume with the run's own config, or choose another --workdir") from None
  except BaseException:
    ckpt.close()
    raise
  start = restored.step if restored else 0
  step_jit = mesh_lib.jit_train_step(stage.train_step, mesh, state_sharding, stage.frozen,
                                     compiler_options=compiler_options)
  frozen = (None if stage.frozen is None or start >= stage.total_steps
            else jax.device_put(stage.frozen, mesh_lib.replicated_like(mesh, stage.frozen)))
  if restored:
    state = restored.state
    try:
      pipeline.restore_iterator_state(iterator, pipeline.process_state_from_json(
          restored.data_state, jax.process_index(), jax.process_count()))
    except pipeline.IteratorStateError as e:
      ckpt.close()
      raise RunError(f"{ckpt.directory}/{restored.step}: {e}") from None
    except ValueError as e:  # grain refuses the position of another sampler
      ckpt.close()
      raise RunError(f"{ckpt.directory}/{restored.step}: {str(e).splitlines()[0]} (the input "
                     "position does not fit this run's input pipeline)") from None
    log.info("%s: resumed from step %d", stage.name, start)
  else:
    t0 = time.perf_counter()
    try:
      init = mesh_lib.compile_init(stage.init, mesh, *init_args,
                                   compiler_options=compiler_options)
      state = jax.block_until_ready(init(*init_args))
      log.info("%s: state initialised in %.1f s", stage.name, time.perf_counter() - t0)
      if stage.on_fresh_start is not None:
        state = stage.on_fresh_start(state, mesh)
    except BaseException:
      ckpt.close()
      raise
  if start >= stage.total_steps:
    ckpt.close()
    return LoopResult(state, start, False)

  jit = stage_jit(compiler_options)
  validating = stage.validate is not None and stage.eval_every > 0
  if stage.keep_best and not validating:
    ckpt.close()
    raise RunError(f"{stage.name}: keep_best={stage.keep_best!r} needs validation, which "
                   + ("eval_every=0 turns off" if stage.validate is not None
                      else "this method does not provide"))
  try:
    best = BestCheckpoint(workdir, stage.keep_best) if stage.keep_best else None
  except BaseException:
    ckpt.close()
    raise
  writer = run_log.MetricsWriter(workdir, resume_step=start, enabled=is_main)
  agreement = multihost.Agreement(mesh)
  # The bar starts after the first step, so that its rate and ETA leave out
  # the compilation that step waits for (reported on its own line).
  bar: tqdm | None = None
  step = start
  interrupted = False
  try:
    with _StopFlag() as stop:
      while step < stage.total_steps:
        batch = mesh_lib.to_global_batch(next(iterator), mesh)
        if bar is None:
          log.info("%s: compiling the train step (the first step waits for it)", stage.name)
          t0 = time.perf_counter()
        state, metrics = step_jit(state, batch, frozen)
        step += 1
        if bar is None:
          jax.block_until_ready(metrics)
          log.info("%s: first step, with compilation, took %.1f s", stage.name,
                   time.perf_counter() - t0)
          bar = tqdm(total=stage.total_steps, initial=step, desc=stage.name, unit="step",
                     dynamic_ncols=True, disable=not is_main,
                     mininterval=1.0 if sys.stderr.isatty() else 30.0)
        else:
          bar.update(1)
        last = step == stage.total_steps
        stopping = agreement.any_process_lagged(stop.requested)
        save = last or stopping or step % stage.checkpoint_every == 0
        evaluate = validating and (last or step % stage.eval_every == 0)
        scores: dict[str, float] = {}
        if save or evaluate or step % stage.log_every == 0:
          host = _host_metrics(metrics)
          _check_finite(stage.name, step, host, ckpt, agreement)
          if evaluate:
            # Before the save: a run killed between the two redoes both.
            scores = _validate(stage, state, mesh, jit, step)
          if last or evaluate or step % stage.log_every == 0:
            writer.write(step, {**host, **scores})
            bar.set_postfix({k: f"{host[k]:.3g}" for k in list(host)[:3]}, refresh=False)
        if save or (best is not None and scores):
          if ownership_lost is not None and agreement.any_process(ownership_lost()):
            raise WorkdirBusyError(
                f"{workdir}: another process took over this run's lock; stopped at step "
                f"{step} without saving (the checkpoints so far are intact): stop the other "
                "trainer before resuming")
          if before_first_save is not None:
            before_first_save()
            before_first_save = None
          positions = multihost.all_process_texts(pipeline.iterator_state_to_json(iterator))
          data_state = pipeline.process_states_to_json(positions)
          # The best first: a run killed before its checkpoint redoes this
          # step and finds the same value, which does not replace it.
          if best is not None and scores:
            if best.metric not in scores:
              raise RunError(f"{stage.name}: keep_best={best.metric!r}, and its validation "
                             f"gives {', '.join(scores)}; choose one of those")
            best.offer(step, scores, state, data_state, config_dict)
          if save:
            ckpt.save(step, state, data_state, config_dict)
        if (stage.samples is not None and stage.sample_every
            and (last or step % stage.sample_every == 0)):
          grid = stage.samples(state, jit)
          if is_main:
            save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
        if stopping and not last:
          interrupted = True
          log.warning("%s: SIGTERM received%s; saved checkpoint %d and stopping", stage.name,
                      "" if stop.requested else " by another process", step)
          break
  finally:
    if bar is not None:
      bar.close()
    writer.close()
    ckpt.close()
    if best is not None:
      best.close()
  return LoopResult(state, step, interrupted)


def _validate(stage: Stage, state: Any, mesh: jax.sharding.Mesh, jit: Jit, step: int
              ) -> dict[str, float]:
  """The stage's held-out metrics of `state`, named `eval/...`, with a log
  line giving their values and wall time (its program compiles once, at
  the first validation: `jit` keeps it, and JAX's persistent cache serves it
  to a restarted run)."""
  t0 = time.perf_counter()
  scores = {f"eval/{k}": float(v) for k, v in stage.validate(state, mesh, jit).items()}
  log.info("%s: step %d eval in %.1f s: %s", stage.name, step, time.perf_counter() - t0,
           " ".join(f"{k}={v:.4g}" for k, v in scores.items()))
  return scores


def run_stages(stages: list[Stage], workdir: str, mesh: jax.sharding.Mesh,
               config_dict: dict[str, Any],
               before_first_save: Callable[[], None] | None = None,
               compiler_options: Mapping[str, Any] | None = None,
               ownership_lost: Callable[[], bool] | None = None) -> LoopResult:
  """Trains `stages` in order under `workdir` (each in its `directory`); the
  first gets {} as its handoff, each later one what the previous stage's
  `finish` returned (fetched to the host). Stops after a stage that SIGTERM
  interrupted. `before_first_save` runs once, before the run's first
  checkpoint save (of whichever stage); the stages' programs are compiled
  with `compiler_options`; `ownership_lost` is
  asked before every save (see `train_loop`).
  Returns the last stage's (or the interrupted stage's) result.
  """
  pending = [before_first_save] if before_first_save is not None else []

  def first_save() -> None:
    while pending:
      pending.pop()()

  handoff: Any = {}
  result = LoopResult(None, 0, False)
  for stage in stages:
    stage_dir = os.path.join(workdir, stage.directory) if stage.directory else workdir
    result = train_loop(stage, stage_dir, mesh, handoff, config_dict, first_save,
                        compiler_options, ownership_lost)
    if result.interrupted:
      return result
    handoff = {} if stage.finish is None else jax.device_get(
        stage.finish(result.state, stage_dir,
                     stage_jit(compiler_options)))
  return result
