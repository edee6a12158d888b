"""The one place where an experiment config becomes networks, objectives and
optimisers; everything downstream takes explicit typed arguments."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tp2p_jax import models
from tp2p_jax.models.style_encoder import StyleEncoder
from tp2p_jax.train import optim
from tp2p_jax.train.steps import GanObjective


def _kwargs(section: ml_collections.ConfigDict) -> dict[str, Any]:
  kwargs = section.to_dict()
  for key, value in kwargs.items():
    if isinstance(value, list):
      kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
  return kwargs


def generator_from_config(config: ml_collections.ConfigDict, dtype: str | None = None) -> nn.Module:
  kwargs = _kwargs(config.generator_kwargs)
  if config.generator == "transpix2pix":
    kwargs.update(image_size=config.image_size, style_dim=config.style.embedding_dim)
  return models.build_generator(config.generator,
                                dtype=models.resolve_dtype(dtype or config.dtype), **kwargs)


def discriminator_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                              ) -> nn.Module:
  return models.build_discriminator(config.discriminator,
                                    dtype=models.resolve_dtype(dtype or config.dtype),
                                    **_kwargs(config.discriminator_kwargs))


def style_encoder_from_config(config: ml_collections.ConfigDict) -> StyleEncoder:
  s = config.style
  return StyleEncoder(image_size=s.image_size, block_features=tuple(s.block_features),
                      hidden=s.hidden, embedding_dim=s.embedding_dim,
                      num_classes=len(config.data.style_names), scale=s.scale)


def objective_from_config(config: ml_collections.ConfigDict) -> GanObjective:
  return GanObjective(gan_mode=config.gan_mode, lambda_l1=config.lambda_l1,
                      lambda_perceptual=config.lambda_perceptual,
                      perceptual_layer=config.perceptual_layer, ema_decay=config.ema_decay)


def gan_optimizers(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.GradientTransformation,
                              optax.Schedule]:
  """(netG optimiser, netD optimiser, shared lr schedule)."""
  schedule = optim.step_decay_schedule(config.lr, config.lr_milestones, config.lr_decay_factor)
  g_tx = optim.adam_with_l2(
      schedule, config.b1, config.b2, config.weight_decay,
      lambda p: optim.decay_mask(p, optim.GENERATOR_NO_DECAY), clip_norm=config.g_clip_norm)
  d_tx = optim.adam_with_l2(schedule, config.b1, config.b2, config.weight_decay,
                            optim.decay_mask)
  return g_tx, d_tx, schedule


def style_optimizer(config: ml_collections.ConfigDict
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  s = config.style
  schedule = optax.exponential_decay(s.lr, transition_steps=s.lr_decay_every,
                                     decay_rate=s.lr_decay, staircase=True)
  return optim.adam_with_l2(schedule, 0.9, 0.999, s.weight_decay, optim.decay_mask), schedule


def count_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Trainable parameters of each network, from shapes only (nothing is
  allocated). BatchNorm running statistics are not counted."""
  g = generator_from_config(config)
  d = discriminator_from_config(config)
  enc = style_encoder_from_config(config)
  s = config.image_size
  key = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  img = jnp.zeros((1, s, s, 3), jnp.float32)
  g_shapes = jax.eval_shape(lambda: g.init(key, img, jnp.zeros((1, config.style.embedding_dim)),
                                           train=False))
  d_shapes = jax.eval_shape(lambda: d.init(key, jnp.zeros((1, s, s, 6)), train=False))
  e = config.style.image_size
  e_shapes = jax.eval_shape(lambda: enc.init(key, jnp.zeros((1, e, e, 3)), train=False))
  return {"generator": count_params(g_shapes["params"]),
          "discriminator": count_params(d_shapes["params"]),
          "style_encoder": count_params(e_shapes["params"])}
