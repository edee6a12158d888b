"""Random keys for parameter initialisation: JAX's built-in `unsafe_rbg`.

Flax draws every parameter leaf from its own key: one `fold_in` of the
leaf's path, then the initialiser's random bits. With JAX's default
threefry each of those is 20 unrolled cipher rounds, so a model's init
program grows by a few hundred XLA instructions per leaf: the reference GAN
state (2,433 leaves) took 62-85 s to compile on a 2-core CPU for 2-3 s of
work. `unsafe_rbg` draws bits with XLA's RngBitGenerator and folds in and
splits by hashing, which is what initial weights need (independent,
uniformly distributed bits, not a cipher): 22-27 s for the same program
(benchmarks/PERFORMANCE.md, "Init keys"). Training randomness (dropout,
data augmentation, the state's `rng`) stays threefry.

Values are deterministic in the seed on a given backend and any process
or device count. RngBitGenerator's algorithm is the backend's default, so
a CPU and an accelerator initialise the same seed differently (as PyTorch
does); a run resumed or imported elsewhere carries its weights with it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

IMPL = "unsafe_rbg"


def param_key(key: jax.Array) -> jax.Array:
  """The parameter-initialisation key for `key` (a raw uint32[2] key from
  `jax.random.PRNGKey`, or a typed threefry key): an `unsafe_rbg` key made
  from its data the way `jax.random.key(seed, impl="unsafe_rbg")` makes one
  from a seed (the threefry key twice), so `param_key(PRNGKey(s))` equals
  `jax.random.key(s, impl="unsafe_rbg")`. Use it as the `params` rng of
  `Module.init`; jit-able."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  key = key.astype(jnp.uint32)
  return jax.random.wrap_key_data(jnp.concatenate([key, key]), impl=IMPL)
