"""A finished (or running) training run, loaded for inference, whatever its
method.

`load_trained_run(workdir)` reads `<workdir>/config.json`, looks up the
method it names and lets the method restore, from the latest checkpoint
under `<workdir>/checkpoints/` (or a chosen step, or the best one in
`<workdir>/best/`), what inference needs: a
`Predictor` (the EMA generator per direction, and the frozen style encoder
of style-conditioned models), run in the config's `test_mode` unless
`with_test_mode` says otherwise. Optimiser states and discriminators are read
and dropped at once.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Sequence

import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np
from tqdm import tqdm

from tp2p_jax import methods
from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core.run_dir import RunError, restore_run_state
from tp2p_jax.core import storage
from tp2p_jax.inference import parallel
from tp2p_jax.methods import test_mode
from tp2p_jax.methods.base import Predictor


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What inference needs from a run.

  Attributes:
    workdir: the run directory (absolute; a local path or a URL such as
      gs://BUCKET/RUN).
    config: the run's resolved config (from `config.json`).
    step: the checkpoint step the variables come from.
    predictor: the trained generator (see `tp2p_jax.methods.base.Predictor`).
  """
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  predictor: Predictor

  @property
  def class_names(self) -> tuple[str, ...]:
    """Style classes in label order (() for models without a style input)."""
    if self.predictor.style_dim is None:
      return ()
    return tuple(self.config.data.style_names)

  def require_style(self) -> None:
    """`ValueError` for style-dependent requests to an unconditioned model."""
    if self.predictor.style_dim is None:
      raise ValueError(f"this run's generator ({self.predictor.model_name}) takes no style "
                       "input")

  def require_style_encoder(self) -> None:
    """`RunError` if the style encoder's weights are random: a run imported
    from PyTorch checkpoints without one (`tp2p_jax.cli.import_torch`)."""
    self.require_style()
    if self.predictor.style_encoder is None:
      raise RunError(f"{self.workdir}: imported without a style encoder (its weights are "
                     f"random), so it cannot embed photos: give the generator "
                     f"{self.predictor.style_dim}-d style embeddings (export it), or "
                     "import again with --style_encoder=STYLE.pth")

  def require_class_styles(self) -> None:
    """`RunError` if the run has no class-average style embeddings and no
    training data to compute them from (an imported run)."""
    self.require_style_encoder()
    if names_no_dataset(self.config):
      raise RunError(f"{self.workdir}: no class-average style embeddings (the run was "
                     "imported without training data): use --style_image=PHOTO, or import "
                     "again with --config.data.data_dir=DATASET")

  def embed(self, photos: jax.Array) -> jax.Array:
    """Style embeddings (B, E) of photos (B, H, W, 3) in [-1, 1] (jitted)."""
    self.require_style_encoder()
    return self.predictor.encoder_outputs(photos)["embedding"]

  def classify(self, photos: jax.Array) -> jax.Array:
    """Style-encoder class cosines (B, C) of photos (B, H, W, 3) in [-1, 1]."""
    self.require_style_encoder()
    return self.predictor.encoder_outputs(photos)["cosine"]


def names_no_dataset(config: ml_collections.ConfigDict) -> bool:
  """Whether a run's config names no dataset to read: a run imported from
  PyTorch checkpoints without --config.data.data_dir, which has no held-out
  pairs and no class-average style embeddings."""
  data = config.get("data")
  return data is None or (data.get("source", "prepared") == "prepared"
                          and not data.get("data_dir", ""))


def load_trained_run(workdir: str | os.PathLike[str], step: int | str | None = None,
                     dtype: str | None = None, mesh: Mesh | None = None) -> TrainedRun:
  """Restores a run's predictor.

  Args:
    workdir: a run directory written by `run_train.py` (a local path or a
      URL such as gs://BUCKET/RUN).
    step: checkpoint step; "latest" (the default) or "best" (the run's
      `best/`, kept by `keep_best`).
    dtype: generator compute dtype ("float32", "bfloat16"; default: the
      run's). Parameters stay float32.
    mesh: restore the weights replicated on this mesh (default: the first
      device); see also `replicated_on`.

  Raises:
    RunError: no config, an unknown method or one without a generator, no
      checkpoint, no checkpoint at `step`, or no best one.
  """
  workdir = storage.text(workdir)
  config = methods.read_run_config(workdir)
  try:
    method = methods.get(config.method)
  except ValueError as e:
    raise RunError(f"{workdir}/config.json: {e}") from None
  if method.predictor is None:
    raise RunError(f"{workdir}: a {method.name} run has no generator to run")
  restored_step: list[int] = []

  def restore(abstract: Any) -> Any:
    state, at = restore_run_state(workdir, abstract, step, mesh=mesh)
    restored_step.append(at)
    return state

  try:
    test_mode.check_test_mode(config.test_mode)
  except ValueError as e:
    raise RunError(f"{workdir}/config.json: test_mode: {e}") from None
  predictor = dataclasses.replace(method.predictor(config, restore, dtype),
                                  test_mode=config.test_mode)
  run = TrainedRun(workdir=workdir, config=config, step=restored_step[0], predictor=predictor)
  return run if mesh is None else replicated_on(run, mesh)


def with_test_mode(run: TrainedRun, mode: str | None = None, seed: int = 0) -> TrainedRun:
  """`run` with its generator run in test mode `mode` ("eval" or "train",
  `tp2p_jax.methods.test_mode`; None: the run's own, `config.test_mode`)
  and the train mode's dropout `seed`.

  Raises:
    ValueError: an unknown mode.
  """
  mode = run.predictor.test_mode if mode is None else mode
  test_mode.check_test_mode(mode)
  return dataclasses.replace(run, predictor=dataclasses.replace(run.predictor, test_mode=mode,
                                                                seed=int(seed)))


def replicated_on(run: TrainedRun, mesh: Mesh) -> TrainedRun:
  """`run` with every weight (generators, style encoder, and the untrained
  generator `initial_variables` makes) replicated on `mesh`: its
  `generate`, `embed` and `classify` then run data-parallel on batches
  sharded over the mesh (`in_fixed_batches(..., mesh=mesh)`)."""
  p = run.predictor
  initial = p.initial_variables
  predictor = dataclasses.replace(
      p, variables=parallel.replicate(dict(p.variables), mesh),
      style_variables=parallel.replicate(p.style_variables, mesh),
      initial_variables=lambda: parallel.replicate(dict(initial()), mesh))
  return dataclasses.replace(run, predictor=predictor)


def in_fixed_batches(fn: Callable[..., jax.Array], arrays: Sequence[np.ndarray],
                     batch_size: int, desc: str | None = None, mesh: Mesh | None = None
                     ) -> np.ndarray:
  """`fn(*batch)` over the rows of `arrays` in batches of exactly
  `batch_size` (the last padded by repeating its final row and trimmed
  after), so a jitted `fn` compiles once whatever the number of rows.

  With a `mesh`, `batch_size` is first rounded up to a multiple of its
  device count and every batch is split over the devices on its leading
  axis (`fn`'s weights should be replicated on it: `replicated_on`); the
  next batch is sent while the previous one's results come back.

  Args:
    fn: maps batches (batch_size, ...) of each array to (batch_size, ...).
    arrays: equal-length arrays (N, ...), N >= 1.
    batch_size: rows per call (with a mesh: at least; see above).
    desc: if given, a progress bar on stderr with this label; it starts
      after the first batch, which includes any compilation, so its rate and
      ETA are those of the compiled `fn`.
    mesh: the devices to split each batch over (default: `fn`'s own
      placement, usually the first device).

  Returns:
    (N, ...) numpy results.
  """
  n = len(arrays[0])
  if n == 0:
    raise ValueError("in_fixed_batches needs at least one row")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}")
  sharding = None
  if mesh is not None:
    batch_size = parallel.global_batch_size(batch_size, mesh)
    sharding = mesh_lib.batch_sharding(mesh)
  outputs = []
  bar = None
  num_batches = -(-n // batch_size)
  in_flight: tuple[Any, int] | None = None

  def collect(result: Any, rows: int) -> None:
    nonlocal bar
    outputs.append(np.asarray(result)[:rows])
    if bar is not None:
      bar.update(1)
    elif desc is not None and num_batches > 1:
      bar = tqdm(total=num_batches, initial=1, desc=desc, unit="batch",
                 dynamic_ncols=True, leave=False, file=sys.stderr)

  try:
    for start in range(0, n, batch_size):
      chunk = [np.asarray(a[start:start + batch_size]) for a in arrays]
      rows = len(chunk[0])
      if rows < batch_size:
        chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - rows, axis=0)])
                 for c in chunk]
      if sharding is not None:
        chunk = [jax.device_put(c, sharding) for c in chunk]
      # Dispatch is asynchronous: this batch starts before the previous
      # one's results are copied back.
      result = fn(*chunk)
      if in_flight is not None:
        collect(*in_flight)
      in_flight = (result, rows)
    collect(*in_flight)
  finally:
    if bar is not None:
      bar.close()
  return np.concatenate(outputs)
