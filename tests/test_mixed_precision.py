"""bfloat16 mixed precision: bfloat16 compute, float32 everything kept.

The switch is the config's `dtype` (or `build_gan(config, dtype)`):
networks and the VGG16 loss compute in bfloat16, while parameters, Adam
moments, BatchNorm statistics, EMAs and every loss reduction stay float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import toycats
from tp2p_jax.methods import paired_gan

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
  return {dtype: _run(config, dtype) for dtype in ("float32", "bfloat16")}


def test_bfloat16_losses_agree_with_float32(runs):
  _, _, h32 = runs["float32"]
  _, _, h16 = runs["bfloat16"]
  for step, (m32, m16) in enumerate(zip(h32, h16)):
    for name in ("d_loss", "g_loss", "g_gan", "g_l1", "g_perceptual"):
      assert np.isfinite(m16[name]), (step, name)
      np.testing.assert_allclose(m16[name], m32[name], rtol=_RTOL,
                                 err_msg=f"step {step} {name}")


def test_bfloat16_actually_computes_in_bfloat16(runs):
  parts16, state16, _ = runs["bfloat16"]
  parts32, state32, _ = runs["float32"]
  assert parts16.generator.dtype == jnp.bfloat16
  assert parts16.discriminator.dtype == jnp.bfloat16
  # Different arithmetic, so different parameters after the same steps.
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                      state16.g_params, state32.g_params)
  assert max(jax.tree.leaves(diff)) > 0


def test_bfloat16_keeps_float32_state(runs):
  _, state16, _ = runs["bfloat16"]
  tree = {"g_params": state16.g_params, "d_params": state16.d_params,
          "g_batch_stats": state16.g_batch_stats, "d_batch_stats": state16.d_batch_stats,
          "g_opt_state": state16.g_opt_state, "d_opt_state": state16.d_opt_state,
          "ema": state16.ema}
  floats = {leaf.dtype for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)}
  assert floats == {jnp.dtype(jnp.float32)}
