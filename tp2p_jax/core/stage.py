"""One resumable training stage: the contract between a method and the
trainer's loop (`tp2p_jax.core.loop`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]
# `jit(name, fn)`: `fn` compiled like `jax.jit(fn)` with the run's compiler
# options, made once per `name` (one name, one function).
Jit = Callable[[str, Callable[..., Any]], Callable[..., Any]]


def plain_jit(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
  """The `Jit` of code run outside the trainer: `jax.jit(fn)`."""
  del name
  return jax.jit(fn)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One resumable training stage.

  Attributes:
    name: shown in logs and progress bars (e.g. "style_encoder").
    directory: the stage's run directory, relative to the workdir ("" for
      the workdir itself); it gets `checkpoints/`, `metrics.jsonl`, ...
    init: `init(raw_key, handoff) -> state`, pure and jit-able; `handoff` is
      what the previous stage's `finish` returned ({} for the first stage)
      and is an argument (data), never a compile-time constant.
    train_step: pure `train_step(state, batch, frozen) -> (state, metrics)`;
      `batch` is a dict of NHWC float32 arrays in [-1, 1] (and int labels),
      sharded over the mesh; `metrics` scalars.
    make_iterator: `() -> iterator` of host-local batches (dicts of numpy
      arrays) whose position `tp2p_jax.data.pipeline` can checkpoint.
    batch_size: the global batch size the iterator yields.
    seed: seeds `init` (the state's RNG; per-step keys are derived from it).
    total_steps, log_every, checkpoint_every, keep_checkpoints: the loop's
      schedule (total_steps <= 0: no training, `init` alone).
    frozen: frozen inputs every step receives as data (e.g. VGG16
      variables for the perceptual loss); None if none.
    samples: `samples(state, jit) -> uint8 (H, W, 3)` grid written to
      `samples/step_*.png` every `sample_every` steps (`jit`: see `Jit`;
      its programs load from the cache in a restarted run); None: no
      samples.
    sample_every: sample period in steps.
    on_fresh_start: `(state, mesh) -> state` for a stage starting from
      scratch (e.g. a warm start from another run); never on resume, so a
      resumed run stays exact.
    finish: `(state, stage_dir, jit) -> handoff` after the stage is complete
      (also when a finished stage is skipped on restart): what the next
      stage's `init` receives (e.g. the frozen style encoder's variables);
      it may write summaries into `stage_dir`. None: hands on {}.
    validate: `validate(state, mesh, jit) -> {name: value}` held-out
      metrics of the state (names without the `eval/` prefix the loop adds),
      every `eval_every` steps and at the last; called on every process
      (each scores its share of fixed held-out examples on the mesh) and
      returning the same values on each. It must not touch the training
      RNG or iterator, so that a resumed run stays exact. None: no
      validation.
    eval_every: validation period in steps (0: off).
    keep_best: an `eval/` metric (`tp2p_jax.core.best_checkpoint`) whose
      best step is kept under `best/`; "" for none.
  """
  name: str
  directory: str
  init: Callable[[jax.Array, Any], Any]
  train_step: Callable[[Any, Batch, Any], tuple[Any, Metrics]]
  make_iterator: Callable[[], Iterator[dict[str, np.ndarray]]]
  batch_size: int
  seed: int
  total_steps: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  frozen: Any = None
  samples: Callable[[Any, Jit], np.ndarray] | None = None
  sample_every: int = 0
  on_fresh_start: Callable[[Any, jax.sharding.Mesh], Any] | None = None
  finish: Callable[[Any, str, Jit], Any] | None = None
  validate: Callable[[Any, jax.sharding.Mesh, Jit], dict[str, float]] | None = None
  eval_every: int = 0
  keep_best: str = ""
