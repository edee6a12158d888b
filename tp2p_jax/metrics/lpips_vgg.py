"""LPIPS perceptual distance, VGG variant (Zhang et al., CVPR 2018), for evaluation.

Uses the pretrained VGG16 and the learned linear heads ("v0.1") from the same
hash-verified weight file as `tp2p_jax.models.vgg`. Evaluation mode only: the
reference's dropout before the linear heads is the identity at eval and is
left out.

Images are NHWC in [-1, 1].
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.models import vgg as vgg_lib

Dtype = Any
PrecisionLike = Any

# VGG16 activations compared by LPIPS, one linear head each.
LPIPS_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

# The reference "ScalingLayer": maps [-1, 1] inputs onto the ImageNet
# normalisation the VGG weights were trained with.
_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)

# The reference's epsilon in the channel normalisation.
_EPS = 1e-10


def _unit_normalize(feat: jax.Array) -> jax.Array:
  """Scales each (B, H, W, C) feature vector to unit L2 norm over C."""
  norm = jnp.sqrt(jnp.sum(feat ** 2, axis=-1, keepdims=True))
  return feat / (norm + _EPS)


class LPIPS(nn.Module):
  """LPIPS distance between two image batches.

  Parameters: ``vgg`` (a `VGG16` up to relu5_3, i.e. ``conv1_1..conv5_3``) and
  ``lin0..lin4`` (1x1 convs, no bias, kernels (1, 1, C, 1) with non-negative
  pretrained weights). Get them with `load_lpips_variables`.

  Attributes:
    dtype: Compute dtype of the VGG trunk. The normalisation, differences and
      linear heads always run in float32 (the 1e-10 epsilon and the small
      squared differences need it).
    param_dtype: Dtype of the parameters at init.
    precision: Passed to all convolutions; use ``jax.lax.Precision.HIGHEST``
      for float32-exact scores on GPU/TPU.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, images_0: jax.Array, images_1: jax.Array) -> jax.Array:
    """Computes per-example distances.

    Args:
      images_0: (B, H, W, 3) RGB images in [-1, 1], H, W >= 16.
      images_1: Same shape as `images_0`.

    Returns:
      (B,) float32 distances, >= 0 (0 for identical images); typically below 1.
    """
    if images_0.shape != images_1.shape:
      raise ValueError(
          f"LPIPS inputs must have equal shapes, got {images_0.shape} and "
          f"{images_1.shape}")
    shift = jnp.asarray(_SHIFT, dtype=self.dtype)
    scale = jnp.asarray(_SCALE, dtype=self.dtype)
    trunk = vgg_lib.VGG16(
        layers=LPIPS_LAYERS, dtype=self.dtype, param_dtype=self.param_dtype,
        precision=self.precision, name="vgg")
    # Separate (weight-sharing) passes rather than one concatenated batch: a
    # batched conv may round each example differently, which would make
    # d(x, x) a tiny non-zero and d(x, y) != d(y, x) in the last bit.
    feats_0 = trunk((images_0.astype(self.dtype) - shift) / scale)
    feats_1 = trunk((images_1.astype(self.dtype) - shift) / scale)

    total = jnp.zeros((images_0.shape[0],), jnp.float32)
    for i, name in enumerate(LPIPS_LAYERS):
      diff = (_unit_normalize(feats_0[name].astype(jnp.float32))
              - _unit_normalize(feats_1[name].astype(jnp.float32))) ** 2
      score = nn.Conv(
          1, (1, 1), padding="VALID", use_bias=False, dtype=jnp.float32,
          param_dtype=self.param_dtype, precision=self.precision,
          name=f"lin{i}")(diff)
      total = total + jnp.mean(score, axis=(1, 2))[:, 0]
    return total


def load_lpips_variables() -> dict[str, Any]:
  """Pretrained LPIPS-VGG variables from the hash-verified weight file.

  Returns:
    ``{"params": {"vgg": {"conv1_1": ..., "conv5_3": ...}, "lin0": {"kernel"},
    ..., "lin4": {"kernel"}}}`` of read-only float32 numpy arrays.

  Raises:
    vgg_lib.WeightFileError: A linear head has negative weights (the LPIPS
      heads are trained with a non-negativity clamp, so the file is wrong).
  """
  arrays = vgg_lib.load_pretrained_arrays()
  params: dict[str, Any] = {"vgg": arrays["vgg"]}
  for name, leaves in sorted(arrays["lin"].items()):
    if np.any(leaves["kernel"] < 0):
      raise vgg_lib.WeightFileError(f"LPIPS head {name} has negative weights")
    params[name] = leaves
  return {"params": params}


@functools.lru_cache(maxsize=1)
def _default_variables() -> Any:
  # Placed on device once so repeated calls don't re-upload ~60 MB of weights.
  return jax.device_put(load_lpips_variables())


@jax.jit
def _lpips_apply(variables: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  return LPIPS().apply(variables, x, y)


def lpips_distance(
    x: jax.Array, y: jax.Array, variables: dict[str, Any] | None = None,
) -> jax.Array:
  """LPIPS-VGG distance between two image batches.

  Args:
    x: (B, H, W, 3) RGB images in [-1, 1], H, W >= 16.
    y: Same shape as `x`.
    variables: Variables of `LPIPS`; defaults to the pretrained ones from
      `load_lpips_variables`.

  Returns:
    (B,) float32 distances.
  """
  if variables is None:
    variables = _default_variables()
  return _lpips_apply(variables, x, y)
