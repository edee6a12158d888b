"""pix2pixHD's multi-scale discriminator: identical PatchGANs on the input at
full, 1/2, 1/4, ... scale.

Each coarser scale is the previous one downsampled by 3x3 stride-2 average
pooling that leaves the padding out of the averages (as the release). The
GAN loss sums over the scales; feature matching compares every scale's
intermediate features (see `tp2p_jax.losses.feature_matching_loss`).

Layout NHWC. The conditional use concatenates real_a and real_b / fake_b on
channels before calling, as for the single PatchGAN.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.layers import NormKind, PaddingMode, avg_pool_downsample
from tp2p_jax.models.patchgan import PatchGANDiscriminator

Dtype = Any


class MultiScaleDiscriminator(nn.Module):
  """`num_d` PatchGANs (submodules `scale0` at full resolution, `scale1` at
  1/2, ...), each with its own parameters.

  Attributes:
    num_d: number of scales (pix2pixHD: 3).
    base_features, n_layers, norm, padding_mode, pad, norm_scale_mean: the
      fields of each `PatchGANDiscriminator`, with its defaults (the
      TransPix2Pix PatchGAN); pix2pixHD: ndf 64, n_layers 3, instance norm,
      zero padding 2.

  Call: (x (B, H, W, C) in [-1, 1], train, return_features=False) -> a list
    of `num_d` logits maps, full scale first, or with `return_features` a
    list of `num_d` lists of every layer's output (logits last), the format
    feature matching reads.
  """
  num_d: int = 3
  base_features: int = 64
  n_layers: int = 3
  norm: NormKind = "batch"
  padding_mode: PaddingMode = "reflect"
  pad: int = 1
  norm_scale_mean: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, return_features: bool = False
               ) -> list[jax.Array] | list[list[jax.Array]]:
    if self.num_d < 1:
      raise ValueError(f"num_d must be >= 1, got {self.num_d}")
    outputs = []
    for i in range(self.num_d):
      if i:
        x = avg_pool_downsample(x)
      d = PatchGANDiscriminator(
          base_features=self.base_features, n_layers=self.n_layers, norm=self.norm,
          padding_mode=self.padding_mode, pad=self.pad, norm_scale_mean=self.norm_scale_mean,
          dtype=self.dtype, param_dtype=self.param_dtype, name=f"scale{i}")
      outputs.append(d(x, train, return_features=return_features))
    return outputs
