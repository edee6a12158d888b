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

from tp2p_jax.models.layers import BatchNorm, at_least_float32

Dtype = Any

# PyTorch's kaiming_normal_ (fan_in, untruncated normal), as the reference.
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class _ConvBNReLU(nn.Module):
  """relu(bn(conv3x3(x)) + residual): the release adds a block's residual
  between its BatchNorm and its ReLU. Submodules `conv` and `bn`."""
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool,
               residual: jax.Array | None = None) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), strides=(self.stride, self.stride),
                padding=((1, 1), (1, 1)), kernel_init=HE_NORMAL, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    x = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x, train)
    return nn.relu(x if residual is None else x + residual)


class StyleEncoder(nn.Module):
  """CosFace style encoder.

  Block 1: conv32 -> spatial dropout -> conv32 (+ residual). Blocks 2-4: conv
  (stride 2) -> conv (+ residual) -> spatial dropout -> conv (+ residual), at
  64, 128, 256 channels. Each conv is followed by BN and ReLU; where a
  residual r is added the layer computes relu(bn(conv(x)) + r), with r taken
  before the spatial dropout (the release's function). Dropout after each block (0.5 after the last). Then
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
      # Each residual is taken before the spatial dropout, as the release.
      if b == 0:
        x = _ConvBNReLU(ch, name="b0_conv0", **kw)(x, train)
        x = _ConvBNReLU(ch, name="b0_conv1", **kw)(sdrop(x), train, residual=x)
      else:
        x = _ConvBNReLU(ch, stride=2, name=f"b{b}_conv0", **kw)(x, train)
        x = _ConvBNReLU(ch, name=f"b{b}_conv1", **kw)(x, train, residual=x)
        x = _ConvBNReLU(ch, name=f"b{b}_conv2", **kw)(sdrop(x), train, residual=x)
      rate = self.last_block_dropout if b == n_blocks - 1 else self.block_dropout
      x = nn.Dropout(rate)(x, deterministic=not train)
    x = BatchNorm(name="bn_features", **kw)(x, train)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.hidden, kernel_init=HE_NORMAL, name="fc1", **kw)(x)
    x = nn.Dropout(self.head_dropout)(x, deterministic=not train)
    embedding = nn.Dense(self.embedding_dim, kernel_init=HE_NORMAL, name="fc2", **kw)(x)
    embedding = embedding.astype(at_least_float32(embedding.dtype))

    e = BatchNorm(param_dtype=self.param_dtype, name="bn_embedding")(embedding, train)
    centres = self.param("class_vectors", nn.initializers.xavier_uniform(),
                         (self.num_classes, self.embedding_dim), self.param_dtype)
    # The release's cosine: <e, c> / max(|e| |c|, 1e-8).
    norms = jnp.outer(jnp.linalg.norm(e, axis=-1), jnp.linalg.norm(centres, axis=-1))
    cosine = (e @ centres.T) / jnp.maximum(norms, 1e-8)
    return {"embedding": embedding, "cosine": cosine, "logits": self.scale * cosine}
