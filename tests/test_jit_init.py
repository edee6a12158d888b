"""`mesh.jit_init`: a state holding a value twice (an EMA that starts as the
parameters) compiles it once and still gets a buffer per leaf."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.core import mesh as mesh_lib


def _init(key: jax.Array, offset: jax.Array) -> dict:
  params = {"w": jax.random.normal(key, (3, 5)) + offset, "b": jnp.zeros((5,))}
  return {"params": params, "ema": params, "opt": jax.tree.map(jnp.zeros_like, params),
          "step": jnp.zeros((), jnp.int32)}


def test_duplicated_leaves_are_equal_copies_with_their_own_buffers():
  mesh = mesh_lib.make_mesh(jax.devices()[:2])
  state, shardings = mesh_lib.jit_init(_init, mesh, jax.random.PRNGKey(0), jnp.float32(1.0))
  expected = jax.jit(_init)(jax.random.PRNGKey(0), jnp.float32(1.0))
  assert jax.tree.structure(state) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, state, expected)
  assert jax.tree.structure(shardings) == jax.tree.structure(state)
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(mesh_lib.replicated(mesh), leaf.ndim)
    assert sharding == mesh_lib.replicated(mesh)
  buffers = [shard.data.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state)
             for shard in leaf.addressable_shards]
  assert len(set(buffers)) == len(buffers)


def test_traced_once_and_the_whole_state_can_be_donated():
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  traced = []

  def init(key):
    traced.append(1)
    return _init(key, jnp.float32(0.0))

  state, shardings = mesh_lib.jit_init(init, mesh, jax.random.PRNGKey(1))
  assert len(traced) == 1  # one trace: no eval_shape pass besides the compile
  # Every leaf its own buffer: donating the whole state is allowed.
  step = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0,
                 out_shardings=shardings)
  after = step(state)
  np.testing.assert_array_equal(after["ema"]["w"], after["params"]["w"])
