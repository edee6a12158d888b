"""The one place where an experiment config becomes networks, objectives and
optimisers; everything downstream takes explicit typed arguments."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tp2p_jax import models
from tp2p_jax.losses import vgg_variables_up_to
from tp2p_jax.models import vgg
from tp2p_jax.models.style_encoder import StyleEncoder
from tp2p_jax.train import optim
from tp2p_jax.train.state import TrainState, create_train_state
from tp2p_jax.train.steps import GanObjective, make_gan_train_step, make_generate


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
  kwargs = _kwargs(config.discriminator_kwargs)
  if config.discriminator == "multiscale_patchgan":
    # The scale count is a top-level field so that switching any config's
    # PatchGAN to the multi-scale one keeps its discriminator_kwargs.
    kwargs.setdefault("num_d", config.get("num_d", 3))
  return models.build_discriminator(config.discriminator,
                                    dtype=models.resolve_dtype(dtype or config.dtype),
                                    **kwargs)


def is_cyclegan(config: ml_collections.ConfigDict) -> bool:
  """Whether a config (or a run's saved one) is a CycleGAN experiment; the
  paired family's configs have no `model` field."""
  return config.get("model", "transpix2pix") == "cyclegan"


def uses_style(config: ml_collections.ConfigDict) -> bool:
  """Whether the config's generator is style-conditioned (TransPix2Pix: a
  style-encoder stage and `config.style`), or takes real_a alone (pix2pix,
  pix2pixHD)."""
  return models.takes_style(config.generator)


def style_encoder_from_config(config: ml_collections.ConfigDict) -> StyleEncoder:
  s = config.style
  return StyleEncoder(image_size=s.image_size, block_features=tuple(s.block_features),
                      hidden=s.hidden, embedding_dim=s.embedding_dim,
                      num_classes=len(config.data.style_names), scale=s.scale)


def objective_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                          ) -> GanObjective:
  """The generator objective; `dtype` (default: config.dtype) is the VGG16
  compute dtype, like the networks'."""
  return GanObjective(gan_mode=config.gan_mode, lambda_l1=config.lambda_l1,
                      lambda_perceptual=config.lambda_perceptual,
                      perceptual_layer=config.perceptual_layer,
                      lambda_feat=config.get("lambda_feat", 0.0), ema_decay=config.ema_decay,
                      perceptual_dtype=dtype or config.dtype)


def gan_optimizers(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.GradientTransformation,
                              optax.Schedule]:
  """(netG optimiser, netD optimiser, shared lr schedule)."""
  schedule = optim.step_decay_schedule(config.lr, config.lr_milestones, config.lr_decay_factor)
  g_tx = optim.adam_with_l2(
      schedule, config.b1, config.b2, config.weight_decay,
      lambda p: optim.decay_mask(p, optim.GENERATOR_NO_DECAY), clip_norm=config.g_clip_norm)
  fix_global = config.get("fix_global_steps", 0)
  if (config.generator == "pix2pixhd" and config.generator_kwargs.get("n_local_enhancers", 1) > 0
      and fix_global != 0):
    # pix2pixHD's staged training: G1 stays as loaded while the local
    # enhancers learn, then (fix_global_steps > 0) everything trains.
    g_tx = optim.freeze_subtrees(g_tx, ("global",), fix_global)
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
  """Trainable parameters of each network of the config's model (generator,
  discriminator, and the style encoder for style-conditioned generators),
  from shapes only (nothing is allocated). BatchNorm running statistics are
  not counted."""
  if is_cyclegan(config):
    from tp2p_jax.train.cyclegan_builders import cyclegan_param_counts
    return cyclegan_param_counts(config)
  g = generator_from_config(config)
  d = discriminator_from_config(config)
  s = config.image_size
  key = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  g_inputs = [jnp.zeros((1, s, s, 3), jnp.float32)]
  if uses_style(config):
    g_inputs.append(jnp.zeros((1, config.style.embedding_dim), jnp.float32))
  g_shapes = jax.eval_shape(lambda: g.init(key, *g_inputs, train=False))
  d_shapes = jax.eval_shape(lambda: d.init(key, jnp.zeros((1, s, s, 6)), train=False))
  counts = {"generator": count_params(g_shapes["params"]),
            "discriminator": count_params(d_shapes["params"])}
  if uses_style(config):
    enc = style_encoder_from_config(config)
    e = config.style.image_size
    e_shapes = jax.eval_shape(lambda: enc.init(key, jnp.zeros((1, e, e, 3)), train=False))
    counts["style_encoder"] = count_params(e_shapes["params"])
  return counts


@dataclasses.dataclass(frozen=True)
class GanParts:
  """Everything the GAN stage is built from, for the trainer, the benchmark
  and tests alike.

  Attributes:
    style_encoder: the frozen encoder of a style-conditioned generator; None
      for pix2pix / pix2pixHD (their states hold `style_variables = {}`).
    init: `init(raw_key, style_variables) -> TrainState` (jit-able).
    train_step: pure `train_step(state, batch) -> (state, metrics)`.
    generate: `generate(state, sketches, photos=None)` with the EMA
      generator; `photos` give the style and are ignored without one.
  """
  generator: nn.Module
  discriminator: nn.Module
  style_encoder: StyleEncoder | None
  schedule: optax.Schedule
  init: Callable[[jax.Array, Any], TrainState]
  train_step: Callable
  generate: Callable


def build_gan(config: ml_collections.ConfigDict, dtype: str | None = None) -> GanParts:
  """Networks, optimisers, objective and pure step functions of a config."""
  generator = generator_from_config(config, dtype)
  discriminator = discriminator_from_config(config, dtype)
  encoder = style_encoder_from_config(config) if uses_style(config) else None
  style_dim = config.style.embedding_dim if encoder is not None else None
  g_tx, d_tx, schedule = gan_optimizers(config)
  objective = objective_from_config(config, dtype)
  vgg_vars = None
  if objective.lambda_perceptual > 0:
    vgg_vars = vgg_variables_up_to(vgg.load_pretrained_vgg16(), objective.perceptual_layer)

  def init(key: jax.Array, style_variables: Any) -> TrainState:
    return create_train_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                              style_dim, style_variables)

  return GanParts(
      generator=generator, discriminator=discriminator, style_encoder=encoder,
      schedule=schedule, init=init,
      train_step=make_gan_train_step(generator, discriminator, encoder, g_tx, d_tx, objective,
                                     vgg_vars, schedule),
      generate=make_generate(generator, encoder))
