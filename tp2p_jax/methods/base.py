"""What a training method is: the contract between a method and the one
trainer, run loader and predictor.

A method (`Method`) names a way of training (`config.method`): its stages,
its parameter counts, and how a trained run becomes a `Predictor`. A stage
(`tp2p_jax.core.stage.Stage`) is everything the trainer's loop needs for one
resumable run directory: a jit-able state init, a pure train step, an input iterator, a
sample writer, optionally held-out validation (`tp2p_jax.methods.validation`), and what
the stage hands the next one. The trainer owns the
rest (mesh, shardings, checkpoints, resume, logging, SIGTERM, NaN checks),
so a method never touches files or devices.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tp2p_jax.core.stage import Stage
from tp2p_jax.methods import test_mode

Variables = Mapping[str, Any]


@functools.partial(jax.jit, static_argnums=(0, 4))
def _apply(generator: nn.Module, variables: Variables, images: jax.Array,
           style: jax.Array | None, mode: str, seeds: jax.Array) -> jax.Array:
  """netG in test mode `mode` (`test_mode.apply_generator`), float32 output;
  the module is static, the variables an argument (not baked into the
  program as constants)."""
  return test_mode.apply_generator(generator, variables, images, style, mode, seeds)


@functools.partial(jax.jit, static_argnums=0)
def encoder_outputs(encoder: nn.Module, variables: Variables, photos: jax.Array
                    ) -> dict[str, jax.Array]:
  """Style encoder in eval mode on photos (B, H, W, 3) in [-1, 1] of any size
  (resized to its input): {"embedding": (B, E), "cosine": (B, C)}."""
  size = encoder.image_size
  if photos.shape[1:3] != (size, size):
    photos = jax.image.resize(photos, (photos.shape[0], size, size, photos.shape[3]),
                              "linear", antialias=True)
  out = encoder.apply(variables, photos, train=False)
  return {"embedding": out["embedding"], "cosine": out["cosine"]}


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A trained generator ready for inference, whatever the method: what
  predict, evaluate, export and serving use. Its capabilities are fields
  (`style_dim`, `directions`), so callers never ask which family it is.

  Attributes:
    model_name: the generator's registry name (e.g. "transpix2pix").
    image_size: side S of the square inputs and outputs.
    generator: netG (compute dtype as loaded).
    variables: the EMA generator's variables per direction, e.g.
      {"AtoB": {...}} (one-way models) or {"AtoB", "BtoA"} (CycleGAN).
    initial_variables: `() -> {direction: variables}`, the generator as the
      run initialised it (same seed): the floor metrics are compared with.
    style_dim: E for style-conditioned generators (they take (B, E)
      embeddings), None for generators without a style input.
    style_encoder: the frozen style encoder (photos -> embeddings); None for
      generators without a style input, and for a run whose encoder weights
      are not trained (imported without one): it takes embeddings only.
    style_variables: its {"params", "batch_stats"} ({} without one).
    prepare: how inputs are fitted to the model by default: "hand_drawn"
      (redrawn in the training line style) or "pad" (resized and padded).
    test_mode: how netG runs (`tp2p_jax.methods.test_mode`): "eval"
      (running BatchNorm statistics, no dropout) or "train" (each image
      normalised with its own statistics, seeded dropout on).
    seed: the train mode's dropout seed; the image at position k of the
      input gets `test_mode.image_seeds(seed, k)`.
  """
  model_name: str
  image_size: int
  generator: nn.Module
  variables: Mapping[str, Variables]
  initial_variables: Callable[[], Mapping[str, Variables]]
  style_dim: int | None = None
  style_encoder: nn.Module | None = None
  style_variables: Variables = dataclasses.field(default_factory=dict)
  prepare: str = "hand_drawn"
  test_mode: str = "eval"
  seed: int = 0

  @property
  def directions(self) -> tuple[str, ...]:
    return tuple(self.variables)

  def generate(self, images: jax.Array, style: jax.Array | None = None,
               direction: str = "AtoB", variables: Variables | None = None,
               seeds: jax.Array | None = None) -> jax.Array:
    """The EMA generator in `test_mode` (jitted; compiles once per shape).

    Args:
      images: (B, S, S, 3) in [-1, 1].
      style: (B, E) style embeddings for style-conditioned generators.
      direction: one of `directions`.
      variables: other generator variables (e.g. `initial_variables()[d]`).
      seeds: (B,) int32 dropout seed per image (train mode; callers that
        batch pass `test_mode.image_seeds(self.seed, positions)`, so that
        each image's output is independent of its batch). Default: the
        rows as positions 0 .. B - 1.

    Returns:
      (B, S, S, 3) float32 in [-1, 1].
    """
    if direction not in self.variables:
      raise ValueError(f"{self.model_name} translates {'/'.join(self.directions)}, "
                       f"not {direction}")
    if (style is None) != (self.style_dim is None):
      raise ValueError(f"{self.model_name} " + ("needs (B, E) style embeddings"
                                                if style is None else "takes no style"))
    v = self.variables[direction] if variables is None else variables
    if seeds is None:
      seeds = test_mode.image_seeds(self.seed, range(len(images)))
    return _apply(self.generator, v, jnp.asarray(images, jnp.float32), style, self.test_mode,
                  jnp.asarray(seeds, jnp.int32))

  def encoder_outputs(self, photos: jax.Array) -> dict[str, jax.Array]:
    """{"embedding": (B, E), "cosine": (B, C)} of photos (B, H, W, 3) in [-1, 1]."""
    if self.style_encoder is None:
      raise ValueError(f"{self.model_name} has no style encoder")
    return encoder_outputs(self.style_encoder, self.style_variables, photos)


@dataclasses.dataclass(frozen=True)
class Method:
  """A way of training, looked up by `config.method`.

  Attributes:
    name: the registry name.
    description: one line for listings.
    stages: `stages(config) -> [Stage, ...]` in training order; each stage's
      `finish` feeds the next one's `init`.
    param_counts: `param_counts(config) -> {network: count}`, trainable
      parameters from shapes only (nothing allocated).
    predictor: `predictor(config, restore, dtype) -> Predictor`; `restore`
      maps the abstract state of the method's last stage (`jax.eval_shape`
      of its init) to the restored state; `dtype` overrides the compute
      dtype (None: the config's). None: the method trains no generator.
    prepare_config: `prepare_config(config) -> config` before training
      starts and the config is saved (e.g. a prepared dataset's own class
      names); None: as given.
    imported_state: `imported_state(config, weights) -> state` of the
      method's last stage from networks converted from another framework
      (`tp2p_jax.methods.imported_weights.ImportedWeights`; `tp2p
      import-torch`); None: the method imports nothing.
  """
  name: str
  description: str
  stages: Callable[[ml_collections.ConfigDict], list[Stage]]
  param_counts: Callable[[ml_collections.ConfigDict], dict[str, int]]
  predictor: Callable[[ml_collections.ConfigDict, Callable[[Any], Any], str | None],
                      Predictor] | None
  prepare_config: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict] | None = None
  imported_state: Callable[[ml_collections.ConfigDict, Any], Any] | None = None
