"""The CycleGAN train state: two generators, two discriminators, their
optimiser states, the generators' EMAs and the two history pools, all in one
pytree so a checkpoint holds everything a run needs to continue exactly.

Naming: `g_params["ab"]` is G_AB: A -> B (the release's netG_A) and
`g_params["ba"]` is G_BA: B -> A (netG_B); `d_params["a"]` tells real from
generated domain-A images (the release's netD_B) and `d_params["b"]` does so
for domain B (netD_A).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from tp2p_jax.train.image_pool import ImagePool, create_image_pool

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
    variables = module.init({"params": key, "dropout": key}, image, train=False)
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
