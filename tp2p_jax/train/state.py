"""Train state pytrees and the EMA update.

Everything a run needs to continue bit-exactly lives in these pytrees (no
Python-side state): step, RNG key, both networks' parameters, BatchNorm
statistics and optimiser states, and the EMA copies of G and D.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Params = Any


@struct.dataclass
class TrainState:
  """The GAN train state (stage 2).

  Attributes:
    step: int32 scalar, number of completed updates.
    rng: raw uint32 PRNG key; per-step keys are `fold_in(rng, step)`.
    g_params, g_batch_stats, g_opt_state: generator (netG).
    d_params, d_batch_stats, d_opt_state: discriminator (netD).
    ema: {"g": {"params", "batch_stats"}, "d": {"params", "batch_stats"}},
      the exponential moving averages; EMA BatchNorm statistics are carried
      explicitly beside the EMA weights.
    style_variables: the frozen style encoder's variables (inputs, not
      trained here); `{}` for generators without a style input (pix2pix,
      pix2pixHD).
  """
  step: jax.Array
  rng: jax.Array
  g_params: Params
  g_batch_stats: Params
  g_opt_state: Any
  d_params: Params
  d_batch_stats: Params
  d_opt_state: Any
  ema: dict[str, dict[str, Params]]
  style_variables: Params


@struct.dataclass
class StyleTrainState:
  """The style-encoder train state (stage 1)."""
  step: jax.Array
  rng: jax.Array
  params: Params
  batch_stats: Params
  opt_state: Any


def ema_update(ema: Params, new: Params, decay: float | jax.Array) -> Params:
  """ema <- decay * ema + (1 - decay) * new on floating-point leaves; other
  leaves (integer counters) take the new value. decay=0 tracks `new`
  exactly, decay=1 freezes `ema`."""
  def one(e: jax.Array, n: jax.Array) -> jax.Array:
    if not jnp.issubdtype(n.dtype, jnp.floating):
      return n
    return (decay * e + (1.0 - decay) * n).astype(n.dtype)
  return jax.tree.map(one, ema, new)


def ema_half_life(decay: float) -> float:
  """Steps after which an old value's weight in the EMA halves."""
  if not 0.0 < decay < 1.0:
    return math.inf if decay >= 1.0 else 0.0
  return math.log(0.5) / math.log(decay)


def tree_l2_norm(tree: Params) -> jax.Array:
  """Global l2 norm over all floating leaves, in float32."""
  leaves = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.sqrt(sum(leaves)) if leaves else jnp.float32(0.0)


def create_train_state(rng: jax.Array, generator: Any, discriminator: Any,
                       g_tx: Any, d_tx: Any, image_size: int, style_dim: int | None,
                       style_variables: Params, in_channels: int = 3,
                       out_channels: int = 3) -> TrainState:
  """Initialises G and D (N(0, 0.02)), their optimiser states, and EMAs equal
  to the initial weights. `style_dim` None: G takes no style (G(real_a,
  train)). `rng` is a raw uint32 key; jit-able."""
  rng, g_rng, d_rng, drop_rng = jax.random.split(rng, 4)
  sketch = jnp.zeros((1, image_size, image_size, in_channels), jnp.float32)
  photo = jnp.zeros((1, image_size, image_size, out_channels), jnp.float32)
  g_inputs = (sketch,) if style_dim is None else (sketch, jnp.zeros((1, style_dim), jnp.float32))
  g_vars = generator.init({"params": g_rng, "dropout": drop_rng}, *g_inputs, train=False)
  d_vars = discriminator.init({"params": d_rng}, jnp.concatenate([sketch, photo], -1),
                              train=False)
  g_params, g_bs = g_vars["params"], g_vars.get("batch_stats", {})
  d_params, d_bs = d_vars["params"], d_vars.get("batch_stats", {})
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=rng,
      g_params=g_params, g_batch_stats=g_bs, g_opt_state=g_tx.init(g_params),
      d_params=d_params, d_batch_stats=d_bs, d_opt_state=d_tx.init(d_params),
      ema={"g": {"params": g_params, "batch_stats": g_bs},
           "d": {"params": d_params, "batch_stats": d_bs}},
      style_variables=style_variables)


def create_style_state(rng: jax.Array, style_encoder: Any, tx: Any) -> StyleTrainState:
  """Initialises the style encoder (He-normal) and its optimiser state."""
  rng, init_rng = jax.random.split(rng)
  size = style_encoder.image_size
  variables = style_encoder.init({"params": init_rng},
                                 jnp.zeros((1, size, size, 3), jnp.float32), train=False)
  return StyleTrainState(step=jnp.zeros((), jnp.int32), rng=rng,
                         params=variables["params"],
                         batch_stats=variables.get("batch_stats", {}),
                         opt_state=tx.init(variables["params"]))
