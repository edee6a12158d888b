"""The trainer: `train_and_evaluate(config, workdir)` runs the two-stage
TransPix2Pix job, or the one-stage pix2pix / pix2pixHD job.

Stage 1 trains the CosFace style encoder on the photos' coat labels
(`<workdir>/style_encoder/`); stage 2 trains the GAN conditioned on the frozen
encoder's embeddings of the target photos (`<workdir>/checkpoints/`).
Generators without a style input (pix2pix, pix2pixHD) have no stage 1: the
GAN stage runs alone, with `style_variables = {}` in its state. Each
stage resumes from its latest checkpoint, and a finished stage is skipped, so
rerunning the same command continues the run exactly: the state, the RNG
(per-step keys are `fold_in(rng, step)`) and the input iterator's position
are all in the checkpoint.

SIGTERM saves a checkpoint at the current step and returns cleanly. A
non-finite loss or parameter norm (checked at every log step and before
every save) raises `NonFiniteLossError`; the last good checkpoint stays.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import class_names, sources_from_config
from tp2p_jax.train import builders, parallel, run_log, warm_start
from tp2p_jax.train.checkpoints import Checkpointer, abstract_with_shardings, save_run_config
from tp2p_jax.train.state import create_style_state
from tp2p_jax.train.steps import make_style_train_step, precise_batch_stats

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


def _check_finite(stage: str, step: int, metrics: dict[str, float], ckpt: Checkpointer) -> None:
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
        f"{stage}: non-finite values at step {step}: {bad}. Stopping without saving; the "
        f"last good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. Lower the "
        f"learning rate or check the data, then rerun the same command to resume from it.")


def train_loop(*, stage: str, workdir: str, mesh: jax.sharding.Mesh,
               init_fn: Callable[..., Any], init_args: tuple, step_fn: Callable,
               make_iterator: Callable[[], Iterator[dict[str, np.ndarray]]],
               total_steps: int, log_every: int, checkpoint_every: int, keep: int,
               config_dict: dict[str, Any],
               on_sample: Callable[[int, Any], None] | None = None,
               sample_every: int = 0,
               on_fresh_start: Callable[[Any], Any] | None = None) -> LoopResult:
  """Generic resumable loop shared by both stages.

  Restores `<workdir>/checkpoints/<latest>` (state and iterator position) or
  initialises with `init_fn(*init_args)`, then runs `step_fn(state, batch) ->
  (state, metrics)` jitted over the mesh (batch sharded on `data`, state
  replicated, state buffers donated) up to `total_steps`.
  `on_fresh_start(state) -> state` edits the initial state of a run that
  starts from scratch (never a resumed one, so resuming stays exact).
  """
  is_main = jax.process_index() == 0
  abstract = jax.eval_shape(init_fn, *init_args)
  state_sharding = parallel.replicated_like(mesh, abstract)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep)
  iterator = make_iterator()
  start = ckpt.latest_step() or 0
  if start:
    state, data_state = ckpt.restore(start, abstract_with_shardings(abstract, state_sharding))
    pipeline.restore_iterator_state(iterator, data_state)
    log.info("%s: resumed from step %d", stage, start)
  else:
    state = jax.jit(init_fn, out_shardings=state_sharding)(*init_args)
    if on_fresh_start is not None:
      state = on_fresh_start(state)
  if start >= total_steps:
    ckpt.close()
    return LoopResult(state, start, False)

  step_jit = jax.jit(step_fn, in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
                     out_shardings=(state_sharding, parallel.replicated(mesh)),
                     donate_argnums=0)
  writer = run_log.MetricsWriter(workdir, resume_step=start, enabled=is_main)
  bar = tqdm(total=total_steps, initial=start, desc=stage, unit="step", dynamic_ncols=True,
             disable=not is_main, mininterval=1.0 if sys.stderr.isatty() else 30.0)
  step = start
  interrupted = False
  try:
    with _StopFlag() as stop:
      while step < total_steps:
        batch = parallel.to_global_batch(next(iterator), mesh)
        state, metrics = step_jit(state, batch)
        step += 1
        bar.update(1)
        last = step == total_steps
        save = last or stop.requested or step % checkpoint_every == 0
        if save or last or step % log_every == 0:
          host = _host_metrics(metrics)
          _check_finite(stage, step, host, ckpt)
          if last or step % log_every == 0:
            writer.write(step, host)
            bar.set_postfix({k: f"{host[k]:.3g}" for k in list(host)[:3]}, refresh=False)
        if save:
          ckpt.save(step, state, pipeline.iterator_state_to_json(iterator), config_dict)
        if on_sample is not None and sample_every and (last or step % sample_every == 0):
          on_sample(step, state)
        if stop.requested and not last:
          interrupted = True
          log.warning("%s: SIGTERM received; saved checkpoint %d and stopping", stage, step)
          break
  finally:
    bar.close()
    writer.close()
    ckpt.close()
  return LoopResult(state, step, interrupted)


def _style_stage(config: ml_collections.ConfigDict, workdir: str, mesh, train_source,
                 eval_source, config_dict) -> tuple[Any, bool]:
  """Stage 1. Returns (frozen encoder variables {params, batch_stats}, interrupted)."""
  encoder = builders.style_encoder_from_config(config)
  tx, schedule = builders.style_optimizer(config)
  rng = jax.random.PRNGKey(config.seed)
  init = lambda key: create_style_state(key, encoder, tx)  # noqa: E731
  if config.style.total_steps <= 0:
    state = jax.jit(init)(rng)
    return {"params": state.params, "batch_stats": state.batch_stats}, False

  stage_dir = os.path.join(workdir, "style_encoder")
  result = train_loop(
      stage="style_encoder", workdir=stage_dir, mesh=mesh, init_fn=init, init_args=(rng,),
      step_fn=make_style_train_step(encoder, tx, config.style.margin, schedule),
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train_source, global_batch_size=config.style.batch_size,
          image_size=config.image_size, seed=config.seed + 1, augment=config.data.augment,
          worker_count=config.data.worker_count),
      total_steps=config.style.total_steps, log_every=config.log_every,
      checkpoint_every=config.style.checkpoint_every, keep=config.keep_checkpoints,
      config_dict=config_dict)
  variables = {"params": result.state.params, "batch_stats": result.state.batch_stats}
  if result.interrupted:
    return variables, True
  variables = precise_batch_stats(encoder, jax.device_get(variables),
                                  _encoder_photos(train_source, encoder, config))
  if jax.process_index() == 0:
    _write_style_summary(stage_dir, encoder, variables, eval_source, config)
  return variables, False


def _encoder_photos(source, encoder, config, num_batches: int = 16, batch_size: int = 64
                    ) -> list[np.ndarray]:
  """The first training photos in source order (deterministic), resized to the
  encoder's input, for recomputing its BatchNorm statistics."""
  size = encoder.image_size
  batches = []
  for batch in pipeline.make_eval_batches(source, batch_size=batch_size,
                                          image_size=config.image_size,
                                          num_examples=num_batches * batch_size):
    photos = batch["real_b"]
    if photos.shape[1] != size:
      photos = np.asarray(jax.image.resize(photos, (len(photos), size, size, 3), "linear",
                                           antialias=True))
    batches.append(photos)
  return batches


def _write_style_summary(stage_dir: str, encoder, variables, eval_source, config) -> None:
  """Held-out accuracy of the finished encoder -> `<stage_dir>/eval.json`."""
  apply = jax.jit(lambda v, x: encoder.apply(v, x, train=False)["cosine"])
  size = encoder.image_size
  correct = total = 0
  for batch in pipeline.make_eval_batches(eval_source, batch_size=64,
                                          image_size=config.image_size):
    photos = jax.image.resize(batch["real_b"], (len(batch["label"]), size, size, 3),
                              "linear", antialias=True)
    pred = np.argmax(np.asarray(apply(variables, photos)), -1)
    correct += int(np.sum(pred == batch["label"]))
    total += len(batch["label"])
  summary = {"heldout_accuracy": correct / max(total, 1), "heldout_examples": total}
  with open(os.path.join(stage_dir, "eval.json"), "w") as f:
    json.dump(summary, f)
  log.info("style encoder: held-out accuracy %.3f on %d photos", summary["heldout_accuracy"],
           total)


def _gan_stage(config: ml_collections.ConfigDict, workdir: str, mesh, train_source,
               eval_source, style_variables, config_dict) -> LoopResult:
  gan = builders.build_gan(config)
  sample_batch = next(pipeline.make_eval_batches(
      eval_source, batch_size=config.num_samples, image_size=config.image_size,
      num_examples=config.num_samples))
  generate = jax.jit(gan.generate)
  writer_enabled = jax.process_index() == 0

  def on_sample(step: int, state) -> None:
    fake = np.asarray(generate(state, sample_batch["real_a"], sample_batch["real_b"]))
    if writer_enabled:
      grid = run_log.image_grid([sample_batch["real_a"], fake, sample_batch["real_b"]])
      run_log.save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)

  return train_loop(
      stage=config.generator, workdir=workdir, mesh=mesh, init_fn=gan.init,
      init_args=(jax.random.PRNGKey(config.seed), style_variables), step_fn=gan.train_step,
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train_source, global_batch_size=config.batch_size, image_size=config.image_size,
          seed=config.seed, augment=config.data.augment, worker_count=config.data.worker_count),
      total_steps=config.total_steps, log_every=config.log_every,
      checkpoint_every=config.checkpoint_every, keep=config.keep_checkpoints,
      config_dict=config_dict, on_sample=on_sample, sample_every=config.sample_every,
      on_fresh_start=_init_from(config, mesh))


def _init_from(config: ml_collections.ConfigDict, mesh) -> Callable[[Any], Any] | None:
  """pix2pixHD stage 2: G1 from the stage-1 run `config.init_from` (a
  fresh run only); None when the field is empty or absent."""
  run_dir = config.get("init_from", "")
  if not run_dir:
    return None
  return lambda state: warm_start.init_from_run(state, run_dir, mesh, subtree="global")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> int:
  """Runs (or resumes) the stages in `workdir`. Returns the process exit
  status: 0 when finished or cleanly stopped by SIGTERM."""
  if builders.is_cyclegan(config):
    from tp2p_jax.train.cyclegan_trainer import train_cyclegan
    train_cyclegan(config, workdir)
    return 0
  os.makedirs(workdir, exist_ok=True)
  names = class_names(config.data.source, config.data.data_dir)
  if tuple(config.data.style_names) != names:
    # A prepared dataset brings its own classes; the style encoder's head
    # and the saved config follow them.
    config = config.copy_and_resolve_references()
    config.data.style_names = names
    log.info("style classes from the dataset: %s", ", ".join(names))
  config_dict = save_run_config(workdir, config)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  with_style = builders.uses_style(config)
  if with_style:
    parallel.check_batch_size(config.style.batch_size, mesh)
  train_source, eval_source = sources_from_config(config.data, image_size=config.image_size,
                                                    seed=config.seed)
  log.info("workdir %s; %d device(s) (%s); config in config.json", workdir,
           mesh.devices.size, jax.devices()[0].device_kind)
  t0 = time.time()
  style_variables: Any = {}
  if with_style:
    style_variables, interrupted = _style_stage(config, workdir, mesh, train_source,
                                                eval_source, config_dict)
    if interrupted:
      return 0
    style_variables = jax.device_get(style_variables)
  result = _gan_stage(config, workdir, mesh, train_source, eval_source, style_variables,
                      config_dict)
  log.info("finished at step %d in %.0f s%s", result.step, time.time() - t0,
           " (stopped by SIGTERM)" if result.interrupted else "")
  return 0
