"""The `paired_gan` method: conditional GANs on paired (sketch, photo) data,
TransPix2Pix (style-conditioned), pix2pix and pix2pixHD, chosen by
`config.generator` / `config.discriminator`.

Stages: a style-conditioned generator first gets its CosFace style encoder
(`<workdir>/style_encoder/`, see `tp2p_jax.methods.style_encoder`), whose
frozen variables the GAN stage receives and keeps in its state; pix2pix and
pix2pixHD have the GAN stage alone (`style_variables = {}`). The GAN stage
(`<workdir>/`) trains netG and netD with cGAN + lambda_l1 * L1 +
lambda_perceptual * VGG16 features (+ pix2pixHD's feature matching); its
sample grids hold held-out rows sketch | EMA output | target photo, and its
validation (`eval_every`) scores the EMA generator on held-out pairs
(`tp2p_jax.methods.validation`).
"""
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
from tp2p_jax.core import optim, run_log
from tp2p_jax.core.checkpoints import keep_only
from tp2p_jax.core.init_rng import param_key
from tp2p_jax.core.run_dir import imported_fresh
from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import sources_from_config
from tp2p_jax.methods import registry, validation, warm_start
from tp2p_jax.core.stage import Jit, Stage
from tp2p_jax.methods.base import Method, Predictor, encoder_outputs
from tp2p_jax.methods.imported_weights import (ImportedWeights, check_rebuilds, fit,
                                               init_variables, variables_of)
from tp2p_jax.methods.networks import (count_params, discriminator_from_config,
                                       generator_from_config, style_encoder_from_config)
from tp2p_jax.methods.paired_gan_step import (GanObjective, TrainState, create_train_state,
                                              make_gan_train_step, make_generate)
from tp2p_jax.methods.style_encoder import (STAGE_DIRECTORY, style_encoder_param_counts,
                                            style_encoder_stage, with_dataset_classes)
from tp2p_jax.models import vgg
from tp2p_jax.models.remat import check_remat


def remat_mode(config: ml_collections.ConfigDict) -> str:
  """`config.remat`, checked ("none" for a config from before the field)."""
  remat = config.get("remat", "none")
  check_remat(remat)
  return remat


def with_remat(generator: nn.Module, remat: str) -> nn.Module:
  """`generator` with its `remat` field set (`tp2p_jax.models.remat`).

  Raises:
    ValueError: `remat` is unknown, or is not "none" for a generator
      without that field.
  """
  check_remat(remat)
  if remat == "none":
    return generator
  if "remat" not in {f.name for f in dataclasses.fields(generator)}:
    raise ValueError(f"remat={remat!r} is not available for the {type(generator).__name__} "
                     "generator; set the config's remat field to 'none'")
  return generator.clone(remat=remat)


def objective_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                          ) -> GanObjective:
  """The generator objective; `dtype` (default: config.dtype) is the VGG16
  compute dtype, like the networks', and `config.remat` "blocks" also
  rematerialises VGG16."""
  return GanObjective(gan_mode=config.gan_mode, lambda_l1=config.lambda_l1,
                      lambda_perceptual=config.lambda_perceptual,
                      perceptual_layer=config.perceptual_layer,
                      lambda_feat=config.get("lambda_feat", 0.0), ema_decay=config.ema_decay,
                      perceptual_dtype=dtype or config.dtype,
                      perceptual_remat=remat_mode(config) == "blocks")


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


def frozen_inputs(objective: GanObjective) -> dict[str, Any] | None:
  """{"vgg": the pretrained VGG16 up to the perceptual layer}, or None when
  the objective has no perceptual term."""
  if objective.lambda_perceptual <= 0:
    return None
  return {"vgg": vgg.variables_up_to(vgg.load_pretrained_vgg16(), objective.perceptual_layer)}


@dataclasses.dataclass(frozen=True)
class GanParts:
  """Everything the GAN stage is built from, for the trainer, the benchmark
  and tests alike.

  Attributes:
    style_encoder: the frozen encoder of a style-conditioned generator; None
      for pix2pix / pix2pixHD (their states hold `style_variables = {}`).
    init: `init(raw_key, style_variables) -> TrainState` (jit-able).
    train_step: pure `train_step(state, batch, frozen) -> (state, metrics)`.
    frozen: what `train_step` takes as `frozen` (VGG16 variables or None).
    generate: `generate(state, sketches, photos=None)` with the EMA
      generator; `photos` give the style and are ignored without one.
  """
  generator: nn.Module
  discriminator: nn.Module
  style_encoder: nn.Module | None
  schedule: optax.Schedule
  init: Callable[[jax.Array, Any], TrainState]
  train_step: Callable
  frozen: Any
  generate: Callable


def build(config: ml_collections.ConfigDict, dtype: str | None = None) -> GanParts:
  """Networks, optimisers, objective and pure step functions of a config.
  `config.remat` applies to the generator and VGG16 (the train step's
  backward pass); inference and the parameters are the same either way."""
  generator = with_remat(generator_from_config(config, dtype), remat_mode(config))
  discriminator = discriminator_from_config(config, dtype)
  encoder = style_encoder_from_config(config) if models.takes_style(config.generator) else None
  style_dim = config.style.embedding_dim if encoder is not None else None
  g_tx, d_tx, schedule = gan_optimizers(config)
  objective = objective_from_config(config, dtype)

  def init(key: jax.Array, style_variables: Any) -> TrainState:
    return create_train_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                              style_dim, style_variables)

  return GanParts(
      generator=generator, discriminator=discriminator, style_encoder=encoder,
      schedule=schedule, init=init,
      train_step=make_gan_train_step(generator, discriminator, encoder, g_tx, d_tx, objective,
                                     schedule),
      frozen=frozen_inputs(objective), generate=make_generate(generator, encoder))


def fresh_style_variables(config: ml_collections.ConfigDict, key: jax.Array) -> Any:
  """Style-encoder variables drawn from `key` as the style stage draws them
  (`param_key`; under `jax.eval_shape`, their shapes), or {} for a generator
  without style input."""
  if not models.takes_style(config.generator):
    return {}
  encoder = style_encoder_from_config(config)
  e = config.style.image_size
  return dict(encoder.init({"params": param_key(key)}, jnp.zeros((1, e, e, 3)), train=False))


def state_shapes(config: ml_collections.ConfigDict) -> TrainState:
  """Abstract GAN `TrainState` of a config (shapes and dtypes only)."""
  generator = generator_from_config(config)
  discriminator = discriminator_from_config(config)
  g_tx, d_tx, _ = gan_optimizers(config)
  style_dim = config.style.embedding_dim if models.takes_style(config.generator) else None

  def init(key: jax.Array) -> TrainState:
    return create_train_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                              style_dim, fresh_style_variables(config, key))

  return jax.eval_shape(init, jax.random.PRNGKey(0))


def param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Trainable parameters of netG, netD and (style-conditioned generators)
  the style encoder, from shapes only. BatchNorm statistics not counted."""
  g = generator_from_config(config)
  d = discriminator_from_config(config)
  s = config.image_size
  key = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  g_inputs = [jnp.zeros((1, s, s, 3), jnp.float32)]
  if models.takes_style(config.generator):
    g_inputs.append(jnp.zeros((1, config.style.embedding_dim), jnp.float32))
  g_shapes = jax.eval_shape(lambda: g.init(key, *g_inputs, train=False))
  d_shapes = jax.eval_shape(lambda: d.init(key, jnp.zeros((1, s, s, 6)), train=False))
  counts = {"generator": count_params(g_shapes["params"]),
            "discriminator": count_params(d_shapes["params"])}
  if models.takes_style(config.generator):
    counts.update(style_encoder_param_counts(config))
  return counts


def gan_stage(config: ml_collections.ConfigDict, train_source: Any, eval_source: Any
              ) -> Stage:
  """The GAN stage in the workdir itself; `init` takes the style encoder's
  variables ({} for unconditioned generators) from the previous stage."""
  gan = build(config)
  rows = pipeline.first_examples(eval_source, num_examples=config.num_samples,
                                 image_size=config.image_size)

  def samples(state: TrainState, jit: Jit) -> np.ndarray:
    batch = rows()
    fake = np.asarray(jit("generate", gan.generate)(state, batch["real_a"], batch["real_b"]))
    return run_log.image_grid([batch["real_a"], fake, batch["real_b"]],
                              captions=["real_a", "fake_b", "real_b"])

  on_fresh_start = None
  if config.get("init_from", ""):
    # pix2pixHD stage 2: G1 from the stage-1 run (a fresh run only).
    run_dir = config.init_from
    on_fresh_start = lambda state, mesh: warm_start.init_from_run(  # noqa: E731
        state, run_dir, mesh, state_shapes, subtree="global")

  validate = None
  if config.get("eval_every", 0) > 0:
    encoder = gan.style_encoder
    validate = validation.held_out_validation(
        eval_source, num_examples=config.eval_examples, image_size=config.image_size,
        batch_size=config.batch_size,
        generate=make_generate(gan.generator, encoder, config.get("test_mode", "eval")),
        classify=None if encoder is None else (
            lambda state, images: encoder_outputs(encoder, state.style_variables,
                                                  images)["cosine"]),
        inception_weights=config.get("eval_inception_weights", ""),
        keep_best=config.get("keep_best", ""))

  return Stage(
      name=config.generator, directory="", init=gan.init, train_step=gan.train_step,
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train_source, global_batch_size=config.batch_size, image_size=config.image_size,
          seed=config.seed, augment=config.data.augment, worker_count=config.data.worker_count),
      batch_size=config.batch_size, seed=config.seed, total_steps=config.total_steps,
      log_every=config.log_every, checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints, frozen=gan.frozen, samples=samples,
      sample_every=config.sample_every, on_fresh_start=on_fresh_start, validate=validate,
      eval_every=config.get("eval_every", 0), keep_best=config.get("keep_best", ""))


def _stages(config: ml_collections.ConfigDict) -> list[Stage]:
  train_source, eval_source = sources_from_config(config.data, image_size=config.image_size,
                                                  seed=config.seed)
  stages = []
  if models.takes_style(config.generator):
    stages.append(style_encoder_stage(config, train_source, eval_source, STAGE_DIRECTORY))
  return stages + [gan_stage(config, train_source, eval_source)]


def _prepare_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  if models.takes_style(config.generator):
    return with_dataset_classes(config)
  return config


def predictor(config: ml_collections.ConfigDict, restore: Callable[[Any], Any],
              dtype: str | None = None) -> Predictor:
  """The EMA generator (and frozen style encoder) of a restored GAN state."""
  generator = generator_from_config(config, dtype)
  # Only what inference runs is read: D, the optimisers and the raw
  # generator stay on disk.
  state = restore(keep_only(state_shapes(config), ("ema", "g"), ("style_variables",)))
  conditioned = models.takes_style(config.generator)
  style_variables = dict(state.style_variables)

  def initial_variables() -> dict[str, Any]:
    discriminator = discriminator_from_config(config)
    g_tx, d_tx, _ = gan_optimizers(config)
    style_dim = config.style.embedding_dim if conditioned else None

    @jax.jit
    def init(key: jax.Array) -> Any:
      return create_train_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                                style_dim, style_variables).ema["g"]

    return {"AtoB": dict(init(jax.random.PRNGKey(config.seed)))}

  return Predictor(
      model_name=str(config.generator), image_size=int(config.image_size),
      generator=generator, variables={"AtoB": dict(state.ema["g"])},
      initial_variables=initial_variables,
      style_dim=int(config.style.embedding_dim) if conditioned else None,
      # A run imported without its encoder has random encoder weights: it
      # takes embeddings, but cannot embed photos.
      style_encoder=(style_encoder_from_config(config)
                     if conditioned and "style_encoder" not in imported_fresh(config) else None),
      style_variables=style_variables, prepare="hand_drawn")


def imported_state(config: ml_collections.ConfigDict, weights: ImportedWeights) -> TrainState:
  """The GAN stage's state from imported networks (`Method.imported_state`):
  the imported generator as G and EMA G, the discriminator (imported, or
  initialised as a fresh run would), the style encoder (imported, or
  initialised), fresh optimiser states."""
  generator = generator_from_config(config)
  discriminator = discriminator_from_config(config)
  labels = weights.labels
  check_rebuilds(labels["generator"], generator, weights.modules["generator"])
  if "discriminator" in weights.modules:
    check_rebuilds(labels["discriminator"], discriminator, weights.modules["discriminator"])
  abstract = state_shapes(config)
  g_tx, d_tx, _ = gan_optimizers(config)
  # The keys of create_train_state, so a fresh network is the one a run of
  # this config starts from.
  rng, _, d_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed), 4)
  s = config.image_size
  g = fit(labels["generator"], variables_of(weights, "generator"), abstract.ema["g"])
  d = variables_of(weights, "discriminator")
  if d is None:
    d = init_variables(discriminator, d_rng, jnp.zeros((1, s, s, 6), jnp.float32))
    d = {"params": d["params"], "batch_stats": d.get("batch_stats", {})}
  d = fit(labels["discriminator"], d, abstract.ema["d"])
  style_variables: Any = {}
  if models.takes_style(config.generator):
    encoder = style_encoder_from_config(config)
    style_variables = variables_of(weights, "style_encoder")
    if style_variables is None:
      # The key of create_style_state: a stage 1 of no steps.
      _, e_rng = jax.random.split(jax.random.PRNGKey(config.seed))
      e = config.style.image_size
      style_variables = init_variables(encoder, e_rng, jnp.zeros((1, e, e, 3)))
    else:
      check_rebuilds(labels["style_encoder"], encoder, weights.modules["style_encoder"])
    style_variables = fit(labels["style_encoder"], style_variables, abstract.style_variables)
  state = TrainState(
      step=jnp.asarray(weights.step, jnp.int32), rng=rng,
      g_params=g["params"], g_batch_stats=g["batch_stats"],
      g_opt_state=jax.jit(g_tx.init)(g["params"]),  # one program, not an op per leaf
      d_params=d["params"], d_batch_stats=d["batch_stats"],
      d_opt_state=jax.jit(d_tx.init)(d["params"]),
      ema={"g": g, "d": d}, style_variables=style_variables)
  return fit("train state", state, abstract)


METHOD = registry.register(Method(
    name="paired_gan",
    description="conditional GANs on paired data: TransPix2Pix, pix2pix, pix2pixHD",
    stages=_stages, param_counts=param_counts, predictor=predictor,
    prepare_config=_prepare_config, imported_state=imported_state))
