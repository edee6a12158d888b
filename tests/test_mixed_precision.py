"""bfloat16 mixed precision: bfloat16 compute, float32 everything kept.

The switch is the config's `dtype` (or `build_gan(config, dtype)`):
networks and the VGG16 loss compute in bfloat16, while parameters, Adam
moments, BatchNorm statistics, EMAs and every loss reduction stay float32.
"bfloat16" does so on GPU and TPU and is float32 on a CPU backend, where
XLA has no bfloat16 convolutions (`layers.compute_dtype`); the numerics
tests below use "bfloat16_everywhere", bfloat16 on the CPU too.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tp2p_jax.experiments import toycats
from tp2p_jax import models
from tp2p_jax.methods import paired_gan
from tp2p_jax.models.layers import compute_dtype

_STEPS = 3
# bfloat16 keeps 8 bits of mantissa (relative rounding 2**-9 = 0.2%); through
# a dozen layers, three optimiser steps and the losses' reductions the
# largest disagreement measured here is 1.5% (d_loss, third step).
_RTOL = 0.05


def _run(config, dtype: str):
  parts = paired_gan.build(config, dtype)
  s = config.style.image_size
  style_vars = parts.style_encoder.init(jax.random.PRNGKey(1), jnp.zeros((1, s, s, 3)),
                                        train=False)
  state = jax.jit(parts.init)(jax.random.PRNGKey(0), style_vars)
  rng = np.random.default_rng(0)
  size = config.image_size
  # Smooth images (a low-frequency field) rather than white noise, so that
  # the L1 and VGG terms measure something image-like.
  grid = np.linspace(0, np.pi, size)
  base = np.sin(grid[:, None] + grid[None, :])[None, :, :, None]
  phases = rng.uniform(0, 2, (config.batch_size, 1, 1, 3))
  batch = {"real_a": np.cos(base * 3 + phases).astype(np.float32),
           "real_b": np.sin(base * 2 + phases).astype(np.float32) * 0.9,
           "label": np.arange(config.batch_size, dtype=np.int32) % 3}
  step = jax.jit(parts.train_step)
  history = []
  for _ in range(_STEPS):
    state, metrics = step(state, batch, parts.frozen)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return parts, state, history


@pytest.fixture(scope="module")
def runs():
  config = toycats.get_config("tiny")
  assert config.lambda_perceptual > 0  # the VGG16 term is part of what is compared
  return {dtype: _run(config, dtype) for dtype in ("float32", "bfloat16_everywhere")}


@pytest.mark.slow
def test_bfloat16_losses_agree_with_float32(runs):
  _, _, h32 = runs["float32"]
  _, _, h16 = runs["bfloat16_everywhere"]
  for step, (m32, m16) in enumerate(zip(h32, h16)):
    for name in ("d_loss", "g_loss", "g_gan", "g_l1", "g_perceptual"):
      assert np.isfinite(m16[name]), (step, name)
      np.testing.assert_allclose(m16[name], m32[name], rtol=_RTOL,
                                 err_msg=f"step {step} {name}")


@pytest.mark.slow
def test_bfloat16_actually_computes_in_bfloat16(runs):
  parts16, state16, _ = runs["bfloat16_everywhere"]
  parts32, state32, _ = runs["float32"]
  assert parts16.generator.dtype == jnp.bfloat16
  assert parts16.discriminator.dtype == jnp.bfloat16
  # Different arithmetic, so different parameters after the same steps.
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                      state16.g_params, state32.g_params)
  assert max(jax.tree.leaves(diff)) > 0


@pytest.mark.slow
def test_bfloat16_keeps_float32_state(runs):
  _, state16, _ = runs["bfloat16_everywhere"]
  tree = {"g_params": state16.g_params, "d_params": state16.d_params,
          "g_batch_stats": state16.g_batch_stats, "d_batch_stats": state16.d_batch_stats,
          "g_opt_state": state16.g_opt_state, "d_opt_state": state16.d_opt_state,
          "ema": state16.ema}
  floats = {leaf.dtype for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)}
  assert floats == {jnp.dtype(jnp.float32)}


def test_bfloat16_name_is_float32_on_cpu_only():
  assert compute_dtype("bfloat16", "cpu") == jnp.float32
  for platform in ("gpu", "tpu"):
    assert compute_dtype("bfloat16", platform) == jnp.bfloat16
  assert compute_dtype("bfloat16_everywhere", "cpu") == jnp.bfloat16
  assert compute_dtype("float32", "gpu") == jnp.float32
  assert compute_dtype("float16", "cpu") == jnp.float16
  # A dtype, not a name, is taken as given whatever the platform.
  assert compute_dtype(jnp.bfloat16, "cpu") == jnp.bfloat16
  assert models.resolve_dtype("bfloat16", "cpu") == jnp.float32
  with pytest.raises(ValueError, match="unknown dtype"):
    compute_dtype("bf16")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU policy")
def test_bfloat16_on_cpu_builds_the_float32_networks():
  config = toycats.get_config("tiny")
  parts = paired_gan.build(config, "bfloat16")
  assert parts.generator.dtype == jnp.float32
  assert parts.discriminator.dtype == jnp.float32
  # The same programs as float32: jaxprs equal, so results are bit for bit.
  ref = paired_gan.build(config, "float32")
  s = config.style.image_size
  style = jax.eval_shape(lambda k: parts.style_encoder.init(
      k, jnp.zeros((1, s, s, 3)), train=False), jax.random.PRNGKey(1))
  state = jax.eval_shape(parts.init, jax.random.PRNGKey(0), style)
  size, b = config.image_size, config.batch_size
  batch = {"real_a": jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32),
           "real_b": jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32)}
  jaxpr = lambda p: str(jax.make_jaxpr(p.train_step)(state, batch, p.frozen))  # noqa: E731
  assert jaxpr(parts) == jaxpr(ref)
