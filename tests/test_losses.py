"""Loss functions against known values, and the perceptual loss's gradient."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tp2p_jax import losses
from tp2p_jax.models import vgg


def test_gan_losses_known_values():
  zeros = jnp.zeros((2, 3, 3, 1))
  assert float(losses.gan_loss(zeros, True, "vanilla")) == pytest.approx(math.log(2))
  assert float(losses.gan_loss(zeros, False, "vanilla")) == pytest.approx(math.log(2))
  assert float(losses.gan_loss(zeros + 1, True, "lsgan")) == pytest.approx(0.0)
  assert float(losses.gan_loss(zeros, True, "lsgan")) == pytest.approx(1.0)
  assert float(losses.gan_loss(zeros + 2, True, "hinge")) == pytest.approx(0.0)
  assert float(losses.gan_loss(zeros + 2, False, "hinge")) == pytest.approx(3.0)
  assert float(losses.generator_gan_loss(zeros + 2, "hinge")) == pytest.approx(-2.0)
  # pix2pix halves the discriminator objective.
  assert float(losses.discriminator_loss(zeros, zeros, "vanilla")) == pytest.approx(math.log(2))
  with pytest.raises(ValueError, match="gan_mode"):
    losses.gan_loss(zeros, True, "wgan")


@given(st.floats(-20, 20), st.sampled_from(["vanilla", "lsgan", "hinge"]))
def test_property_gan_losses_order_real_and_fake(x, mode):
  logits = jnp.full((1, 2, 2, 1), x, jnp.float32)
  real, fake = losses.gan_loss(logits, True, mode), losses.gan_loss(logits, False, mode)
  assert math.isfinite(float(real)) and float(real) >= 0 and float(fake) >= 0
  higher = losses.gan_loss(logits + 1.0, True, mode)
  if mode == "lsgan":
    # Least squares pulls real logits to exactly 1, from either side.
    assert float(losses.gan_loss(jnp.ones_like(logits), True, mode)) <= float(real)
    if abs(x - 0.5) > 1e-3:  # (x + 1 - 1)^2 vs (x - 1)^2 cross at x = 0.5
      assert (float(higher) < float(real)) == (x < 0.5)
  else:
    # A larger logit is more "real": the real-target loss cannot increase.
    assert float(higher) <= float(real) + 1e-6


def test_l1_loss():
  a = jnp.zeros((1, 2, 2, 3))
  assert float(losses.l1_loss(a, a + 0.5)) == pytest.approx(0.5)


def test_cosface_loss_known_value():
  cosine = jnp.array([[0.9, 0.1, -0.2]])
  label = jnp.array([0])
  logits = 5.0 * np.array([0.9 - 0.35, 0.1, -0.2])
  expected = -logits[0] + np.log(np.sum(np.exp(logits)))
  assert float(losses.cosface_loss(cosine, label, 5.0, 0.35)) == pytest.approx(expected, rel=1e-5)
  # The margin makes the loss larger than plain softmax cross-entropy.
  assert float(losses.cosface_loss(cosine, label, 5.0, 0.35)) > float(
      losses.cosface_loss(cosine, label, 5.0, 0.0))


def test_perceptual_loss_gradient_flows_to_fake_only():
  k1, k2 = jax.random.split(jax.random.key(0))
  fake = jax.random.uniform(k1, (2, 32, 32, 3), minval=-1, maxval=1)
  real = jax.random.uniform(k2, (2, 32, 32, 3), minval=-1, maxval=1)
  variables = vgg.variables_up_to(vgg.load_pretrained_vgg16(), "relu2_2")
  assert sorted(variables["params"]) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
  loss_fn = jax.jit(lambda f, r, v: losses.perceptual_loss(f, r, v))
  assert float(loss_fn(real, real, variables)) == pytest.approx(0.0, abs=1e-8)
  value = float(loss_fn(fake, real, variables))
  assert value > 0
  g_fake, g_real, g_vgg = jax.jit(jax.grad(lambda f, r, v: losses.perceptual_loss(f, r, v),
                                           argnums=(0, 1, 2)))(fake, real, variables)
  assert bool(jnp.all(jnp.isfinite(g_fake))) and float(jnp.max(jnp.abs(g_fake))) > 0
  # The target and the frozen VGG16 weights receive no gradient.
  assert float(jnp.max(jnp.abs(g_real))) == 0
  assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree.leaves(g_vgg))


def test_perceptual_loss_uses_imagenet_normalisation():
  k1, k2 = jax.random.split(jax.random.key(1))
  fake = jax.random.uniform(k1, (1, 16, 16, 3), minval=-1, maxval=1)
  real = jax.random.uniform(k2, (1, 16, 16, 3), minval=-1, maxval=1)
  variables = vgg.variables_up_to(vgg.load_pretrained_vgg16(), "relu2_2")
  net = vgg.VGG16(layers=("relu2_2",))
  f_fake, f_real = (net.apply(variables, vgg.imagenet_normalize((x + 1.0) * 0.5))["relu2_2"]
                    for x in (fake, real))
  expected = float(jnp.mean(jnp.square(f_fake - f_real)))
  assert float(losses.perceptual_loss(fake, real, variables)) == pytest.approx(expected,
                                                                                rel=1e-6)
  # The default variables are the pretrained ones.
  assert float(losses.perceptual_loss(fake, real)) == pytest.approx(expected, rel=1e-6)


def test_lpips_through_losses():
  x = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3), minval=-1, maxval=1)
  d_same = losses.lpips_distance(x, x)
  d_diff = losses.lpips_distance(x, -x)
  assert d_same.shape == (2,) and float(jnp.max(jnp.abs(d_same))) < 1e-6
  assert float(jnp.min(d_diff)) > 0
