"""Exponential moving averages of parameter trees, and tree norms.

EMA weights are an extra parameter tree in each method's train state,
updated inside the pure train step:

  ema <- decay * ema + (1 - decay) * new

`ema_half_life(decay)` gives the documented meaning of a decay: the number
of steps after which an old value's weight in the average halves.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Params = Any


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
