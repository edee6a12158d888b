"""Losses as pure functions.

Images are NHWC in [-1, 1]; discriminator outputs are raw logits. Every loss
reduces in float32 whatever the compute dtype of its inputs.
"""
from __future__ import annotations

from typing import Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from tp2p_jax.models import vgg

GanMode = Literal["vanilla", "lsgan", "hinge"]
GAN_MODES: tuple[str, ...] = ("vanilla", "lsgan", "hinge")


def _check_mode(gan_mode: str) -> None:
  if gan_mode not in GAN_MODES:
    raise ValueError(f"unknown gan_mode {gan_mode!r}; expected one of {GAN_MODES}")


def gan_loss(logits: jax.Array, target_is_real: bool, gan_mode: GanMode) -> jax.Array:
  """Mean GAN loss of logits against an all-real or all-fake target.

  vanilla: BCE with logits (pix2pix's default); lsgan: mean squared error to
  1/0 (CycleGAN, pix2pixHD); hinge: for the discriminator mean(relu(1 - x))
  on real and mean(relu(1 + x)) on fake. The generator's hinge loss is
  -mean(x) and is given by `generator_gan_loss`.
  """
  _check_mode(gan_mode)
  logits = logits.astype(jnp.float32)
  if gan_mode == "vanilla":
    target = jnp.ones_like(logits) if target_is_real else jnp.zeros_like(logits)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))
  if gan_mode == "lsgan":
    return jnp.mean(jnp.square(logits - (1.0 if target_is_real else 0.0)))
  return jnp.mean(jax.nn.relu(1.0 - logits if target_is_real else 1.0 + logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array,
                       gan_mode: GanMode) -> jax.Array:
  """(loss(D(x, y), real) + loss(D(x, G(x)), fake)) / 2, as pix2pix halves D."""
  return 0.5 * (gan_loss(real_logits, True, gan_mode) + gan_loss(fake_logits, False, gan_mode))


def generator_gan_loss(fake_logits: jax.Array, gan_mode: GanMode) -> jax.Array:
  """The generator's adversarial loss on D(x, G(x)) (non-saturating for vanilla)."""
  _check_mode(gan_mode)
  if gan_mode == "hinge":
    return -jnp.mean(fake_logits.astype(jnp.float32))
  return gan_loss(fake_logits, True, gan_mode)


def multiscale_discriminator_loss(real_logits: Sequence[jax.Array],
                                  fake_logits: Sequence[jax.Array], gan_mode: GanMode
                                  ) -> jax.Array:
  """`discriminator_loss` summed over the scales of a multi-scale D (as
  pix2pixHD sums its GAN terms); equal to it for a single scale."""
  return sum(discriminator_loss(r, f, gan_mode) for r, f in zip(real_logits, fake_logits))


def multiscale_generator_gan_loss(fake_logits: Sequence[jax.Array], gan_mode: GanMode
                                  ) -> jax.Array:
  """`generator_gan_loss` summed over the scales of a multi-scale D."""
  return sum(generator_gan_loss(f, gan_mode) for f in fake_logits)


def feature_matching_loss(real_features: Sequence[Sequence[jax.Array]],
                          fake_features: Sequence[Sequence[jax.Array]]) -> jax.Array:
  """pix2pixHD's discriminator feature-matching loss (before its weight).

  sum over scales i and intermediate layers j (the logits excluded) of
  D_weight * feat_weight * mean|fake_ij - real_ij|, with D_weight = 1 /
  num_D and feat_weight = 4 / (n_layers + 1), where a PatchGAN with
  n_layers has n_layers + 1 intermediate layers: each layer is normalised by
  its element count and the whole is four times the mean over scales and
  layers. The real features are constants (no gradient flows into D's
  real pass).

  Args:
    real_features, fake_features: per scale, the list of every layer's
      output (B, H_j, W_j, C_j) with the logits last, as returned by the
      discriminators with `return_features=True`.

  Returns:
    Scalar float32; 0 exactly when the features are equal.
  """
  if len(real_features) != len(fake_features) or not real_features:
    raise ValueError(f"need the same, non-zero number of scales; got {len(real_features)} "
                     f"real and {len(fake_features)} fake")
  d_weight = 1.0 / len(real_features)
  total = jnp.float32(0.0)
  for real, fake in zip(real_features, fake_features):
    if len(real) != len(fake) or len(real) < 2:
      raise ValueError(f"each scale needs the same >= 2 outputs (features, then logits); got "
                       f"{len(real)} and {len(fake)}")
    feat_weight = 4.0 / (len(real) - 1)
    for r, f in zip(real[:-1], fake[:-1]):
      total = total + d_weight * feat_weight * l1_loss(f, jax.lax.stop_gradient(r))
  return total


def l1_loss(fake: jax.Array, real: jax.Array) -> jax.Array:
  """Mean absolute error over all elements."""
  return jnp.mean(jnp.abs(fake.astype(jnp.float32) - real.astype(jnp.float32)))


def perceptual_loss(fake: jax.Array, real: jax.Array,
                    vgg_variables: Mapping | None = None, layer: str = "relu2_2",
                    dtype: jnp.dtype = jnp.float32, remat: bool = False) -> jax.Array:
  """MSE between ImageNet-VGG16 features of `fake` and `real`.

  Both are ImageNet-normalised first (`vgg.features` with "-1..1"), which
  fixes the release: it fed VGG16 [-1, 1] images unnormalised.

  Args:
    fake: generated images (B, H, W, 3) in [-1, 1]; the gradient flows through
      the frozen VGG16 into them (the release computed this term without
      gradient, so it never trained its generator).
    real: target images (B, H, W, 3) in [-1, 1]; treated as constants.
    vgg_variables: VGG16 variables, ideally `vgg.variables_up_to(..., layer)`
      so a jitted loss carries only the convolutions it runs; default: the
      pretrained ImageNet weights, cut so.
    layer: VGG16 activation to compare (reference: relu2_2).
    dtype: VGG16 compute dtype.
    remat: recompute the fake pass's VGG16 activations block by block in
      the backward pass instead of keeping them (`vgg.VGG16.remat`); the
      same loss and gradient.

  Returns:
    Scalar float32 loss.
  """
  if vgg_variables is None:
    vgg_variables = vgg.variables_up_to(vgg.load_pretrained_vgg16(), layer)
  vgg_variables = jax.lax.stop_gradient(vgg_variables)
  # Two passes rather than one over [fake; real]: the gradient then flows
  # back through the fake half only (a joint batch differentiates all of it).
  f_fake = vgg.features(fake, vgg_variables, (layer,), "-1..1", dtype=dtype,
                        remat=remat)[layer].astype(jnp.float32)
  f_real = vgg.features(jax.lax.stop_gradient(real), vgg_variables, (layer,), "-1..1",
                        dtype=dtype)[layer]
  return jnp.mean(jnp.square(f_fake - jax.lax.stop_gradient(f_real).astype(jnp.float32)))


def cosface_loss(cosine: jax.Array, labels: jax.Array, scale: float = 5.0,
                 margin: float = 0.35) -> jax.Array:
  """CosFace (large-margin cosine) loss.

  logits = scale * (cosine - margin * onehot(labels)); mean cross-entropy.

  Args:
    cosine: (B, num_classes) cosine similarities in [-1, 1].
    labels: (B,) integer class ids.
  """
  onehot = jax.nn.one_hot(labels, cosine.shape[-1], dtype=jnp.float32)
  logits = scale * (cosine.astype(jnp.float32) - margin * onehot)
  return jnp.mean(optax.softmax_cross_entropy(logits, onehot))


def lpips_distance(x: jax.Array, y: jax.Array, variables: Mapping | None = None) -> jax.Array:
  """LPIPS (VGG variant) between NHWC images in [-1, 1]; (B,) distances."""
  from tp2p_jax.metrics import lpips_vgg as lpips  # evaluation-only; keeps training imports light
  return lpips.lpips_distance(x, y, variables)
