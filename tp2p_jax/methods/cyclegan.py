"""The `cyclegan` method: CycleGAN on unpaired domains A and B.

One stage in the workdir: two generators and two discriminators with the
release's losses (`tp2p_jax.methods.cyclegan_step`), Adam at a constant rate
then linearly to zero, history pools. Sample grids hold held-out rows
real_a | fake_b | real_b | fake_a (EMA generators); validation
(`eval_every`) scores G_AB on the held-out pairs of a source that has them
(`tp2p_jax.methods.validation`). A trained run translates
either way: its predictor has the directions "AtoB" (G_AB) and "BtoA" (G_BA).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tp2p_jax.core import optim, run_log
from tp2p_jax.core.checkpoints import keep_only
from tp2p_jax.core.run_dir import RunError, imported_fresh
from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import sources_from_config, unpaired_sources_from_config
from tp2p_jax.methods import registry, test_mode, validation
from tp2p_jax.core.stage import Jit, Stage
from tp2p_jax.methods.base import Method, Predictor
from tp2p_jax.methods.image_pool import create_image_pool
from tp2p_jax.methods.imported_weights import (ImportedWeights, ImportedWeightsError,
                                               check_rebuilds, fit, init_variables,
                                               variables_of)
from tp2p_jax.methods.cyclegan_step import (CycleGANObjective, CycleGANState,
                                            create_cyclegan_state, make_cyclegan_train_step)
from tp2p_jax.methods.networks import (count_params, discriminator_from_config,
                                       generator_from_config)

Direction = Literal["AtoB", "BtoA"]
DIRECTIONS: tuple[str, ...] = ("AtoB", "BtoA")
_PARAM_KEYS = {"AtoB": "ab", "BtoA": "ba"}


def generator_params(state_or_params: CycleGANState | Mapping[str, Any],
                     direction: Direction, use_ema: bool = True) -> Any:
  """The parameters of G_AB (direction "AtoB") or G_BA ("BtoA").

  Args:
    state_or_params: a `CycleGANState` (its EMA generators when `use_ema`,
      else the trained ones), or a mapping {"ab": params, "ba": params}.
    direction: "AtoB" or "BtoA".
    use_ema: with a state, pick the EMA weights.
  """
  if direction not in _PARAM_KEYS:
    raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
  key = _PARAM_KEYS[direction]
  if isinstance(state_or_params, CycleGANState):
    return (state_or_params.ema if use_ema else state_or_params.g_params)[key]
  return state_or_params[key]


def translate(generator: nn.Module, state_or_params: CycleGANState | Mapping[str, Any],
              images: jax.Array, direction: Direction, use_ema: bool = True) -> jax.Array:
  """Maps a batch of domain-A images to B ("AtoB") or B to A ("BtoA"); pure
  and jit-able (mark `generator`, `direction`, `use_ema` static).

  Args:
    generator: the CycleGAN generator module (`build(config).generator`).
    state_or_params: see `generator_params`.
    images: (B, H, W, 3) NHWC float in [-1, 1]; H, W multiples of 4.
    direction: "AtoB" or "BtoA".
    use_ema: with a state, translate with the EMA generator.

  Returns:
    (B, H, W, 3) float32 in [-1, 1], generator in eval mode.
  """
  params = generator_params(state_or_params, direction, use_ema)
  return generator.apply({"params": params}, images, train=False)


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


def param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
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
    init: `init(raw_key, handoff) -> CycleGANState` (jit-able; `handoff`
      unused).
    train_step: pure `train_step(state, batch, frozen) -> (state, metrics)`.
  """
  generator: nn.Module
  discriminator: nn.Module
  schedule: optax.Schedule
  init: Callable[[jax.Array, Any], CycleGANState]
  train_step: Callable


def build(config: ml_collections.ConfigDict, dtype: str | None = None) -> CycleGANParts:
  """Networks, optimisers and pure functions of a CycleGAN config."""
  generator = generator_from_config(config, dtype)
  if getattr(generator, "norm", "instance") == "batch":
    raise ValueError("CycleGAN here supports generator norm 'instance' or 'none'")
  discriminator = discriminator_from_config(config, dtype)
  if config.discriminator_kwargs.get("norm", "instance") == "batch":
    raise ValueError("CycleGAN here supports discriminator norm 'instance' or 'none'")
  g_tx, d_tx, schedule = cyclegan_optimizers(config)

  def init(key: jax.Array, handoff: Any = None) -> CycleGANState:
    del handoff
    return create_cyclegan_state(key, generator, discriminator, g_tx, d_tx, config.image_size,
                                 config.pool_size)

  return CycleGANParts(
      generator=generator, discriminator=discriminator, schedule=schedule, init=init,
      train_step=make_cyclegan_train_step(generator, discriminator, g_tx, d_tx,
                                          objective_from_config(config), schedule))


def _sources(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  return unpaired_sources_from_config(config.data, image_size=config.image_size,
                                      seed=config.seed)


def _stages(config: ml_collections.ConfigDict) -> list[Stage]:
  train_source, eval_source = _sources(config)
  parts = build(config)
  rows = pipeline.first_examples(eval_source, num_examples=config.num_samples,
                                 image_size=config.image_size)
  to_b = lambda state, x: translate(parts.generator, state, x, "AtoB")  # noqa: E731
  to_a = lambda state, x: translate(parts.generator, state, x, "BtoA")  # noqa: E731

  def samples(state: CycleGANState, jit: Jit) -> np.ndarray:
    batch = rows()
    fake_b = np.asarray(jit("translate_AtoB", to_b)(state, batch["real_a"]))
    fake_a = np.asarray(jit("translate_BtoA", to_a)(state, batch["real_b"]))
    return run_log.image_grid([batch["real_a"], fake_b, batch["real_b"], fake_a],
                              captions=["real_a", "fake_b", "real_b", "fake_a"])

  d = config.data
  validate = None
  if config.get("eval_every", 0) > 0:
    validate = validation.held_out_validation(
        _paired_held_out(config), num_examples=config.eval_examples,
        image_size=config.image_size, batch_size=config.batch_size,
        generate=lambda state, real_a, real_b, seeds: test_mode.apply_generator(
            parts.generator, {"params": generator_params(state, "AtoB", True)}, real_a, None,
            config.get("test_mode", "eval"), seeds),
        inception_weights=config.get("eval_inception_weights", ""),
        keep_best=config.get("keep_best", ""))
  return [Stage(
      name="cyclegan", directory="", init=parts.init, train_step=parts.train_step,
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train_source, global_batch_size=config.batch_size, image_size=config.image_size,
          seed=config.seed, augment=d.augment, worker_count=d.worker_count),
      batch_size=config.batch_size, seed=config.seed, total_steps=config.total_steps,
      log_every=config.log_every, checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints, samples=samples,
      sample_every=config.sample_every, validate=validate,
      eval_every=config.get("eval_every", 0), keep_best=config.get("keep_best", ""))]


def _paired_held_out(config: ml_collections.ConfigDict) -> Any:
  """The held-out A/B pairs validation scores G_AB on (those of `evaluate`);
  `RunError` for a data source of unpaired domains alone."""
  try:
    return sources_from_config(config.data, image_size=config.image_size,
                               seed=config.seed)[1]
  except ValueError as e:
    raise RunError(f"--config.eval_every={config.eval_every}: validation scores A->B "
                   f"against held-out pairs, and {e}; set --config.eval_every=0") from None


def predictor(config: ml_collections.ConfigDict, restore: Callable[[Any], Any],
              dtype: str | None = None) -> Predictor:
  """Both EMA generators of a restored CycleGAN state, by direction. Networks
  a run was imported without (`imported.fresh`) are left out."""
  parts = build(config, dtype)
  # Only the EMA generators are read (see paired_gan.predictor).
  state = restore(keep_only(jax.eval_shape(parts.init, jax.random.PRNGKey(0)), ("ema",)))
  directions = [d for d in DIRECTIONS
                if not (d == "BtoA" and "generator_b" in imported_fresh(config))]

  def initial_variables() -> dict[str, Any]:
    init = jax.jit(lambda key: parts.init(key).ema)(jax.random.PRNGKey(config.seed))
    return {d: {"params": init[_PARAM_KEYS[d]]} for d in directions}

  return Predictor(
      model_name=str(config.generator), image_size=int(config.image_size),
      generator=parts.generator,
      variables={d: {"params": state.ema[_PARAM_KEYS[d]]} for d in directions},
      initial_variables=initial_variables, prepare="pad")


def imported_state(config: ml_collections.ConfigDict, weights: ImportedWeights
                   ) -> CycleGANState:
  """The state from imported networks (`Method.imported_state`): G_AB / G_BA
  (imported, or the fresh run's), their EMAs equal to them, both
  discriminators, fresh optimiser states and empty image pools. Roles:
  "generator" is G_AB, "generator_b" G_BA, "discriminator" judges domain B
  (the release's netD_A), "discriminator_b" domain A."""
  try:
    parts = build(config)
  except ValueError as e:
    raise ImportedWeightsError(f"{e} (the imported networks use BatchNorm)") from None
  for role, module in weights.modules.items():
    built = parts.generator if role.startswith("generator") else parts.discriminator
    check_rebuilds(weights.labels[role], built, module)
  key = jax.random.PRNGKey(config.seed)
  abstract = jax.eval_shape(parts.init, key)
  rng, k_ab, k_ba, k_a, k_b = jax.random.split(key, 5)  # create_cyclegan_state's keys
  s = config.image_size
  image = jnp.zeros((1, s, s, 3), jnp.float32)

  def params(role: str, module: nn.Module, fresh_key: jax.Array, reference: Any) -> Any:
    imported = variables_of(weights, role)
    tree = (imported["params"] if imported is not None
            else init_variables(module, fresh_key, image, dropout=True)["params"])
    return fit(weights.labels[role], tree, reference)

  g = {"ab": params("generator", parts.generator, k_ab, abstract.g_params["ab"]),
       "ba": params("generator_b", parts.generator, k_ba, abstract.g_params["ba"])}
  d = {"a": params("discriminator_b", parts.discriminator, k_a, abstract.d_params["a"]),
       "b": params("discriminator", parts.discriminator, k_b, abstract.d_params["b"])}
  g_tx, d_tx, _ = cyclegan_optimizers(config)
  shape = (s, s, 3)
  state = CycleGANState(
      step=jnp.asarray(weights.step, jnp.int32), rng=rng, g_params=g,
      g_opt_state=jax.jit(g_tx.init)(g), d_params=d, d_opt_state=jax.jit(d_tx.init)(d), ema=g,
      pool_a=create_image_pool(config.pool_size, shape),
      pool_b=create_image_pool(config.pool_size, shape))
  return fit("train state", state, abstract)


METHOD = registry.register(Method(
    name="cyclegan", description="CycleGAN on unpaired domains A and B",
    stages=_stages, param_counts=param_counts, predictor=predictor,
    imported_state=imported_state))
