"""The fast convolution forms equal flax's convolutions, and the train step
compiles without the slow dilated-convolution gradients."""
from __future__ import annotations

import re

import flax.linen as nn
from hypothesis import given, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tp2p_jax.experiments import toycats
from tp2p_jax.models.convolution import Conv2D, ConvTransposeX2
from tp2p_jax.models.vgg import max_pool_2x2
from tp2p_jax.methods import paired_gan
from tp2p_jax.core import xla_flags


def _assert_same_module(reference: nn.Module, ours: nn.Module, x: jax.Array) -> None:
  """Same parameter tree and initial values, same outputs, same gradients
  with respect to parameters and input."""
  v_ref = reference.init(jax.random.PRNGKey(1), x)
  v_ours = ours.init(jax.random.PRNGKey(1), x)
  assert jax.tree.structure(v_ref) == jax.tree.structure(v_ours)
  for a, b in zip(jax.tree.leaves(v_ref), jax.tree.leaves(v_ours)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(ours.apply(v_ref, x), reference.apply(v_ref, x),
                             rtol=1e-5, atol=1e-5)

  def grads(module):
    return jax.grad(lambda v, x: jnp.sum(jnp.sin(module.apply(v, x))), argnums=(0, 1))(v_ref, x)
  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(reference))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,padding,spatial", [
    (4, ((2, 2), (2, 2)), (5, 7)),   # TransPix2Pix / pix2pix: ConvTranspose2d(4, 2, 1)
    (3, ((1, 2), (1, 2)), (4, 6)),   # ResNet generators: ConvTranspose2d(3, 2, 1, 1)
    (4, ((1, 1), (2, 2)), (4, 3)),   # asymmetric padding
    (2, ((1, 1), (1, 1)), (3, 3)),
])
def test_conv_transpose_x2_equals_flax(kernel, padding, spatial):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *spatial, 3))
  _assert_same_module(
      nn.ConvTranspose(5, (kernel, kernel), strides=(2, 2), padding=padding),
      ConvTransposeX2(5, kernel, padding), x)


def test_conv_transpose_x2_rejects_odd_outputs():
  x = jnp.zeros((1, 4, 4, 2))
  module = ConvTransposeX2(3, 3, ((1, 1), (1, 1)))  # 7x7 output
  with pytest.raises(ValueError, match="even output size"):
    module.init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("size,kernel,stride", [
    (5, 4, 1),    # 2x2 output: one matmul
    (18, 4, 2),   # 8x8 output: matmul
    (35, 4, 2),   # 16x16 output, stride 2, even kernel: space-to-depth
    (36, 4, 2),   # odd trailing row never read: cropped
    (20, 4, 1),   # plain convolution
    (21, 3, 2),   # odd kernel, stride 2: plain strided convolution
    (3, 4, 1),    # input smaller than the kernel: empty output, as nn.Conv
])
def test_conv2d_equals_flax_in_every_form(size, kernel, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size + 1, 3))
  _assert_same_module(nn.Conv(4, (kernel, kernel), strides=(stride, stride), padding="VALID"),
                      Conv2D(4, kernel, stride), x)


@given(h=st.integers(4, 24), w=st.integers(4, 24), c=st.integers(1, 4),
       kernel=st.sampled_from([1, 2, 3, 4]), stride=st.sampled_from([1, 2]),
       bias=st.booleans())
def test_conv2d_equals_flax_property(h, w, c, kernel, stride, bias):
  x = jax.random.normal(jax.random.PRNGKey(h * 31 + w), (1, h, w, c))
  _assert_same_module(
      nn.Conv(3, (kernel, kernel), strides=(stride, stride), padding="VALID", use_bias=bias),
      Conv2D(3, kernel, stride, use_bias=bias), x)


@given(h=st.integers(2, 9), w=st.integers(2, 9))
def test_max_pool_2x2_equals_reduce_window(h, w):
  # Distinct values: no ties, so the gradients must agree exactly too.
  x = jax.random.permutation(jax.random.PRNGKey(h * 10 + w),
                             jnp.arange(2 * h * w * 3, dtype=jnp.float32)).reshape(2, h, w, 3)
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
  np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
  cot = jax.random.normal(jax.random.PRNGKey(0), ref(x).shape)
  np.testing.assert_array_equal(jax.vjp(max_pool_2x2, x)[1](cot)[0], jax.vjp(ref, x)[1](cot)[0])


@pytest.mark.slow
def test_train_step_has_no_dilated_convolutions():
  """An input-dilated convolution (what XLA makes of a transposed conv and of
  a strided conv's input gradient) is the slow path on CPU; the generator,
  discriminator and VGG loss are written so that the whole train step has
  none."""
  config = toycats.get_config("tiny")
  parts = paired_gan.build(config)
  s = config.style.image_size
  style_vars = jax.eval_shape(lambda: parts.style_encoder.init(
      jax.random.PRNGKey(0), jnp.zeros((1, s, s, 3)), train=False))
  state = jax.eval_shape(parts.init, jax.random.PRNGKey(0), style_vars)
  size, b = config.image_size, config.batch_size
  batch = {"real_a": jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32),
           "real_b": jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32)}
  text = jax.jit(parts.train_step).lower(state, batch, parts.frozen).as_text()
  assert text.count("stablehlo.convolution") > 10
  dilations = re.findall(r"lhs_dilate = \[(\d+), (\d+)\]", text)
  assert {d for pair in dilations for d in pair} <= {"1"}


def test_default_xla_flags_never_override_the_user():
  name = "--xla_cpu_experimental_ynn_fusion_type"
  assert xla_flags.merged_xla_flags("") == " ".join(xla_flags.DEFAULT_XLA_FLAGS)
  mine = f"{name}=individual_dot,individual_convolution --xla_force_host_platform_device_count=2"
  assert xla_flags.merged_xla_flags(mine) == mine
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  value = xla_flags.set_default_xla_flags(env)
  assert env["XLA_FLAGS"] == value
  assert value.split()[0] == "--xla_force_host_platform_device_count=8"
  assert f"{name}=-individual_convolution" in value.split()
  assert xla_flags.set_default_xla_flags(env) == value  # idempotent
