"""DeepDream on the ported ImageNet VGG16.

Gradient ascent on the input image to raise the mean squared activation of
one VGG16 layer, over octaves (image scales, smallest first) with random
jitter, gradients normalised by their mean magnitude, and clipping to the
valid range. Each octave starts from the original image at that scale plus
the detail dreamed so far, so the upscaling never blurs the original.

Images are NHWC float32 in [0, 1], batch 1. `python -m tp2p_jax.cli.dream`
is the command line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.models import vgg

Params = Any


@dataclasses.dataclass(frozen=True)
class DreamSettings:
  """Attributes:
    layer: VGG16 activation whose norm is raised.
    octaves: number of scales.
    octave_scale: size ratio between consecutive octaves (> 1).
    steps: gradient-ascent steps per octave.
    step_size: pixel change per step (normalised gradient times this).
    jitter: maximum random shift in pixels per step (0: none).
  """
  layer: str = "relu4_2"
  octaves: int = 4
  octave_scale: float = 1.4
  steps: int = 20
  step_size: float = 0.01
  jitter: int = 16

  def __post_init__(self):
    if self.layer not in vgg.VGG16_LAYERS:
      raise ValueError(f"unknown VGG16 layer {self.layer!r}; choose from {vgg.VGG16_LAYERS}")
    # `not x > 0` rather than `x <= 0`: NaN is refused too.
    if (self.octaves < 1 or not self.octave_scale > 1.0 or self.steps < 0 or self.jitter < 0
        or not self.step_size > 0):
      raise ValueError(f"need octaves >= 1, octave_scale > 1, steps >= 0, step_size > 0 "
                       f"(a negative one would lower the activation), jitter >= 0; "
                       f"got {self}")


def activation_norm(image01: jax.Array, vgg_variables: Params, layer: str) -> jax.Array:
  """Mean squared activation of `layer` for (1, H, W, 3) images in [0, 1]
  (H, W at least `vgg.min_input_side(layer)`); scalar float32."""
  feats = vgg.features(image01, vgg_variables, (layer,), "0..1")
  return jnp.mean(jnp.square(feats[layer].astype(jnp.float32)))


def make_dream_step(layer: str, step_size: float) -> Callable:
  """Jitted `step(image, shift (2,) int32, vgg_variables) -> image`: shift,
  ascend the normalised gradient, shift back, clip to [0, 1]."""
  grad_fn = jax.grad(activation_norm)

  @jax.jit
  def step(image, shift, vgg_variables):
    rolled = jnp.roll(image, (shift[0], shift[1]), axis=(1, 2))
    g = grad_fn(rolled, vgg_variables, layer)
    g = g / (jnp.mean(jnp.abs(g)) + 1e-8)
    rolled = rolled + step_size * g
    return jnp.clip(jnp.roll(rolled, (-shift[0], -shift[1]), axis=(1, 2)), 0.0, 1.0)

  return step


def octave_sizes(height: int, width: int, settings: DreamSettings) -> list[tuple[int, int]]:
  """(H, W) per octave, smallest first, ending at the full size; octaves
  too small for the layer are left out."""
  smallest = vgg.min_input_side(settings.layer)
  sizes = []
  for i in reversed(range(settings.octaves)):
    f = settings.octave_scale ** -i
    h, w = max(1, round(height * f)), max(1, round(width * f))
    if min(h, w) >= smallest:
      sizes.append((h, w))
  return sizes


def dream(image: jax.Array, vgg_variables: Params, settings: DreamSettings = DreamSettings(),
          seed: int = 0, on_step: Callable[[], None] | None = None) -> jax.Array:
  """DeepDreams one image.

  Args:
    image: (1, H, W, 3) in [0, 1]; H, W at least
      `vgg.min_input_side(settings.layer)`.
    vgg_variables: VGG16 variables (e.g. `vgg.load_pretrained_vgg16()`).
    settings: layer, octaves, steps, step size, jitter.
    seed: seeds the jitter.
    on_step: called after every step (e.g. a progress bar).

  Returns:
    (1, H, W, 3) in [0, 1].
  """
  image = jnp.asarray(image, jnp.float32)
  _, height, width, _ = image.shape
  sizes = octave_sizes(height, width, settings)
  if not sizes:
    side = vgg.min_input_side(settings.layer)
    raise ValueError(f"the image is {width}x{height}; layer {settings.layer} needs at least "
                     f"{side}x{side}")
  # On the device once, and only the convolutions up to the layer.
  variables = jax.device_put(vgg.variables_up_to(vgg_variables, settings.layer))
  step = make_dream_step(settings.layer, settings.step_size)
  rng = np.random.default_rng(seed)
  detail = jnp.zeros((1, *sizes[0], 3), jnp.float32)
  x = image
  for h, w in sizes:
    base = jax.image.resize(image, (1, h, w, 3), "linear", antialias=True)
    detail = jax.image.resize(detail, (1, h, w, 3), "linear")
    x = jnp.clip(base + detail, 0.0, 1.0)
    for _ in range(settings.steps):
      shift = rng.integers(-settings.jitter, settings.jitter + 1, size=2).astype(np.int32)
      x = step(x, jnp.asarray(shift), variables)
      if on_step is not None:
        on_step()
    detail = x - base
  return x
