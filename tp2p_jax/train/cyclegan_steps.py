"""CycleGAN's losses and its pure, jit-able train step.

`make_cyclegan_train_step` returns `train_step(state, batch) -> (state,
metrics)`. As in the release, the generators are updated first (against the
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

from tp2p_jax import losses
from tp2p_jax.train.cyclegan_state import CycleGANState
from tp2p_jax.train.image_pool import query_image_pool
from tp2p_jax.train.state import ema_update, tree_l2_norm

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


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
                             ) -> Callable[[CycleGANState, Batch], tuple[CycleGANState, Metrics]]:
  """Builds the pure CycleGAN train step. Both generators share the
  `generator` module (different parameters), both discriminators the
  `discriminator` module."""
  mode = objective.gan_mode
  use_identity = objective.lambda_identity > 0

  def g_apply(params: Any, x: jax.Array, key: jax.Array) -> jax.Array:
    return generator.apply({"params": params}, x, train=True, rngs={"dropout": key})

  def d_apply(params: Any, x: jax.Array) -> jax.Array:
    return discriminator.apply({"params": params}, x, train=True)

  def train_step(state: CycleGANState, batch: Batch) -> tuple[CycleGANState, Metrics]:
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
