"""The parameter-initialisation key (tp2p_jax.core.init_rng): statistically
sound bits, deterministic, and init programs a fraction of threefry's size."""
from __future__ import annotations

import flax.linen as nn
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from scipy import stats

from tp2p_jax.core.init_rng import param_key


def _key(seed: int = 0) -> jax.Array:
  return param_key(jax.random.PRNGKey(seed))


def test_uniform_bits_pass_a_chi_square_test():
  u = np.asarray(jax.random.uniform(_key(), (200_000,)))
  counts = np.histogram(u, bins=64, range=(0.0, 1.0))[0]
  # p < 1e-6 would mean the hash is visibly non-uniform, not bad luck.
  assert stats.chisquare(counts).pvalue > 1e-6
  assert 0.0 <= u.min() and u.max() < 1.0


@pytest.mark.parametrize("bits_dtype", [jnp.uint8, jnp.uint16, jnp.uint32])
def test_every_bit_is_fair(bits_dtype):
  bits = np.asarray(jax.random.bits(_key(3), (50_000,), bits_dtype)).astype(np.uint64)
  width = np.dtype(bits_dtype).itemsize * 8
  ones = np.stack([(bits >> b) & 1 for b in range(width)]).mean(axis=1)
  # 5 standard errors of a fair coin over 50,000 draws.
  assert np.all(np.abs(ones - 0.5) < 5 * 0.5 / np.sqrt(50_000)), ones


def test_normal_draws_have_unit_moments_and_no_serial_correlation():
  x = np.asarray(jax.random.normal(_key(), (400_000,)), np.float64)
  se = 1 / np.sqrt(x.size)
  assert abs(x.mean()) < 5 * se
  assert abs(x.std() - 1) < 5 * se
  assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 * se


def test_fold_ins_and_splits_give_independent_streams():
  key = _key(1)
  n = 100_000
  streams = [jax.random.normal(jax.random.fold_in(key, i), (n,)) for i in range(3)]
  streams += [jax.random.normal(k, (n,)) for k in jax.random.split(key, 3)]
  streams.append(jax.random.normal(key, (n,)))
  x = np.asarray(jnp.stack(streams), np.float64)
  corr = np.corrcoef(x)[np.triu_indices(len(streams), 1)]
  assert np.all(np.abs(corr) < 5 / np.sqrt(n)), corr
  data = jax.random.key_data(jax.random.split(key, 1000))
  assert len({tuple(row) for row in np.asarray(data)}) == 1000


@given(seed=st.integers(0, 2**31 - 1))
def test_deterministic_in_the_seed_and_jit_equals_eager(seed):
  eager = jax.random.normal(_key(seed), (7, 5))
  jitted = jax.jit(lambda k: jax.random.normal(param_key(k), (7, 5)))(jax.random.PRNGKey(seed))
  np.testing.assert_array_equal(eager, jitted)
  other = jax.random.normal(_key(seed ^ 1), (7, 5))
  assert not np.array_equal(eager, other)


def test_typed_and_raw_keys_give_the_same_parameter_key():
  raw = jax.random.PRNGKey(5)
  typed = jax.random.wrap_key_data(raw)
  assert jax.random.key_impl(param_key(raw)) == jax.random.key_impl(param_key(typed))
  np.testing.assert_array_equal(jax.random.key_data(param_key(raw)),
                                jax.random.key_data(param_key(typed)))


def test_flax_initialisers_keep_their_scale():
  dense = nn.Dense(256).init({"params": _key()}, jnp.zeros((1, 512)))["params"]
  # lecun_normal: truncated normal with std 1/sqrt(fan_in).
  std = float(np.std(np.asarray(dense["kernel"])))
  assert abs(std - 1 / np.sqrt(512)) < 0.02 / np.sqrt(512)
  assert not np.any(np.asarray(dense["bias"]))


class _ManyLeaves(nn.Module):
  layers: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.layers):
      x = nn.Dense(8, kernel_init=nn.initializers.normal(0.02))(x)
    return x


def _init_program_size(make_key, layers: int) -> int:
  module = _ManyLeaves(layers)
  init = jax.jit(lambda k: module.init({"params": make_key(k)}, jnp.zeros((1, 8))))
  compiled = init.lower(jax.random.PRNGKey(0)).compile().as_text()
  return compiled.count(" fusion(")


def test_init_program_is_a_fraction_of_threefrys():
  """What made the reference model's init compile for minutes: kernels per
  parameter leaf (XLA compiles each fused kernel on its own). Counted, not
  timed: threefry needs about 13 per Dense layer, the hash one."""
  # Users compile with XLA's optimisations on (the suite turns most off).
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    ours = _init_program_size(param_key, 6) - _init_program_size(param_key, 2)
    threefry = _init_program_size(lambda k: k, 6) - _init_program_size(lambda k: k, 2)
  finally:
    jax.config.update("jax_disable_most_optimizations", before)
  assert ours * 3 < threefry, (ours, threefry)

