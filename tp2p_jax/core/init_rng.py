"""Random keys for parameter initialisation whose programs compile in a
fraction of threefry's time.

Flax draws every parameter leaf from its own key: one `fold_in` of the leaf's
path, then the initialiser's random bits. With JAX's default threefry each of
those is 20 unrolled cipher rounds, so a model's init program grows by a few
hundred XLA instructions per leaf: for the reference GAN state (2,433 leaves)
that was 76 s of compilation on a 2-core CPU for 3 s of work. Initial weights
need independent, uniformly distributed bits, not a cipher, so `param_key`
wraps the same key in `HASH_IMPL`, a counter-based generator built on the
`lowbias32` integer hash (two multiply-xorshift rounds per word): about a
tenth of the instructions per leaf. Training randomness (dropout, data
augmentation, the state's `rng`) stays threefry.

Values are deterministic in the seed on every backend and process count
(integer arithmetic only).

Why not JAX's own cheap implementations: measured side by side on a quiet
2-core CPU (benchmarks/PERFORMANCE.md, "Init keys"), the reference GAN
state's init compiles in 7.5-7.8 s with this key, 15.7-16.7 s with
`unsafe_rbg`, 24.1 s with `rbg` and 35.0 s with threefry; the tiny state's
(with `fast_compile`) in 1.6 s against `unsafe_rbg`'s 5.2 s. `unsafe_rbg`'s
bits also depend on the backend's RngBitGenerator, so a CPU and an
accelerator would initialise the same seed differently.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl

# Odd constants from lowbias32 (C. Wellons, "Prospecting for hash functions")
# and the golden ratio; `_WORD_SALT` separates a key's bit stream from its
# fold-ins and splits.
_M1, _M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
GOLDEN = np.uint32(0x9E3779B9)
_WORD_SALT, _FOLD_SALT, _SPLIT_SALT = (np.uint32(0x27D4EB2F), np.uint32(0x165667B1),
                                       np.uint32(0x5BD1E995))


def lowbias32(x: jax.Array) -> jax.Array:
  """lowbias32: a bijective avalanche of uint32 words (also the test-time
  dropout masks' hash, `tp2p_jax.methods.test_mode`)."""
  x = x ^ (x >> 16)
  x = x * _M1
  x = x ^ (x >> 15)
  x = x * _M2
  return x ^ (x >> 16)


def _hash(key: jax.Array, counter: jax.Array) -> jax.Array:
  """uint32 words from a (2,) uint32 key and uint32 counters (any shape)."""
  return lowbias32(lowbias32(counter * GOLDEN + key[0]) ^ key[1])


def _seed(seed: jax.Array) -> jax.Array:
  s = lax.convert_element_type(seed, jnp.uint32)
  return jnp.stack([jnp.zeros((), jnp.uint32), s])


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  n = int(np.prod(shape))
  counters = lax.iota(jnp.uint32, 2 * n) + _SPLIT_SALT
  return _hash(key, counters).reshape(*shape, 2)


def _fold_in(key: jax.Array, data: jax.Array) -> jax.Array:
  d = lax.convert_element_type(data, jnp.uint32) ^ _FOLD_SALT
  return _hash(key, jnp.stack([d, ~d]))


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
  n = int(np.prod(shape))
  words_per_value = 2 if bit_width == 64 else 1
  words = _hash(key, lax.iota(jnp.uint32, n * words_per_value) + _WORD_SALT)
  if bit_width == 64:
    pairs = words.reshape(n, 2).astype(jnp.uint64)
    return ((pairs[:, 0] << 32) | pairs[:, 1]).reshape(shape)
  dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width]
  # High bits: the better-mixed ones of a multiply-xorshift hash.
  return (words >> (32 - bit_width)).astype(dtype).reshape(shape)


HASH_IMPL = define_prng_impl(key_shape=(2,), seed=_seed, split=_split,
                             random_bits=_random_bits, fold_in=_fold_in,
                             name="tp2p_jax_init_hash", tag="tp2p_hash")


def param_key(key: jax.Array) -> jax.Array:
  """The parameter-initialisation key for `key` (a raw uint32[2] key from
  `jax.random.PRNGKey`, or a typed threefry key): its data as a `HASH_IMPL`
  key. Use it as the `params` rng of `Module.init`; jit-able."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return jax.random.wrap_key_data(key.astype(jnp.uint32), impl=HASH_IMPL)
