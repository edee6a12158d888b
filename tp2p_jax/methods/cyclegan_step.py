"""CycleGAN's train state, losses and pure, jit-able train step.

The state holds two generators, two discriminators, their optimiser states,
the generators' EMAs and the two history pools, all in one pytree, so a
checkpoint holds everything a run needs to continue exactly. Naming:
`g_params["ab"]` is G_AB: A -> B (the release's netG_A) and `g_params["ba"]`
is G_BA: B -> A (netG_B); `d_params["a"]` tells real from generated domain-A
images (the release's netD_B) and `d_params["b"]` does so for domain B
(netD_A).

`make_cyclegan_train_step` returns `train_step(state, batch, frozen) ->
(state, metrics)` (`frozen` unused). As in the release, the generators are updated first (against the
current discriminators) on

  GAN(D_B(G_AB(a))) + GAN(D_A(G_BA(b)))
  + lambda_cycle * (|G_BA(G_AB(a)) - a| + |G_AB(G_BA(b)) - b|)
  + lambda_identity * lambda_cycle * (|G_BA(a) - a| + |G_AB(b) - b|),

then each discriminator on real images against generated ones drawn through
its history pool. Batches are dicts of NHWC float32 arrays in [-1, 1]:
`real_a` (domain A) and `real_b` (domain B), unpaired; other keys are
ignored.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from tp2p_jax import losses
from tp2p_jax.core.ema import ema_update, tree_l2_norm
from tp2p_jax.core.init_rng import param_key
from tp2p_jax.methods.image_pool import ImagePool, create_image_pool, query_image_pool

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
Params = Any


@struct.dataclass
class CycleGANState:
  """Attributes:
    step: int32 scalar, completed updates.
    rng: raw uint32 PRNG key; per-step keys are `fold_in(rng, step)`.
    g_params: {"ab": G_AB params, "ba": G_BA params}; one optimiser state
      `g_opt_state` over both (the release chains their parameters).
    d_params: {"a": D_A params, "b": D_B params}; `d_opt_state` over both.
    ema: {"ab", "ba"}: EMAs of the generator parameters.
    pool_a, pool_b: histories of generated A (fed to D_A) and B (to D_B).
  """
  step: jax.Array
  rng: jax.Array
  g_params: dict[str, Params]
  g_opt_state: Any
  d_params: dict[str, Params]
  d_opt_state: Any
  ema: dict[str, Params]
  pool_a: ImagePool
  pool_b: ImagePool


def create_cyclegan_state(rng: jax.Array, generator: nn.Module, discriminator: nn.Module,
                          g_tx: optax.GradientTransformation,
                          d_tx: optax.GradientTransformation, image_size: int,
                          pool_size: int, channels: int = 3) -> CycleGANState:
  """Initialises both generators and discriminators (N(0, 0.02) weights),
  their optimiser states, EMAs equal to the initial generators, and empty
  pools of `pool_size` (S, S, channels) images. `rng` is a raw uint32 key;
  jit-able."""
  rng, k_ab, k_ba, k_a, k_b = jax.random.split(rng, 5)
  image = jnp.zeros((1, image_size, image_size, channels), jnp.float32)

  def params_of(module: nn.Module, key: jax.Array) -> Params:
    variables = module.init({"params": param_key(key), "dropout": key}, image, train=False)
    if "batch_stats" in variables:
      raise ValueError("CycleGAN networks must not use batch norm here; use norm='instance'")
    return variables["params"]

  g_params = {"ab": params_of(generator, k_ab), "ba": params_of(generator, k_ba)}
  d_params = {"a": params_of(discriminator, k_a), "b": params_of(discriminator, k_b)}
  shape = (image_size, image_size, channels)
  return CycleGANState(
      step=jnp.zeros((), jnp.int32), rng=rng,
      g_params=g_params, g_opt_state=g_tx.init(g_params),
      d_params=d_params, d_opt_state=d_tx.init(d_params),
      ema=g_params,
      pool_a=create_image_pool(pool_size, shape), pool_b=create_image_pool(pool_size, shape))


@dataclasses.dataclass(frozen=True)
class CycleGANObjective:
  """Attributes:
    gan_mode: "lsgan" (the release), "vanilla" or "hinge".
    lambda_cycle: weight of each cycle-consistency L1 term (release: 10).
    lambda_identity: identity-loss weight relative to lambda_cycle (release:
      0.5, i.e. 5 * L1(G_AB(b), b) and 5 * L1(G_BA(a), a)); 0 disables it.
    ema_decay: per-step decay of the generator EMAs.
  """
  gan_mode: str = "lsgan"
  lambda_cycle: float = 10.0
  lambda_identity: float = 0.5
  ema_decay: float = 0.999


def cycle_loss(real: jax.Array, reconstructed: jax.Array) -> jax.Array:
  """Cycle-consistency L1 |F(G(x)) - x|, mean over all elements (unweighted);
  zero exactly when the two mappings invert each other on `real`."""
  return losses.l1_loss(reconstructed, real)


def identity_loss(real: jax.Array, mapped: jax.Array) -> jax.Array:
  """Identity L1 |G(y) - y| for y already in G's output domain (unweighted)."""
  return losses.l1_loss(mapped, real)


def make_cyclegan_train_step(generator: nn.Module, discriminator: nn.Module,
                             g_tx: optax.GradientTransformation,
                             d_tx: optax.GradientTransformation,
                             objective: CycleGANObjective,
                             lr_schedule: optax.Schedule | None = None
                             ) -> Callable[[CycleGANState, Batch, Any],
                                           tuple[CycleGANState, Metrics]]:
  """Builds the pure CycleGAN train step. Both generators share the
  `generator` module (different parameters), both discriminators the
  `discriminator` module."""
  mode = objective.gan_mode
  use_identity = objective.lambda_identity > 0

  def g_apply(params: Any, x: jax.Array, key: jax.Array) -> jax.Array:
    return generator.apply({"params": params}, x, train=True, rngs={"dropout": key})

  def d_apply(params: Any, x: jax.Array) -> jax.Array:
    return discriminator.apply({"params": params}, x, train=True)

  def train_step(state: CycleGANState, batch: Batch, frozen: Any = None
                 ) -> tuple[CycleGANState, Metrics]:
    del frozen
    rng = jax.random.fold_in(state.rng, state.step)
    k_g, k_pool_a, k_pool_b = jax.random.split(rng, 3)
    real_a, real_b = batch["real_a"], batch["real_b"]
    keys = jax.random.split(k_g, 6)

    def g_loss_fn(g_params):
      fake_b = g_apply(g_params["ab"], real_a, keys[0])
      rec_a = g_apply(g_params["ba"], fake_b, keys[1])
      fake_a = g_apply(g_params["ba"], real_b, keys[2])
      rec_b = g_apply(g_params["ab"], fake_a, keys[3])
      g_gan_b = losses.generator_gan_loss(d_apply(state.d_params["b"], fake_b), mode)
      g_gan_a = losses.generator_gan_loss(d_apply(state.d_params["a"], fake_a), mode)
      cycle_a, cycle_b = cycle_loss(real_a, rec_a), cycle_loss(real_b, rec_b)
      if use_identity:
        idt_b = identity_loss(real_b, g_apply(g_params["ab"], real_b, keys[4]))
        idt_a = identity_loss(real_a, g_apply(g_params["ba"], real_a, keys[5]))
      else:
        idt_a = idt_b = jnp.float32(0.0)
      lc = objective.lambda_cycle
      total = (g_gan_a + g_gan_b + lc * (cycle_a + cycle_b)
               + objective.lambda_identity * lc * (idt_a + idt_b))
      parts = {"g_gan_a": g_gan_a, "g_gan_b": g_gan_b, "cycle_a": cycle_a,
               "cycle_b": cycle_b, "idt_a": idt_a, "idt_b": idt_b}
      return total, (fake_a, fake_b, parts)

    (g_loss, (fake_a, fake_b, parts)), g_grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(state.g_params)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    pool_a, seen_fake_a = query_image_pool(state.pool_a, fake_a, k_pool_a)
    pool_b, seen_fake_b = query_image_pool(state.pool_b, fake_b, k_pool_b)

    def d_loss_fn(d_params):
      real_logits_a, fake_logits_a = d_apply(d_params["a"], real_a), d_apply(d_params["a"],
                                                                             seen_fake_a)
      real_logits_b, fake_logits_b = d_apply(d_params["b"], real_b), d_apply(d_params["b"],
                                                                             seen_fake_b)
      d_a = losses.discriminator_loss(real_logits_a, fake_logits_a, mode)
      d_b = losses.discriminator_loss(real_logits_b, fake_logits_b, mode)
      return d_a + d_b, {"d_a": d_a, "d_b": d_b,
                         "d_real_a": jnp.mean(real_logits_a), "d_fake_a": jnp.mean(fake_logits_a),
                         "d_real_b": jnp.mean(real_logits_b), "d_fake_b": jnp.mean(fake_logits_b)}

    (d_loss, d_parts), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state,
        d_params=d_params, d_opt_state=d_opt_state,
        ema=ema_update(state.ema, g_params, objective.ema_decay),
        pool_a=pool_a, pool_b=pool_b)
    metrics = {"d_loss": d_loss, "g_loss": g_loss, **parts, **d_parts,
               "g_grad_norm": optax.tree.norm(g_grads),
               "d_grad_norm": optax.tree.norm(d_grads),
               "g_param_norm": tree_l2_norm(g_params), "d_param_norm": tree_l2_norm(d_params)}
    if lr_schedule is not None:
      metrics["lr"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
    return new_state, metrics

  return train_step
