"""A finished (or running) training run, loaded for inference.

`load_trained_run(workdir)` reads `<workdir>/config.json`, rebuilds the
networks the config names and restores, from the latest checkpoint under
`<workdir>/checkpoints/` (or a chosen step), what inference needs: the EMA
generator's variables and the frozen style encoder's. Optimiser states and
the discriminator are read and dropped at once.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tp2p_jax.train import builders, parallel, steps
from tp2p_jax.train.checkpoints import Checkpointer, abstract_with_shardings
from tp2p_jax.train.state import TrainState, create_train_state

Variables = dict[str, Any]


class RunError(ValueError):
  """A run directory that cannot be used; the message names the path."""


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What inference needs from a run.

  Attributes:
    workdir: the run directory.
    config: the run's resolved config (from `config.json`).
    step: the checkpoint step the variables come from.
    generator: netG (compute dtype as requested at load time).
    generator_variables: EMA generator {"params", "batch_stats"}.
    style_encoder: the CosFace style encoder; None for generators without a
      style input (pix2pix, pix2pixHD).
    style_variables: its frozen {"params", "batch_stats"} ({} without one).
    class_names: style classes in label order.
  """
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  generator: nn.Module
  generator_variables: Variables
  style_encoder: nn.Module | None
  style_variables: Variables
  class_names: tuple[str, ...]

  @property
  def image_size(self) -> int:
    return int(self.config.image_size)

  @property
  def takes_style(self) -> bool:
    """Whether the generator is style-conditioned (TransPix2Pix)."""
    return self.style_encoder is not None

  @property
  def style_dim(self) -> int | None:
    return int(self.config.style.embedding_dim) if self.takes_style else None

  @property
  def model_name(self) -> str:
    return str(self.config.generator)

  def generate(self, sketches: jax.Array, style: jax.Array | None = None,
               variables: Variables | None = None) -> jax.Array:
    """The EMA generator in eval mode (jitted; compiles once per shape).

    Args:
      sketches: (B, S, S, 3) in [-1, 1], S = `image_size`.
      style: (B, E) style embeddings; None for unconditioned generators.
      variables: other generator variables (e.g. the untrained ones);
        default: the run's EMA generator.

    Returns:
      (B, S, S, 3) float32 in [-1, 1].
    """
    v = self.generator_variables if variables is None else variables
    return apply_generator(self.generator, v, sketches, style)

  def require_style(self) -> None:
    """`ValueError` for style-dependent requests to an unconditioned model."""
    if not self.takes_style:
      raise ValueError(f"this run's generator ({self.model_name}) takes no style input")

  def require_style_encoder(self) -> None:
    """`RunError` if the style encoder's weights are random: a run imported
    from PyTorch checkpoints without one (`tp2p_jax.import_torch`)."""
    self.require_style()
    if "style_encoder" in imported_fresh(self.config):
      raise RunError(f"{self.workdir}: imported without a style encoder (its weights are "
                     f"random), so it cannot embed photos: give the generator "
                     f"{self.style_dim}-d style embeddings (python -m tp2p_jax.export), or "
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
    return encoder_outputs(self.style_encoder, self.style_variables, photos)["embedding"]

  def classify(self, photos: jax.Array) -> jax.Array:
    """Style-encoder class cosines (B, C) of photos (B, H, W, 3) in [-1, 1]."""
    self.require_style_encoder()
    return encoder_outputs(self.style_encoder, self.style_variables, photos)["cosine"]


@functools.partial(jax.jit, static_argnums=0)
def apply_generator(generator: nn.Module, variables: Variables, sketches: jax.Array,
                    style: jax.Array | None) -> jax.Array:
  """netG in eval mode, float32 output; the module is static, the variables
  an argument (not baked into the program as constants)."""
  return steps.apply_generator(generator, variables, sketches, style,
                               train=False).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def encoder_outputs(encoder: nn.Module, variables: Variables, photos: jax.Array
                    ) -> dict[str, jax.Array]:
  """Style encoder in eval mode on photos of any size (resized to its input):
  {"embedding": (B, E), "cosine": (B, C)}."""
  size = encoder.image_size
  if photos.shape[1:3] != (size, size):
    photos = jax.image.resize(photos, (photos.shape[0], size, size, photos.shape[3]),
                              "linear", antialias=True)
  out = encoder.apply(variables, photos, train=False)
  return {"embedding": out["embedding"], "cosine": out["cosine"]}


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config; `RunError` naming the file if it is missing or
  not JSON."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise RunError(f"{path}: not found; is {workdir!r} a run directory made by "
                   f"run_train.py?") from None
  except (OSError, json.JSONDecodeError) as e:
    raise RunError(f"{path}: unreadable config ({e})") from None


def names_no_dataset(config: ml_collections.ConfigDict) -> bool:
  """Whether a run's config names no dataset to read: a run imported from
  PyTorch checkpoints (`tp2p_jax.import_torch`) without
  --config.data.data_dir, which has no held-out pairs and no class-average
  style embeddings."""
  data = config.get("data")
  return data is None or (data.get("source", "prepared") == "prepared"
                          and not data.get("data_dir", ""))


def imported_fresh(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Networks of a run imported from PyTorch checkpoints that were
  initialised from its config instead ("discriminator", "style_encoder",
  "generator_b", ...); () for runs trained here."""
  imported = config.get("imported")
  return tuple(imported.get("fresh", ())) if imported else ()


def checkpoint_step(ckpt: Checkpointer, step: int | None) -> int:
  """`step`, or the latest one, if `ckpt` holds it; `RunError` otherwise."""
  steps = ckpt.all_steps()
  if not steps:
    raise RunError(f"{ckpt.directory}: no checkpoints yet")
  if step is None:
    return max(steps)
  if step not in steps:
    raise RunError(f"{ckpt.directory}: no checkpoint at step {step}; available: "
                   f"{sorted(steps)}")
  return step


def restore_run_state(workdir: str, abstract: Any, step: int | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> tuple[Any, int]:
  """Restores `<workdir>/checkpoints/<step>` (default: the latest) into the
  shapes and dtypes of `abstract` (e.g. `jax.eval_shape` of the run's init),
  replicated on `mesh` (default: the first device).

  Returns:
    (state, step).

  Raises:
    RunError: naming the path, if there is no (such) checkpoint or it does
      not fit `abstract`.
  """
  mesh = mesh or parallel.make_mesh(jax.devices()[:1])
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=10**9)
  try:
    step = checkpoint_step(ckpt, step)
    try:
      state, _ = ckpt.restore(step, abstract_with_shardings(
          abstract, parallel.replicated_like(mesh, abstract)))
    except (ValueError, KeyError, TypeError) as e:
      raise RunError(f"{ckpt.directory}/{step}: does not match {workdir}/config.json "
                     f"({type(e).__name__}: {str(e)[:300]})") from None
  finally:
    ckpt.close()
  return state, step


def state_shapes(config: ml_collections.ConfigDict, generator: nn.Module) -> TrainState:
  """Abstract GAN `TrainState` of a config (shapes and dtypes only)."""
  discriminator = builders.discriminator_from_config(config)
  g_tx, d_tx, _ = builders.gan_optimizers(config)
  conditioned = builders.uses_style(config)

  def init(key: jax.Array) -> TrainState:
    style_variables, style_dim = {}, None
    if conditioned:
      encoder = builders.style_encoder_from_config(config)
      e = config.style.image_size
      style_variables = dict(encoder.init({"params": key}, jnp.zeros((1, e, e, 3)),
                                          train=False))
      style_dim = config.style.embedding_dim
    return create_train_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                              style_dim, style_variables)

  return jax.eval_shape(init, jax.random.PRNGKey(0))


def load_trained_run(workdir: str, step: int | None = None, dtype: str | None = None
                     ) -> TrainedRun:
  """Restores a run's EMA generator and style encoder.

  Args:
    workdir: a run directory written by `run_train.py`.
    step: checkpoint step (default: the latest).
    dtype: generator compute dtype ("float32", "bfloat16"; default: the
      run's). Parameters stay float32.

  Raises:
    RunError: no config, no checkpoint, or no checkpoint at `step`.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = read_run_config(workdir)
  if builders.is_cyclegan(config):
    raise RunError(f"{workdir} is a CycleGAN run: translate with `python -m "
                   "tp2p_jax.predict --direction=AtoB|BtoA` (evaluation and export "
                   "take paired runs)")
  generator = builders.generator_from_config(config, dtype)
  encoder = (builders.style_encoder_from_config(config) if builders.uses_style(config)
             else None)
  state, step = restore_run_state(workdir, state_shapes(config, generator), step)
  return TrainedRun(
      workdir=workdir, config=config, step=step, generator=generator,
      generator_variables=dict(state.ema["g"]), style_encoder=encoder,
      style_variables=dict(state.style_variables),
      class_names=tuple(config.data.style_names))


def untrained_generator_variables(run: TrainedRun) -> Variables:
  """The generator as the run initialised it (same seed), before any step:
  the floor every trained metric is compared with."""
  discriminator = builders.discriminator_from_config(run.config)
  g_tx, d_tx, _ = builders.gan_optimizers(run.config)

  @jax.jit
  def init(key: jax.Array) -> Variables:
    state = create_train_state(key, run.generator, discriminator, g_tx, d_tx, run.image_size,
                               run.style_dim, run.style_variables)
    return state.ema["g"]

  return dict(init(jax.random.PRNGKey(run.config.seed)))


def in_fixed_batches(fn: Callable[..., jax.Array], arrays: Sequence[np.ndarray],
                     batch_size: int) -> np.ndarray:
  """`fn(*batch)` over the rows of `arrays` in batches of exactly
  `batch_size` (the last padded by repeating its final row and trimmed
  after), so a jitted `fn` compiles once whatever the number of rows.

  Args:
    fn: maps batches (batch_size, ...) of each array to (batch_size, ...).
    arrays: equal-length arrays (N, ...), N >= 1.
    batch_size: rows per call.

  Returns:
    (N, ...) numpy results.
  """
  n = len(arrays[0])
  if n == 0:
    raise ValueError("in_fixed_batches needs at least one row")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}")
  outputs = []
  for start in range(0, n, batch_size):
    chunk = [np.asarray(a[start:start + batch_size]) for a in arrays]
    rows = len(chunk[0])
    if rows < batch_size:
      chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - rows, axis=0)]) for c in chunk]
    outputs.append(np.asarray(fn(*chunk))[:rows])
  return np.concatenate(outputs)
