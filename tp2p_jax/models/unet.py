"""pix2pix's U-Net generator (netG `unet_256` / `unet_128`).

The release builds it recursively from UnetSkipConnectionBlocks; unrolled,
for `num_downs` = 8 (unet_256) and ngf = 64:

  encoder  C64 - C128 - C256 - C512 - C512 - C512 - C512 - C512
  decoder  CD512 - CD512 - CD512 - C512 - C256 - C128 - C64 - 3, tanh

Each encoder step is LeakyReLU(0.2) -> 4x4 conv stride 2 (zero pad 1) ->
norm; the outermost has neither the activation (it sees the image) nor the
norm, the innermost no norm. Each decoder step is ReLU -> 4x4 transposed
conv stride 2 -> norm [-> dropout 0.5]; its input is the concatenation of
the previous decoder output and the mirrored encoder output (skip). Dropout
sits in the `num_downs - 5` decoder blocks right after the innermost one
(three for unet_256). Convs before a BatchNorm have no bias (its shift
replaces it); with instance norm (no affine parameters) they have one, as in
the release. unet_256 with BatchNorm has 54,413,955 parameters.

Layout NHWC; images in [-1, 1]; H and W must be multiples of 2**num_downs.
The generator takes no style input.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.convolution import ConvTransposeX2
from tp2p_jax.models.layers import (GAN_INIT, Norm, NormKind, PaddedConv, at_least_float32,
                                    leaky_relu)

Dtype = Any


def unet_channels(num_downs: int, ngf: int) -> list[int]:
  """Encoder output channels, outermost first: ngf, 2ngf, 4ngf, then 8ngf."""
  return [ngf * min(2 ** i, 8) for i in range(num_downs)]


class UnetGenerator(nn.Module):
  """pix2pix U-Net.

  Attributes:
    num_downs: stride-2 downsamplings (8: unet_256, 7: unet_128); the
      bottleneck is (H / 2**num_downs) x (W / 2**num_downs), 1x1 at the
      matching size. Must be >= 5 (the release's minimum).
    ngf: channels of the outermost conv.
    norm: "batch" (pix2pix default) | "instance" | "none".
    use_dropout: dropout 0.5 in the decoder blocks after the innermost
      (pix2pix trains with it; it is the generator's only noise source).
    dropout_rate: that rate.
    norm_scale_mean: BatchNorm scales start at N(this, 0.02) (pix2pix: 1).
    out_channels: output image channels.

  Call: (real_a (B, H, W, C_in) in [-1, 1], train) -> fake_b
    (B, H, W, out_channels) in [-1, 1].
  """
  takes_style: ClassVar[bool] = False  # called as G(real_a, train)
  num_downs: int = 8
  ngf: int = 64
  norm: NormKind = "batch"
  use_dropout: bool = True
  dropout_rate: float = 0.5
  norm_scale_mean: float = 1.0
  out_channels: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, real_a: jax.Array, train: bool = False) -> jax.Array:
    if self.num_downs < 5:
      raise ValueError(f"num_downs must be >= 5, got {self.num_downs}")
    factor = 2 ** self.num_downs
    if real_a.shape[1] % factor or real_a.shape[2] % factor:
      raise ValueError(f"UnetGenerator(num_downs={self.num_downs}) needs H and W divisible "
                       f"by {factor}, got {real_a.shape[1:3]}")
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bias = self.norm != "batch"
    channels = unet_channels(self.num_downs, self.ngf)
    depth = self.num_downs

    def norm(y: jax.Array, name: str) -> jax.Array:
      return Norm(self.norm, scale_mean=self.norm_scale_mean, name=name, **dt)(y, train)

    x = real_a.astype(self.dtype)
    skips = []
    for i, ch in enumerate(channels):
      outermost, innermost = i == 0, i == depth - 1
      if not outermost:
        x = leaky_relu(x)
      x = PaddedConv(ch, 4, 2, ((1, 1), (1, 1)), padding_mode="zeros", use_bias=bias,
                     name=f"down{i}", **dt)(x)
      if not (outermost or innermost):
        x = norm(x, f"down{i}_norm")
      skips.append(x)

    # Decoder block j mirrors encoder block depth-1-j; it upsamples to the
    # size of encoder block depth-2-j's output and concatenates it.
    for j in range(depth):
      i = depth - 1 - j
      outermost = i == 0
      if j > 0:
        x = jnp.concatenate([skips[i], x], axis=-1)  # the release's cat([x, up(x)])
      x = nn.relu(x)
      out_ch = self.out_channels if outermost else channels[i - 1]
      # PyTorch ConvTranspose2d(k=4, s=2, p=1) == lax transpose conv whose
      # dilated input is padded by k - 1 - p = 2 on each side.
      x = ConvTransposeX2(out_ch, 4, ((2, 2), (2, 2)), use_bias=bias or outermost,
                          kernel_init=GAN_INIT, name=f"up{i}", **dt)(x)
      if outermost:
        break
      x = norm(x, f"up{i}_norm")
      if self.use_dropout and 1 <= j <= depth - 5:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return jnp.tanh(x.astype(at_least_float32(x.dtype)))


UnetGenerator256 = functools.partial(UnetGenerator, num_downs=8)
UnetGenerator128 = functools.partial(UnetGenerator, num_downs=7)
