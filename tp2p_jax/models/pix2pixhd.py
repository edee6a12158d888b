"""pix2pixHD's coarse-to-fine generator: a global generator G1 wrapped by
local enhancers G2.

G1 (`GlobalGenerator`, the release's netG `global`): reflection pad 3, 7x7
conv to ngf, then `n_downsample` 3x3 stride-2 convs doubling the channels,
`n_blocks` residual blocks, `n_downsample` 3x3 stride-2 transposed convs
halving them, reflection pad 3, 7x7 conv to the output, tanh. Every conv has
a bias; norm (instance by default) and ReLU after each conv but the last.

Local enhancer n of N (the release's netG `local`): the input downsampled
N - n times goes through a front-end (7x7 conv to ngf_n, 3x3 stride-2 conv
to 2 ngf_n) whose output is summed element-wise with the previous
generator's last feature map (G1's before its output conv, which is not
created); then `n_blocks_local` residual blocks, a 3x3 stride-2 transposed
conv to ngf_n, and, for the last enhancer, the 7x7 output conv and tanh.
ngf_n = ngf_global / 2**n: each enhancer works at twice the resolution with
half the channels of the one inside it.

Parameter tree: `global` (G1) and `local1` ... `localN`. A run with
`n_local_enhancers = 0` trains G1 alone (pix2pixHD's first stage, at half
resolution); its `global` subtree is the one a later run with enhancers
starts from and may keep frozen (`tp2p_jax.core.optim.freeze_subtrees`).

Layout NHWC; images in [-1, 1]; H and W must be multiples of
2**(n_downsample_global + n_local_enhancers). The generator takes no style.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.convolution import ConvTransposeX2
from tp2p_jax.models.layers import (GAN_INIT, Norm, NormKind, PaddedConv, at_least_float32,
                                    avg_pool_downsample)
from tp2p_jax.models.remat import RematMode, check_remat, remat_block
from tp2p_jax.models.resnet_generator import ResnetBlock

Dtype = Any
_PAD1 = ((1, 1), (1, 1))
_PAD3 = ((3, 3), (3, 3))


def _conv_transpose_x2(features: int, name: str, dt: dict) -> ConvTransposeX2:
  # Padding (1, 2) on the stride-dilated input is PyTorch's
  # ConvTranspose2d(k=3, s=2, padding=1, output_padding=1): output exactly 2H.
  return ConvTransposeX2(features, 3, ((1, 2), (1, 2)), use_bias=True, kernel_init=GAN_INIT,
                         name=name, **dt)


class GlobalGenerator(nn.Module):
  """G1. Call: (x (B, H, W, C_in), train) -> (B, H, W, out_channels) in
  [-1, 1], or with `features_only` its last feature map (B, H, W, ngf)
  (no output conv is created then).

  Attributes:
    ngf: channels at full resolution (64).
    n_downsample: stride-2 convs (4 in the release).
    n_blocks: residual blocks at the bottom (9).
    norm: "instance" | "batch" | "none".
    out_channels: output image channels.
    features_only: return the last feature map instead of the image.
    remat: recompute the residual blocks in the backward pass.
  """
  ngf: int = 64
  n_downsample: int = 4
  n_blocks: int = 9
  norm: NormKind = "instance"
  out_channels: int = 3
  features_only: bool = False
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def norm_relu(y: jax.Array, name: str) -> jax.Array:
      return nn.relu(Norm(self.norm, scale_mean=1.0, name=name, **dt)(y, train))

    x = PaddedConv(self.ngf, 7, 1, _PAD3, padding_mode="reflect", use_bias=True,
                   name="stem", **dt)(x.astype(self.dtype))
    x = norm_relu(x, "stem_norm")
    for i in range(self.n_downsample):
      x = PaddedConv(self.ngf * 2 ** (i + 1), 3, 2, _PAD1, padding_mode="zeros",
                     use_bias=True, name=f"down{i}", **dt)(x)
      x = norm_relu(x, f"down{i}_norm")
    block = remat_block(ResnetBlock, self.remat)
    for i in range(self.n_blocks):
      x = block(self.ngf * 2 ** self.n_downsample, self.norm, conv_bias=True,
                      name=f"block{i}",
                        **dt)(x, train)
    for i in range(self.n_downsample):
      x = _conv_transpose_x2(self.ngf * 2 ** (self.n_downsample - i - 1), f"up{i}", dt)(x)
      x = norm_relu(x, f"up{i}_norm")
    if self.features_only:
      return x
    x = PaddedConv(self.out_channels, 7, 1, _PAD3, padding_mode="reflect", use_bias=True,
                   name="head", **dt)(x)
    return jnp.tanh(x.astype(at_least_float32(x.dtype)))


class LocalEnhancer(nn.Module):
  """One G2. Call: (x (B, H, W, C_in) at this enhancer's resolution,
  previous (B, H/2, W/2, 2 ngf) the inner generator's last features, train)
  -> (B, H, W, ngf) features, or the image (B, H, W, out_channels) in
  [-1, 1] when `is_last`."""
  ngf: int
  n_blocks: int = 3
  norm: NormKind = "instance"
  out_channels: int = 3
  is_last: bool = True
  remat: bool = False  # recompute the residual blocks in the backward pass
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, previous: jax.Array, train: bool) -> jax.Array:
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def norm_relu(y: jax.Array, name: str) -> jax.Array:
      return nn.relu(Norm(self.norm, scale_mean=1.0, name=name, **dt)(y, train))

    y = PaddedConv(self.ngf, 7, 1, _PAD3, padding_mode="reflect", use_bias=True,
                   name="front_stem", **dt)(x.astype(self.dtype))
    y = norm_relu(y, "front_stem_norm")
    y = PaddedConv(2 * self.ngf, 3, 2, _PAD1, padding_mode="zeros", use_bias=True,
                   name="front_down", **dt)(y)
    y = norm_relu(y, "front_down_norm")
    y = y + previous.astype(self.dtype)
    block = remat_block(ResnetBlock, self.remat)
    for i in range(self.n_blocks):
      y = block(2 * self.ngf, self.norm, conv_bias=True, name=f"block{i}", **dt)(y, train)
    y = _conv_transpose_x2(self.ngf, "up", dt)(y)
    y = norm_relu(y, "up_norm")
    if not self.is_last:
      return y
    y = PaddedConv(self.out_channels, 7, 1, _PAD3, padding_mode="reflect", use_bias=True,
                   name="head", **dt)(y)
    return jnp.tanh(y.astype(at_least_float32(y.dtype)))


class Pix2PixHDGenerator(nn.Module):
  """G1 plus `n_local_enhancers` G2s (0: G1 alone).

  Attributes:
    ngf_global: G1's channels at its (coarsest) resolution; enhancer n has
      ngf_global / 2**n (the release's `--netG local --ngf 32` is 64 here).
    n_downsample_global, n_blocks_global: G1's depth (4, 9).
    n_local_enhancers: number of G2s, each doubling the resolution (1).
    n_blocks_local: residual blocks per G2 (3).
    norm: "instance" (pix2pixHD) | "batch" | "none".
    out_channels: output image channels.
    remat: "none" (default) or "blocks": recompute G1's and the enhancers'
      residual blocks in the backward pass instead of keeping their
      activations (`tp2p_jax.models.remat`); same parameters and function.

  Call: (real_a (B, H, W, C_in) in [-1, 1], train) -> fake_b
    (B, H, W, out_channels) in [-1, 1]; G1 sees real_a downsampled
    n_local_enhancers times by 3x3 average pooling.
  """
  takes_style: ClassVar[bool] = False  # called as G(real_a, train)
  ngf_global: int = 64
  n_downsample_global: int = 4
  n_blocks_global: int = 9
  n_local_enhancers: int = 1
  n_blocks_local: int = 3
  norm: NormKind = "instance"
  out_channels: int = 3
  remat: RematMode = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, real_a: jax.Array, train: bool = False) -> jax.Array:
    check_remat(self.remat)
    factor = 2 ** (self.n_downsample_global + self.n_local_enhancers)
    if real_a.shape[1] % factor or real_a.shape[2] % factor:
      raise ValueError(f"Pix2PixHDGenerator needs H and W divisible by {factor}, got "
                       f"{real_a.shape[1:3]}")
    if self.ngf_global % (2 ** self.n_local_enhancers):
      raise ValueError(f"ngf_global {self.ngf_global} must be divisible by "
                       f"2**n_local_enhancers = {2 ** self.n_local_enhancers}")
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    pyramid = [real_a]
    for _ in range(self.n_local_enhancers):
      pyramid.append(avg_pool_downsample(pyramid[-1]))
    n = self.n_local_enhancers
    blocks = self.remat == "blocks"
    out = GlobalGenerator(self.ngf_global, self.n_downsample_global, self.n_blocks_global,
                          self.norm, self.out_channels, features_only=n > 0, remat=blocks,
                          name="global", **dt)(pyramid[-1], train)
    for k in range(1, n + 1):
      out = LocalEnhancer(self.ngf_global // 2 ** k, self.n_blocks_local, self.norm,
                          self.out_channels, is_last=k == n, remat=blocks, name=f"local{k}",
                          **dt)(
                              pyramid[n - k], out, train)
    return out
