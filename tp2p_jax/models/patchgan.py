"""PatchGAN discriminators (pix2pix's NLayerDiscriminator family).

With `n_layers=3` this is the 70x70 PatchGAN: for a 256x256 input it returns
30x30 logits, each seeing a 70x70 receptive field. The TransPix2Pix release
uses reflect padding and BatchNorm (2,768,705 parameters with 6 input
channels); pix2pix and CycleGAN use zero padding, CycleGAN instance norm.

Layout NHWC. The conditional use concatenates sketch and photo on channels
before calling.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.layers import (Norm, NormKind, PaddedConv, PaddingMode, at_least_float32,
                                    leaky_relu)

Dtype = Any


class PatchGANDiscriminator(nn.Module):
  """Stack of 4x4 convs: C64 (no norm) - C128 - C256 - ... (stride 2) then one
  stride-1 conv with norm and a stride-1 conv to one logit per patch.

  Attributes:
    base_features: channels of the first conv (ndf).
    n_layers: number of stride-2 convs; channel multiplier min(2**n, 8).
    norm: "batch", "instance" or "none". Convs followed by a norm have no
      bias when it is BatchNorm (its shift replaces it), as in pix2pix.
    padding_mode: "reflect" (TransPix2Pix) or "zeros" (pix2pix, CycleGAN).
    pad: padding of every 4x4 conv; 1 (pix2pix, TransPix2Pix) or 2
      (pix2pixHD's ceil((4 - 1) / 2), which grows the output to 35x35 at 256).

  Call: (x (B, H, W, C) in [-1, 1], train, return_features=False)
    -> logits (B, H', W', 1) with H' = H / 2**n_layers - 2 (at pad 1), or, with
    `return_features`, the list of every layer's output (logits last) for
    feature matching.
  """
  base_features: int = 64
  n_layers: int = 3
  norm: NormKind = "batch"
  padding_mode: PaddingMode = "reflect"
  pad: int = 1
  norm_scale_mean: float = 0.0  # BatchNorm scale ~ N(mean, 0.02); release 0, pix2pix 1.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool,
               return_features: bool = False) -> jax.Array | list[jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
              padding_mode=self.padding_mode)
    pad1 = ((self.pad, self.pad), (self.pad, self.pad))
    norm_bias = self.norm != "batch"
    features = []
    x = PaddedConv(self.base_features, 4, 2, pad1, use_bias=True, name="conv0", **kw)(
        x.astype(self.dtype))
    x = leaky_relu(x)
    features.append(x)
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1
      ch = self.base_features * min(2 ** n, 8)
      x = PaddedConv(ch, 4, stride, pad1, use_bias=norm_bias, name=f"conv{n}", **kw)(x)
      x = Norm(self.norm, scale_mean=self.norm_scale_mean, dtype=self.dtype,
               param_dtype=self.param_dtype,
               name=f"norm{n}")(x, train)
      x = leaky_relu(x)
      features.append(x)
    x = PaddedConv(1, 4, 1, pad1, use_bias=True, name="logits", **kw)(x)
    x = x.astype(at_least_float32(x.dtype))
    if return_features:
      return features + [x]
    return x
