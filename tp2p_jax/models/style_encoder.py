"""The CosFace style encoder: a small residual CNN that maps a cat photo to a
256-d style embedding, trained with a large-margin cosine (CosFace) head over
the coat classes. Its embeddings of target photos condition the generator.

Layout NHWC; photos in [-1, 1], resized to `image_size` (64 in the reference).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's kaiming_normal_ (fan_in, untruncated normal), as the reference.
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class _ConvBNReLU(nn.Module):
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), strides=(self.stride, self.stride),
                padding=((1, 1), (1, 1)), kernel_init=HE_NORMAL, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x)
    return nn.relu(x)


class StyleEncoder(nn.Module):
  """CosFace style encoder.

  Block 1: conv32 -> spatial dropout -> conv32 (+ residual). Blocks 2-4: conv
  (stride 2) -> conv (+ residual) -> spatial dropout -> conv (+ residual), at
  64, 128, 256 channels. Dropout after each block (0.5 after the last). Then
  BN, flatten, dense 1024, dropout, dense `embedding_dim` (the embedding; the
  reference has no nonlinearity between the two dense layers). The CosFace
  head compares the BatchNorm'd embedding with `num_classes` learned class
  vectors by cosine.

  Attributes:
    image_size: expected input height and width (multiple of 8).
    block_features: channels of blocks 1-4.
    num_classes: coat classes (9 in the reference).
    scale: CosFace s; `logits = scale * cosine` (margin applied in the loss).

  Call: (photo (B, S, S, 3) in [-1, 1], train) -> dict with
    `embedding` (B, embedding_dim) float32, `cosine` (B, num_classes) in
    [-1, 1] and `logits` = scale * cosine (B, num_classes).
  """
  image_size: int = 64
  block_features: tuple[int, ...] = (32, 64, 128, 256)
  hidden: int = 1024
  embedding_dim: int = 256
  num_classes: int = 9
  scale: float = 5.0
  spatial_dropout: float = 0.2
  block_dropout: float = 0.4
  last_block_dropout: float = 0.5
  head_dropout: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, photo: jax.Array, train: bool) -> dict[str, jax.Array]:
    if photo.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"style encoder expects {self.image_size}x{self.image_size} "
                       f"photos, got {photo.shape[1:3]}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Spatial dropout zeroes whole channels: broadcast the mask over H and W.
    sdrop = lambda y: nn.Dropout(self.spatial_dropout, broadcast_dims=(1, 2))(  # noqa: E731
        y, deterministic=not train)
    x = photo.astype(self.dtype)
    n_blocks = len(self.block_features)
    for b, ch in enumerate(self.block_features):
      if b == 0:
        x = _ConvBNReLU(ch, name="b0_conv0", **kw)(x, train)
        x = sdrop(x)
        x = x + _ConvBNReLU(ch, name="b0_conv1", **kw)(x, train)
      else:
        x = _ConvBNReLU(ch, stride=2, name=f"b{b}_conv0", **kw)(x, train)
        x = x + _ConvBNReLU(ch, name=f"b{b}_conv1", **kw)(x, train)
        x = sdrop(x)
        x = x + _ConvBNReLU(ch, name=f"b{b}_conv2", **kw)(x, train)
      rate = self.last_block_dropout if b == n_blocks - 1 else self.block_dropout
      x = nn.Dropout(rate)(x, deterministic=not train)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     name="bn_features", **kw)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.hidden, kernel_init=HE_NORMAL, name="fc1", **kw)(x)
    x = nn.Dropout(self.head_dropout)(x, deterministic=not train)
    embedding = nn.Dense(self.embedding_dim, kernel_init=HE_NORMAL, name="fc2", **kw)(x)
    embedding = embedding.astype(jnp.float32)

    e = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     param_dtype=self.param_dtype, name="bn_embedding")(embedding)
    centres = self.param("class_vectors", nn.initializers.xavier_uniform(),
                         (self.num_classes, self.embedding_dim), self.param_dtype)
    cosine = _normalize(e) @ _normalize(centres).T
    return {"embedding": embedding, "cosine": cosine, "logits": self.scale * cosine}


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
