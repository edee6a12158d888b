"""A CycleGAN run loaded for translation in either direction.

`load_cyclegan_run(workdir)` reads `<workdir>/config.json`, rebuilds the
generator and restores the EMA weights of G_AB and G_BA from the latest (or
a chosen) checkpoint; discriminators, optimiser states and pools are read
and dropped at once.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tp2p_jax.inference.run_loading import RunError, read_run_config, restore_run_state
from tp2p_jax.train.builders import is_cyclegan
from tp2p_jax.train.cyclegan_builders import build_cyclegan
from tp2p_jax.translate import Direction, translate


@dataclasses.dataclass(frozen=True)
class CycleGANRun:
  """Attributes:
    workdir, config, step: where the weights come from.
    generator: the generator module (both directions share it).
    params: {"ab": EMA G_AB params, "ba": EMA G_BA params}.
  """
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  generator: nn.Module
  params: dict[str, Any]

  @property
  def image_size(self) -> int:
    return int(self.config.image_size)

  def translate(self, images: jax.Array, direction: Direction) -> jax.Array:
    """(B, H, W, 3) in [-1, 1] (H, W multiples of 4) -> translated, float32
    in [-1, 1]; jitted, compiled once per shape and direction."""
    return _translate(self.generator, self.params, jnp.asarray(images, jnp.float32), direction)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _translate(generator: nn.Module, params: dict[str, Any], images: jax.Array,
               direction: Direction) -> jax.Array:
  return translate(generator, params, images, direction)


def load_cyclegan_run(workdir: str, step: int | None = None, dtype: str | None = None
                      ) -> CycleGANRun:
  """Restores a CycleGAN run's EMA generators.

  Args:
    workdir: a run directory written by `run_train.py` with a CycleGAN config.
    step: checkpoint step (default: the latest).
    dtype: generator compute dtype (default: the run's).

  Raises:
    RunError: no config, not a CycleGAN run, or no (such) checkpoint.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = read_run_config(workdir)
  if not is_cyclegan(config):
    raise RunError(f"{workdir}: not a CycleGAN run (its config has model="
                   f"{config.get('model', 'transpix2pix')!r})")
  parts = build_cyclegan(config, dtype)
  state, step = restore_run_state(workdir, jax.eval_shape(parts.init, jax.random.PRNGKey(0)),
                                 step)
  return CycleGANRun(workdir=workdir, config=config, step=step, generator=parts.generator,
                     params=dict(state.ema))
