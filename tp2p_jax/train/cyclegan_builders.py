"""Config -> CycleGAN networks, optimisers, objective and pure functions
(the CycleGAN counterpart of `builders.py`)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tp2p_jax import models
from tp2p_jax.train import optim
from tp2p_jax.train.builders import _kwargs, count_params
from tp2p_jax.train.cyclegan_state import CycleGANState, create_cyclegan_state
from tp2p_jax.train.cyclegan_steps import CycleGANObjective, make_cyclegan_train_step
from tp2p_jax.translate import translate


def generator_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                          ) -> nn.Module:
  return models.build_generator(config.generator,
                                dtype=models.resolve_dtype(dtype or config.dtype),
                                **_kwargs(config.generator_kwargs))


def discriminator_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                              ) -> nn.Module:
  return models.build_discriminator(config.discriminator,
                                    dtype=models.resolve_dtype(dtype or config.dtype),
                                    **_kwargs(config.discriminator_kwargs))


def linear_decay_schedule(lr: float, constant_steps: int, decay_steps: int) -> optax.Schedule:
  """lr for `constant_steps`, then linearly to 0 over `decay_steps` (the
  release's 100 + 100 epochs, counted in steps)."""
  return optax.join_schedules(
      [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, max(1, decay_steps))],
      [constant_steps])


def cyclegan_optimizers(config: ml_collections.ConfigDict
                        ) -> tuple[optax.GradientTransformation, optax.GradientTransformation,
                                   optax.Schedule]:
  """(Adam over both generators, Adam over both discriminators, lr schedule)."""
  schedule = linear_decay_schedule(config.lr, config.lr_constant_steps, config.lr_decay_steps)
  g_tx = optim.adam_with_l2(schedule, config.b1, config.b2, 0.0, optim.decay_mask)
  d_tx = optim.adam_with_l2(schedule, config.b1, config.b2, 0.0, optim.decay_mask)
  return g_tx, d_tx, schedule


def objective_from_config(config: ml_collections.ConfigDict) -> CycleGANObjective:
  return CycleGANObjective(gan_mode=config.gan_mode, lambda_cycle=config.lambda_cycle,
                           lambda_identity=config.lambda_identity,
                           ema_decay=config.ema_decay)


def cyclegan_param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Trainable parameters of each of the four networks, from shapes only."""
  g = generator_from_config(config)
  d = discriminator_from_config(config)
  img = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  key = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  n_g = count_params(jax.eval_shape(lambda: g.init(key, img, train=False))["params"])
  n_d = count_params(jax.eval_shape(lambda: d.init(key, img, train=False))["params"])
  return {"generator_ab": n_g, "generator_ba": n_g, "discriminator_a": n_d,
          "discriminator_b": n_d}


@dataclasses.dataclass(frozen=True)
class CycleGANParts:
  """Attributes:
    init: `init(raw_key) -> CycleGANState` (jit-able).
    train_step: pure `train_step(state, batch) -> (state, metrics)`.
    translate: `translate(state_or_params, images, direction, use_ema=True)`,
      see `tp2p_jax.translate.translate`.
  """
  generator: nn.Module
  discriminator: nn.Module
  schedule: optax.Schedule
  init: Callable[[jax.Array], CycleGANState]
  train_step: Callable
  translate: Callable[..., jax.Array]


def build_cyclegan(config: ml_collections.ConfigDict, dtype: str | None = None
                   ) -> CycleGANParts:
  generator = generator_from_config(config, dtype)
  if getattr(generator, "norm", "instance") == "batch":
    raise ValueError("CycleGAN here supports generator norm 'instance' or 'none'")
  discriminator = discriminator_from_config(config, dtype)
  if config.discriminator_kwargs.get("norm", "instance") == "batch":
    raise ValueError("CycleGAN here supports discriminator norm 'instance' or 'none'")
  g_tx, d_tx, schedule = cyclegan_optimizers(config)

  def init(key: jax.Array) -> CycleGANState:
    return create_cyclegan_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                                 config.pool_size)

  return CycleGANParts(
      generator=generator, discriminator=discriminator, schedule=schedule, init=init,
      train_step=make_cyclegan_train_step(generator, discriminator, g_tx, d_tx,
                                          objective_from_config(config), schedule),
      translate=functools.partial(translate, generator))


